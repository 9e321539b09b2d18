"""`f1 train teacher`: memory carry and reset, exact resume, crash recovery, 2-process CPU Accelerate, bad inputs, outputs.

Everything runs the real parts at tiny sizes: a Zarr store written with the
datasets writer (32x32 frames with a moving square), a VQ tokenizer trained
for a few steps, the tiny world model, Accelerate on the CPU.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from f1.datasets import EpisodeMeta, StoreSpec, open_writer
from f1.datasets.replay_lanes import assign_lanes
from f1.shared.config import load_config
from f1.train.checkpoint import (
    METRICS_FILE,
    MODEL_FILE,
    latest_checkpoint,
    load_checkpoint,
)
from f1.train.run_outputs import read_metrics
from f1.train.models.tokenizer import FSQTokenizer

from conftest import F1, run_f1

pytestmark = pytest.mark.filterwarnings("ignore:Numcodecs codecs are not in the Zarr version 3 specification")

SPEC = StoreSpec(image_hw=(32, 32), state_dim=8, action_dim=8, real_state_dims=8, real_action_dims=8, control_freq=10)
LENGTHS = [9, 13, 7, 11, 10, 12]  # N per episode: 62 steps, 2 lanes of ~31 -> 8 chunks of L=4 per epoch
K = 6  # the resume test: 2K steps vs K + resume + K, both ends mid-epoch, crossing the epoch boundary
SETTINGS = [
    "environment.image_size=[32,32]",
    "training.action_dim=8",
    "training.state_dim=8",
    "model.tokenizer_image_size=32",
    "model.tokenizer_downsample=8",
    "model.tokenizer_channels=8",
    "model.tokenizer_levels=[4,4,2]",
    "model.code_dim=8",
    "model.hidden_size=32",
    "model.num_layers=1",
    "model.intermediate_size=64",
    "model.memory_hidden=16",
    "training.batch_size=2",
    "training.bptt_length=4",
    "training.epochs=2",
    "training.warmup_steps=2",
    "training.log_every=1",
    "training.save_every=4",
    "training.sample_every=8",
    "training.prefetch_chunks=2",
]


def make_episode(i: int, n: int) -> tuple[dict[str, np.ndarray], EpisodeMeta]:
    """A gradient background with a square that moves one pixel per step; actions and state say how far."""
    rng = np.random.default_rng(i)
    h, w = SPEC.image_hw
    yy, xx = np.mgrid[0:h, 0:w]
    arrays = {}
    for c, key in enumerate(SPEC.image_keys):
        frames = np.empty((n, h, w, 3), np.uint8)
        for k in range(n):
            img = np.stack([xx * 6 + 40 * c, yy * 5, np.full_like(xx, 30 * i)], axis=-1)
            img[4 + k : 12 + k, 6 + 2 * i : 14 + 2 * i] = (230, 40 * c, 90)
            frames[k] = np.clip(img, 0, 255)
        arrays[key] = frames
    k = np.arange(n)
    state = np.zeros((n, 8), np.float32)
    state[:, 0], state[:, 1:] = k, rng.normal(size=(n, 7))
    action = np.zeros((n, 8), np.float32)
    action[:-1, 0], action[:-1, 1:] = 1.0, rng.uniform(-1, 1, size=(n - 1, 7))
    arrays.update(state=state, action=action, is_first=k == 0, is_last=k == n - 1, is_terminal=np.zeros(n, bool))
    return arrays, EpisodeMeta(f"ep{i:04d}", seed=i, scene_id=0, length=n)


def write_store(path: Path, lengths=LENGTHS, spec: StoreSpec = SPEC, first: int = 0, worker: str = "n0w0") -> Path:
    """Episodes first, first + 1, ... (ids ep<i>) of the given lengths, 3 a shard; a new worker name adds to a store."""
    with open_writer(path, "zarr", spec, worker, {"test": True}, episodes_per_shard=3) as writer:
        for i, n in enumerate(lengths, start=first):
            writer.add_episode(*make_episode(i, n))
    return path


def config(assets, output_dir: Path, *extra: str):
    return load_config(
        None, [*SETTINGS, f"teacher.output_dir={output_dir}", f"teacher.tokenizer_path={assets.tokenizer}", *extra]
    )


def cli_args(assets, output_dir: Path, *extra: str) -> list[str]:
    sets = [arg for s in SETTINGS for arg in ("--set", s)]
    return ["train", "teacher", "--data", str(assets.store), "--tokenizer", str(assets.tokenizer),
            "--output-dir", str(output_dir), *sets, *extra]  # fmt: skip


def run_teacher(cfg, store, **kwargs):
    """The real `main`, in this process: a fresh Accelerate state each time (other tests may have made one)."""
    from accelerate.state import AcceleratorState

    from f1.train.offline.teacher import main

    AcceleratorState._reset_state(reset_partial_state=True)
    return main(cfg, store, **kwargs)


def weights(checkpoint_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint_dir / MODEL_FILE, map_location="cpu", weights_only=False)["model"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, ("weights differ", different[:5])


def losses(output_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_metrics(output_dir)]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """The store, and a tokenizer trained for a few steps on its frames (enough for its codes to spread)."""
    root = tmp_path_factory.mktemp("teacher")
    store = write_store(root / "store")
    cfg = load_config(None, SETTINGS)
    torch.manual_seed(0)
    tokenizer = FSQTokenizer.from_config(cfg)
    frames = torch.from_numpy(np.concatenate([make_episode(i, n)[0]["wrist_rgb"] for i, n in enumerate(LENGTHS)]))
    optimizer = torch.optim.Adam(tokenizer.parameters(), lr=1e-3)
    for _ in range(40):
        loss = tokenizer(frames)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    tokenizer.save(root / "tokenizer")
    return SimpleNamespace(root=root, store=store, tokenizer=root / "tokenizer")


@pytest.fixture(scope="module")
def reference(assets):
    """An uninterrupted run of 2K steps, recording what the model saw and used at each chunk."""
    out = assets.root / "reference"
    records = []
    progress = run_teacher(config(assets, out, f"training.max_steps={2 * K}"), assets.store, on_chunk=records.append)
    assert progress.step == 2 * K and progress.epoch == 1 and progress.chunk > 0, progress  # mid second epoch
    return SimpleNamespace(out=out, records=records)


# ------------------------------------------------------------------------------------------ memory


def test_memory_continues_across_chunk_borders_and_resets_exactly_at_is_first(reference):
    continued = reset_after_memory = 0
    for prev, rec in zip(reference.records, reference.records[1:]):
        chunk, trace = rec["chunk"], rec["memory_trace"]  # trace (B,L,Hm): the memory each step used
        first, valid = torch.from_numpy(chunk["is_first"]), torch.from_numpy(chunk["valid"])
        norms = trace.norm(dim=-1)  # (B,L)
        assert torch.all(norms[first] == 0), ("memory not zero at is_first", norms[first])
        assert torch.all(norms[valid & ~first] > 0), ("memory zero inside an episode", norms, first)
        # the carry: this chunk starts from exactly the memory the previous chunk ended with
        assert torch.equal(rec["memory_in"], prev["memory_out"]), rec["step"]
        prev_chunk = prev["chunk"]
        for b in range(chunk["valid"].shape[0]):
            if chunk["valid"][b, 0] and not chunk["is_first"][b, 0]:
                # the lane goes on with the same episode, one step later, from the memory it had
                assert chunk["episode_index"][b, 0] == prev_chunk["episode_index"][b, -1], (rec["step"], b)
                assert chunk["step"][b, 0] == prev_chunk["step"][b, -1] + 1, (rec["step"], b)
                assert torch.equal(trace[b, 0], prev["memory_out"][-1, b]), (rec["step"], b)
                continued += 1
        # a reset must zero a memory that was not zero
        for b, p in zip(*np.nonzero(chunk["is_first"] & chunk["valid"])):
            before = prev["memory_out"][-1, b] if p == 0 else None
            if p > 0 or (before is not None and before.norm() > 0):
                reset_after_memory += 1
    assert continued > 0 and reset_after_memory > 0, (continued, reset_after_memory)


def test_predicting_frames_ahead_trains_on_more_than_the_next_frame(reference, assets, tmp_path):
    """training.n_pred_img_steps = 3 adds the losses of frames t+2, t+3 (from the model's own frames): same steps,
    the same first chunk, a larger loss to descend, a model that ends elsewhere."""
    out = tmp_path / "ahead"
    progress = run_teacher(config(assets, out, "training.max_steps=4", "training.n_pred_img_steps=3"), assets.store)
    assert progress.step == 4
    one_step = run_teacher(config(assets, tmp_path / "one", "training.max_steps=4"), assets.store)
    assert one_step.step == 4
    ahead, next_only = weights(out / "checkpoint-4"), weights(tmp_path / "one" / "checkpoint-4")
    assert any(not torch.equal(ahead[k], next_only[k]) for k in ahead)
    assert all(torch.isfinite(v).all() for v in ahead.values() if v.is_floating_point())


def test_cached_tokens_match_the_tokenised_window(assets):
    """The token cache gathers by (episode, step) what tokenising the replay's window frames gives."""
    from f1.datasets import open_store
    from f1.datasets.replay import OrderedReplay
    from f1.train.offline.teacher_batch import cached_tokens, window_tokens
    from f1.train.offline.token_cache import TokenCache

    store, tokenizer, cpu = open_store(assets.store), FSQTokenizer.load(assets.tokenizer), torch.device("cpu")
    replay = OrderedReplay(store.episodes, store.read_steps, batch_size=2, bptt_length=4, history=4, stride=2, prefetch=0)
    cache = TokenCache(store, tokenizer, ("wrist", "head"))
    assert cache.warm(range(len(LENGTHS))) == 2 * sum(LENGTHS)
    for chunk in replay.iter_chunks(0):
        valid, target_valid = torch.from_numpy(chunk["valid"]), torch.from_numpy(chunk["target_valid"])
        window = window_tokens(chunk, tokenizer, cpu, use_head=True)
        cached = cached_tokens(chunk, cache, 4, 2, cpu, use_head=True)
        assert torch.equal(window[0][valid], cached[0][valid]), chunk["chunk_index"]  # history
        assert torch.equal(window[1][valid], cached[1][valid]), chunk["chunk_index"]  # head
        assert torch.equal(window[2][target_valid], cached[2][target_valid]), chunk["chunk_index"]  # next frame
        assert len(torch.unique(cached[0][valid])) > 1, "every frame got one token: the test would prove nothing"


# ------------------------------------------------------------------------------------------ resume


def test_k_steps_plus_resume_plus_k_steps_equals_2k_steps(reference, assets, tmp_path):
    out = tmp_path / "split"
    first = run_teacher(config(assets, out, f"training.max_steps={K}"), assets.store)
    assert first.step == K and (out / f"checkpoint-{K}").is_dir()
    # --resume PATH here; --auto_resume is the killed-run test's
    second = run_teacher(config(assets, out, f"training.max_steps={2 * K}"), assets.store, resume=out / f"checkpoint-{K}")
    assert second.step == 2 * K
    want = losses(reference.out)
    assert [s for s, _ in want] == list(range(1, 2 * K + 1))
    assert losses(out) == want  # bit-identical floats
    assert_same_weights(weights(out / f"checkpoint-{2 * K}"), weights(reference.out / f"checkpoint-{2 * K}"))


def test_resuming_a_finished_run_trains_nothing(reference, assets, tmp_path):
    import shutil

    out = shutil.copytree(reference.out, tmp_path / "done")
    before = sorted(p.name for p in out.iterdir())
    progress = run_teacher(config(assets, out, f"training.max_steps={2 * K}"), assets.store, auto_resume=True)
    assert progress.step == 2 * K
    assert losses(out) == losses(reference.out)
    assert sorted(p.name for p in out.iterdir()) == before


def test_resume_with_another_batch_size_or_model_is_refused(reference, assets):
    from f1.shared.errors import UserError

    with pytest.raises(UserError, match="batch_size=2.*this run has 3"):
        run_teacher(config(assets, reference.out, "training.batch_size=3"), assets.store, auto_resume=True)
    with pytest.raises(UserError, match="model.hidden_size=32, this run has 64"):
        run_teacher(config(assets, reference.out, "model.hidden_size=64"), assets.store, auto_resume=True)


@pytest.mark.slow
def test_killed_run_auto_resumes_from_the_last_complete_checkpoint(reference, assets, tmp_path):
    out = tmp_path / "killed"
    args = cli_args(assets, out, "--max-steps", str(2 * K), "--set", "training.save_every=2")
    err_path = tmp_path / "killed.err"
    with open(err_path, "w") as err:  # a file, not a pipe: the progress bar would fill a pipe and stall the child
        child = subprocess.Popen([*F1, *args], stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.time() + 300
    while latest_checkpoint(out) is None and child.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, err_path.read_text()[-3000:]
    survivor = latest_checkpoint(out)
    assert survivor is not None
    step = int(survivor.name.split("-")[1])
    assert step < 2 * K, "the run finished before the kill: nothing was tested"
    # what a crash can leave: a checkpoint half written under its temp name, and one missing a file
    half = out / f".checkpoint-{2 * K + 2}.tmp"
    half.mkdir(exist_ok=True)
    (half / MODEL_FILE).write_bytes(b"truncated")
    incomplete = out / f"checkpoint-{2 * K + 4}"
    incomplete.mkdir()
    for name in (MODEL_FILE, METRICS_FILE):
        (incomplete / name).write_bytes((survivor / name).read_bytes())
    assert latest_checkpoint(out) == survivor

    result = run_f1(*cli_args(assets, out, "--max-steps", str(2 * K), "--auto_resume"), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    log_text = "".join(p.read_text() for p in (out / "logs").glob("*.log"))
    assert f"resumed from {survivor}" in log_text
    assert losses(out) == losses(reference.out)  # the killed steps were redone, each logged once
    assert_same_weights(weights(out / f"checkpoint-{2 * K}"), weights(reference.out / f"checkpoint-{2 * K}"))


# ------------------------------------------------------------------------------------------ ranks


@pytest.mark.slow
def test_two_cpu_processes_read_disjoint_episodes_and_keep_identical_weights(assets, tmp_path):
    """Also the path without the token cache: each chunk's window frames are read and tokenised."""
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
               "-m", "f1", *cli_args(assets, out, "--max-steps", "4", "--set", "teacher.cache_tokens=false")]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]

    state = load_checkpoint(out / "checkpoint-4").training_state
    assert state["world_size"] == 2
    digests = [r["weights_sha256"] for r in state["ranks"]]
    assert digests[0] == digests[1], digests
    read = {}
    for rank in (0, 1):
        (log,) = (out / "logs").glob(f"teacher-rank{rank}-*.log")
        read[rank] = {e for line in re.findall(r"episodes \[(.*?)\]", log.read_text()) for e in re.findall(r"'(\w+)'", line)}
    assert read[0] and read[1] and not read[0] & read[1], read
    # and they are the episodes the lane plan gives each rank
    ids = [f"ep{i:04d}" for i in range(len(LENGTHS))]
    plan = assign_lanes(ids, LENGTHS, seed=0, epoch=0, world_size=2, batch_size=2)
    for rank in (0, 1):
        assert read[rank] <= {ids[e] for lane in plan[rank] for e in lane}, (rank, read[rank])

    refused = run_f1(*cli_args(assets, out, "--max-steps", "8", "--auto_resume"))
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()]
    assert "written by 2 processes, this run has 1" in refused.stderr


