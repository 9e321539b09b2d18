"""The token store (train/offline/token_store.py): crash-safe parallel writing, the tokenizer's key, the teacher on it.

Real parts at tiny sizes: the teacher tests' Zarr store and tokenizer (32x32 frames,
16 tokens a frame), real writer processes killed with SIGKILL, the real teacher.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from f1.datasets import open_store
from f1.train.models.tokenizer import FSQTokenizer
from f1.train.offline.token_store import META_FILE, SHARDS_DIR, TokenStore, TokenStoreMismatch, rss_anon_bytes, store_cameras
from f1.train.offline.token_store_writer import build

from conftest import run_f1
from test_teacher import LENGTHS, assets, config, losses, run_teacher, write_store  # noqa: F401 (assets: a fixture)

pytestmark = pytest.mark.filterwarnings("ignore:Numcodecs codecs are not in the Zarr version 3 specification")


def files(root: Path) -> dict[str, bytes]:
    """Every file under a token store, by relative path: what 'the same bytes' compares."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# A writer process: rank 1 of 2, frozen (SIGSTOP-like sleep) once its second shard has begun, then killed.
_KILLED_WRITER = """
import sys, time
from pathlib import Path
import f1.train.offline.token_store_writer as writer
from f1.datasets import open_store
from f1.train.models.tokenizer import FSQTokenizer

calls = 0
encode = writer.encode_episode
def encode_then_stall(tokenizer, images):
    global calls
    calls += 1
    if calls == {stall_at}:  # the second shard's first episode: its temporary folder exists, half written
        print("ready", flush=True)
        time.sleep(300)
    return encode(tokenizer, images)
writer.encode_episode = encode_then_stall
writer.build(open_store({store!r}), FSQTokenizer.load({tokenizer!r}), Path({root!r}), rank=1, world_size=2, progress=False)
"""


def test_two_writers_one_killed_resume_to_the_same_bytes_as_one_writer(assets, tmp_path):
    store_dir = write_store(tmp_path / "store", lengths=[5, 6, 4] * 4)  # 12 episodes, 4 data shards: 2 for each rank
    store, tokenizer = open_store(store_dir), FSQTokenizer.load(assets.tokenizer)
    root = tmp_path / "tokens"
    stall_at = 3 * len(store_cameras(store)) + 1  # one shard = 3 episodes x 2 cameras
    code = _KILLED_WRITER.format(stall_at=stall_at, store=str(store_dir), tokenizer=str(assets.tokenizer), root=str(root))
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        first = build(store, tokenizer, root, rank=0, world_size=2, progress=False)  # the other worker, alongside
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert first.shards == 2 and first.episodes == 6, first
    leftovers = [p.name for p in (root / SHARDS_DIR).iterdir() if p.name.startswith(".tmp-")]
    assert len(leftovers) == 1, leftovers  # the killed writer's half shard ...
    view = TokenStore(root, store, tokenizer, store_cameras(store))
    assert len(view.missing_ids) == 3, view.missing_ids  # ... is not read: its episodes are missing

    resumed = build(store, tokenizer, root, progress=False)  # one writer finishes the job
    assert resumed.shards == 1 and resumed.episodes == 3, resumed
    single = tmp_path / "single"
    assert build(store, tokenizer, single, progress=False).shards == 4
    assert files(root) == files(single)
    assert not TokenStore(root, store, tokenizer, store_cameras(store)).missing_ids


def test_a_token_store_of_another_tokenizer_is_refused_with_one_line(assets, tmp_path):
    store_dir = write_store(tmp_path / "store", lengths=LENGTHS[:3])
    folder = tmp_path / "tokens"
    made = run_f1("dataset", "tokenize", store_dir, "--tokenizer", assets.tokenizer, "--out", folder)
    assert made.returncode == 0, made.stderr[-2000:]
    assert (folder / META_FILE).is_file() and "encoded 3 episodes" in made.stdout, made.stdout

    copy = shutil.copytree(assets.tokenizer, tmp_path / "copied-tokenizer")  # the key is the weights, not the path
    again = run_f1("dataset", "tokenize", store_dir, "--tokenizer", copy, "--out", folder)
    assert again.returncode == 0 and "encoded 0 episodes" in again.stdout, (again.stdout, again.stderr[-2000:])

    other = FSQTokenizer.load(assets.tokenizer)
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)
    other.save(tmp_path / "other-tokenizer")
    before = files(folder)
    refused = run_f1("dataset", "tokenize", store_dir, "--tokenizer", tmp_path / "other-tokenizer", "--out", folder)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()], refused.stderr
    assert "made with another tokenizer" in refused.stderr, refused.stderr
    assert files(folder) == before  # nothing written, nothing lost
    # the teacher refuses it too, before a rank starts
    cfg = config(assets, tmp_path / "out", f"teacher.token_store_dir={folder}", f"teacher.tokenizer_path={tmp_path / 'other-tokenizer'}")
    with pytest.raises(TokenStoreMismatch, match="made with another tokenizer"):
        run_teacher(cfg, store_dir)