def test_launcher_strips_gpus_and_counts_ranks():
    from f1.shared.errors import UserError
    from f1.train.launch import accelerate_command, planned_world_size, relaunch_if_needed, strip_option

    argv = ["train", "teacher", "--gpus", "2", "--data", "d", "--gpus=3", "--max-steps", "5"]
    assert strip_option(argv, "--gpus") == ["train", "teacher", "--data", "d", "--max-steps", "5"]
    command = accelerate_command(2, strip_option(argv, "--gpus"))
    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"] and "--multi_gpu" in command
    assert command[command.index("--num_processes") + 1] == "2"
    assert command[-8:] == ["-m", "f1", "train", "teacher", "--data", "d", "--max-steps", "5"]
    assert planned_world_size(None, {}) == planned_world_size(0, {}) == planned_world_size(1, {}) == 1
    assert planned_world_size(4, {}) == 4
    assert planned_world_size(None, {"WORLD_SIZE": "3", "LOCAL_RANK": "1"}) == 3
    if torch.cuda.device_count() < 64:
        with pytest.raises(UserError, match="--gpus 64 asked for 64 GPUs"):
            relaunch_if_needed(64, argv)


# ------------------------------------------------------------------------------------------ bad input


def _bad_store_empty(root: Path) -> Path:
    with open_writer(root / "empty", "zarr", SPEC, "n0w0", {}, 2):
        pass
    return root / "empty"