def teacher_log(output_dir: Path) -> str:
    return "".join(p.read_text() for p in (output_dir / "logs").glob("*.log"))


def test_the_teacher_builds_the_token_store_then_reuses_it_and_tokenises_only_new_episodes(assets, tmp_path):
    """Same losses as the in-memory cache; a second run encodes nothing; a grown store only its new shard."""
    store_dir = write_store(tmp_path / "store")
    steps = "training.max_steps=6"
    in_memory = run_teacher(config(assets, tmp_path / "memory", steps, "teacher.token_store=false"), store_dir)
    on_store = run_teacher(config(assets, tmp_path / "first", steps), store_dir)
    assert in_memory.step == on_store.step == 6
    assert losses(tmp_path / "first") == losses(tmp_path / "memory")
    assert f"this rank encoded {len(LENGTHS)} " in teacher_log(tmp_path / "first")
    (root,) = (store_dir / "tokens").iterdir()
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*.npy")}

    run_teacher(config(assets, tmp_path / "second", "training.max_steps=1"), store_dir)
    assert "this rank encoded 0 (0 frames)" in teacher_log(tmp_path / "second")
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.npy")} == before  # not one file rewritten

    write_store(store_dir, lengths=[8, 9, 10], first=len(LENGTHS), worker="n0w1")  # the store grows by a shard
    run_teacher(config(assets, tmp_path / "grown", "training.max_steps=1"), store_dir)
    assert "this rank encoded 3 (54 frames)" in teacher_log(tmp_path / "grown")  # 27 steps x 2 cameras
    assert {p: p.stat().st_mtime_ns for p in before} == before


# A fresh process reads every (episode, step) of the store, a chunk of 2 lanes x 20 steps at a time, through
# the token store (or warms the in-memory cache), and prints its RssAnon growth: a fresh heap, so nothing
# freed earlier hides an allocation.
_READER = """
import sys
from pathlib import Path
import numpy as np
from f1.datasets import open_store
from f1.train.models.tokenizer import FSQTokenizer
from f1.train.offline.token_cache import TokenCache
from f1.train.offline.token_store import TokenStore, rss_anon_bytes, store_cameras

store, tokenizer = open_store({store!r}), FSQTokenizer.load({tokenizer!r})
view = TokenStore(Path({root!r}), store, tokenizer, store_cameras(store))
episodes = np.arange(len(store.episodes)).reshape(-1, 2)
steps = np.tile(np.arange(20), (2, 1))  # (2,20)

def read(pair):
    lanes = np.repeat(pair[:, None], 20, 1)  # (2,20)
    for camera in view.cameras:
        view.gather(camera, lanes, steps)
    view.gather_frames(lanes, steps)

read(episodes[0])  # the allocator's first chunk-sized buffers
start = rss_anon_bytes()
if {in_memory}:
    cache = TokenCache(store, tokenizer, store_cameras(store))
    cache.warm(range(len(store.episodes)))
else:
    for pair in episodes:
        read(pair)
print(rss_anon_bytes() - start, view.nbytes)
"""


def test_reading_the_token_store_keeps_anonymous_memory_flat_as_the_store_grows(assets, tmp_path):
    """Reading every frame's tokens and wrist frame of a store 100x larger grows RssAnon by far less than the
    store holds; the in-memory cache over the same store grows by what it holds (so the test can fail)."""
    if rss_anon_bytes() is None:
        pytest.skip("no /proc/self/status RssAnon on this system")
    store_dir = write_store(tmp_path / "store", lengths=[20] * 4)
    tokenizer, root = FSQTokenizer.load(assets.tokenizer), tmp_path / "tokens"

    def growth(in_memory: bool = False) -> tuple[int, int]:
        """(RssAnon growth, token store bytes) of a fresh process reading the whole store."""
        build(open_store(store_dir), tokenizer, root, progress=False)
        code = _READER.format(store=str(store_dir), tokenizer=str(assets.tokenizer), root=str(root), in_memory=in_memory)
        # A fixed mmap threshold: glibc's moving one keeps freed chunk-sized buffers (a few MB, the same for any
        # store size, reused by the next chunk) in the heap, which would hide what the reader itself holds.
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 << 10)}
        result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300, env=env)
        assert result.returncode == 0, result.stderr[-2000:]
        grown, stored = map(int, result.stdout.split())
        return grown, stored

    small, small_bytes = growth()
    write_store(store_dir, lengths=[20] * 396, first=4, worker="n0w1")  # the store grows 100x
    large, large_bytes = growth()
    assert large_bytes >= 99 * small_bytes, (large_bytes, small_bytes)
    # Alone (or after the S3 tests) the reader grows by 0.2-1 % of this 25 MB store; late in the full suite it
    # grew by 16 % once (4.1 MB; 32 % of a 2.5 MB store another time), for reasons not found yet. The bound
    # sits above that, and far below what holding the store costs (the in-memory cache: more than 50 %).
    assert large < 0.25 * large_bytes, (small, large, large_bytes)
    in_memory, _ = growth(in_memory=True)
    assert in_memory > 0.5 * large_bytes, (in_memory, large_bytes)