def _bad_store_missing_shard(root: Path) -> Path:
    store = write_store(root / "missing")
    import shutil

    shutil.rmtree(sorted(store.glob("shards/*/*/shard-*.zarr"))[0])
    return store


def _bad_store_action_dim(root: Path) -> Path:
    spec = StoreSpec(image_hw=(32, 32), state_dim=8, action_dim=10, real_state_dims=8, real_action_dims=8)
    with open_writer(root / "adim", "zarr", spec, "n0w0", {}, 2) as writer:
        arrays, meta = make_episode(0, 3)
        arrays["action"] = np.pad(arrays["action"], ((0, 0), (0, 2)))
        writer.add_episode(arrays, meta)
    return root / "adim"


@pytest.mark.parametrize(
    "case, expected",
    [
        ("empty", "no finalised episodes"),
        ("missing_shard", "is listed in the store but missing"),
        ("action_dim", "action_dim 10 but training.action_dim is 8"),
        ("image_size", "32x32 camera images but environment.image_size is [64, 64]"),
        ("no_tokenizer", "lacks tokenizer_config.json"),
        ("fresh_run_over_checkpoints", "already holds checkpoint-"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_training(case, expected, assets, reference, tmp_path, capsys):
    from f1.cli import main as cli_main

    store, out, extra = assets.store, tmp_path / "out", []
    if case == "empty":
        store = _bad_store_empty(tmp_path)
    elif case == "missing_shard":
        store = _bad_store_missing_shard(tmp_path)
    elif case == "action_dim":
        store = _bad_store_action_dim(tmp_path)
    elif case == "image_size":
        extra = ["--set", "environment.image_size=[64,64]"]
    elif case == "no_tokenizer":
        extra = ["--tokenizer", str(tmp_path / "nowhere")]
    elif case == "fresh_run_over_checkpoints":
        out = reference.out
    args = cli_args(assets, out, *extra)
    args[args.index("--data") + 1] = str(store)
    with pytest.raises(SystemExit) as exit_info:
        cli_main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and expected in err, err
    if out != reference.out:
        assert not out.exists(), "a bad input wrote outputs"


def test_bad_input_through_the_real_cli(assets, tmp_path):
    result = run_f1(*cli_args(assets, tmp_path / "out", "--set", "training.state_dim=16"))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: store {assets.store} has state_dim 8 but training.state_dim is 16; pass --set training.state_dim=8"
    )
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ outputs


def test_outputs_metrics_samples_video_tensorboard_logs_checkpoints(reference):
    import imageio.v2 as imageio

    out = reference.out
    records = read_metrics(out)
    assert [r["step"] for r in records] == list(range(1, 2 * K + 1))
    for key in ("loss", "wm/loss", "wm/token_accuracy", "wm/memory_norm", "perf/data_wait_s", "perf/steps_per_s"):
        assert all(np.isfinite(r[key]) for r in records), key
    first, last = (np.mean([r["wm/loss"] for r in part]) for part in (records[:K], records[K:]))  # epoch-sized halves
    assert last < first, ("the loss did not go down at all", [r["wm/loss"] for r in records])
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert "DEBUG" in next((out / "logs").glob("teacher-*.log")).read_text()

    pngs, videos = sorted((out / "samples").glob("episode_*.png")), sorted((out / "videos").glob("episode_*.mp4"))
    assert pngs and [p.stem for p in pngs] == [v.stem for v in videos], (pngs, videos)
    for png, video in zip(pngs, videos):
        image = imageio.imread(png)
        n = LENGTHS[int(video.stem.split("_")[1])]
        # rows truth | one step | open loop, each under a 16-row caption, below a 16-row caption naming the steps;
        # up to 8 steps a row, 32 px frames shown at 128 px, 2-px gaps
        columns, tile = min(8, n - 1), 128
        assert image.shape == (16 + 3 * (16 + tile), columns * tile + (columns - 1) * 2, 3), image.shape
        assert (image[:16] < 128).any(), "the caption row has no text"
        frames = imageio.mimread(video)
        assert len(frames) == n - 1 and frames[0].shape == (32, 4 * 32, 3), (len(frames), frames[0].shape)  # head | truth | 1 step | open loop

    checkpoints = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    assert checkpoints == [4, 8, 12], checkpoints
    ckpt = load_checkpoint(out / f"checkpoint-{2 * K}")
    assert set(ckpt.model) == {"model", "model_config"}
    state = ckpt.training_state
    for key in ("optimizer", "scheduler", "step", "epoch", "chunk", "config", "world_size", "batch_size", "ranks"):
        assert key in state, key
    (rank,) = state["ranks"]
    assert set(rank) >= {"rng", "memory", "lane_cursors"} and rank["memory"].shape == (1, 2, 16)
    assert len(rank["lane_cursors"]) == 2 and ckpt.metrics["wm/loss"] == records[-1]["wm/loss"]
    assert not list(out.glob(".checkpoint-*")), "a temp checkpoint dir was left behind"
