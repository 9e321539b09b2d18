"""Format 3, the log-structured store: commit records, checkpoints, races, crashes, snapshots, upgrade, merge.

The record-level races commit synthetic entries (metadata only, as bench_store_scale builds stores):
what they test is which records a reader lists, not the shards behind them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from f1.datasets import StoreError, open_store, open_writer, verify_store
from f1.datasets import commit_log
from f1.datasets.compact import compact
from f1.datasets.create_only import CreateConflict
from f1.datasets.manifest import read_header
from f1.datasets.merge import merge
from f1.datasets.schema import FORMAT_VERSION, MANIFEST_NAME, StoreSpec
from f1.datasets.store_checkpoint import checkpoint_numbers
from f1.datasets.upgrade import upgrade, write_upgrade_checkpoint

from test_datasets import EPISODES, LENGTHS, SPEC, assert_same_store, make_episode, make_legacy, write_store

pytestmark = pytest.mark.filterwarnings("ignore:Numcodecs codecs are not in the Zarr version 3 specification")


def synthetic_entry(worker: str, seq: int, episodes: int = 1) -> dict:
    """A commit record's entry for a shard that is not on disk (the listing protocol does not read shards)."""
    name = f"shard-{worker}-{seq:06d}.tar"
    eps = [{"id": f"{worker}-{seq}-{k}", "length": 3, "seed": seq, "scene_id": k, "randomization": {"k": k}} for k in range(episodes)]
    return {"name": name, "path": f"shards/{worker}/0000/{name}", "format": "webdataset", "episodes": eps,
            "steps": 3 * episodes, "bytes": 1, "checksum": "sha256:0"}  # fmt: skip


def make_store(store) -> None:
    """manifest.json of an empty format-3 store, as the first writer creates it."""
    from f1.datasets.manifest import open_or_create_manifest
    from f1.datasets.s3 import store_path

    open_or_create_manifest(store_path(store), "webdataset", SPEC.with_codec("png"), {})


_COMMITTER = """
import sys
sys.path.insert(0, {tests!r})
from test_store_log import synthetic_entry
from f1.datasets import commit_log
from f1.datasets.s3 import store_path
store = store_path({store!r})
for seq in range({n}):
    commit_log.commit(store, synthetic_entry({worker!r}, seq))
"""

_COMPACTOR = """
from f1.datasets.compact import compact
from f1.datasets.s3 import store_path
for _ in range({rounds}):
    compact(store_path({store!r}), retention_s=0)  # the harshest cleanup: what one compaction folded goes at once
"""


def _python(code: str, **kw) -> subprocess.Popen:
    text = textwrap.dedent(code).format(tests=str(Path(__file__).parent), **kw)
    return subprocess.Popen([sys.executable, "-c", text])


def race_committers_and_compactors(store: str, writers: int, per_writer: int, compactors: int, rounds: int) -> None:
    """Writers commit while compactors fold and clean at once; then every record is listed exactly once."""
    make_store(store)
    procs = [_python(_COMMITTER, store=store, worker=f"n0w{w}", n=per_writer) for w in range(writers)]
    procs += [_python(_COMPACTOR, store=store, rounds=rounds) for _ in range(compactors)]
    assert [p.wait(timeout=300) for p in procs] == [0] * len(procs)
    for final in (False, True):  # before and after a last compaction folds whatever the racing ones missed
        reader = open_store(store)
        names = [s["name"] for s in reader.shards]
        assert names == sorted(f"shard-n0w{w}-{s:06d}.tar" for w in range(writers) for s in range(per_writer))
        assert len(reader.episodes) == writers * per_writer
        if not final:
            compact(reader.store_dir, retention_s=0)
    assert reader.snapshot.pending_records == 0 and reader.snapshot_id == {f"n0w{w}": per_writer - 1 for w in range(writers)}


def test_a_retried_commit_is_a_no_op_and_another_record_under_its_name_is_refused(tmp_path):
    make_store(tmp_path)
    entry = synthetic_entry("n0w0", 0)
    assert commit_log.commit(tmp_path, entry) is True
    assert commit_log.commit(tmp_path, json.loads(json.dumps(entry))) is False  # the same bytes: success, nothing new
    assert len(open_store(tmp_path).episodes) == 1
    with pytest.raises(CreateConflict, match="two writers used one name"):
        commit_log.commit(tmp_path, {**entry, "steps": 4})
    assert [p.name for p in (tmp_path / "log" / "n0w0" / "0000").iterdir()] == ["000000000.json"]  # no temp left


def test_two_compactions_at_once_and_compactions_racing_writers_lose_no_record(tmp_path):
    race_committers_and_compactors(str(tmp_path / "s"), writers=3, per_writer=40, compactors=2, rounds=15)
    assert checkpoint_numbers(tmp_path / "s")  # the compactors did fold


def test_compaction_folds_into_a_checkpoint_and_cleans_only_past_the_retention(tmp_path):
    make_store(tmp_path)
    for seq in range(1500):  # two log chunk folders of records for one worker
        commit_log.commit(tmp_path, synthetic_entry("n0w0", seq), fsync=False)
    first = compact(tmp_path)  # the default retention: nothing is deleted yet
    assert (first.checkpoint, first.folded, first.deleted) == (0, 1500, 0)
    commit_log.commit(tmp_path, synthetic_entry("n0w0", 1500))
    reader = open_store(tmp_path)
    assert (reader.snapshot.checkpoint, reader.snapshot.pending_records, len(reader.episodes)) == (0, 1, 1501)
    second = compact(tmp_path, retention_s=0)
    # Checkpoint 0 is deleted (1 has existed for >= 0 s), then log chunk 0000 (every kept checkpoint folded
    # it), and not chunk 0001, which holds records up to 1999; the newest checkpoint stays.
    assert second.checkpoint == 1 and checkpoint_numbers(tmp_path) == [1]
    assert sorted(os.listdir(tmp_path / "log" / "n0w0")) == ["0001"]
    reader = open_store(tmp_path)
    assert (reader.snapshot.pending_records, len(reader.episodes)) == (0, 1501)
    assert list(reader.lengths[:3]) == [3, 3, 3] and reader.episodes[1500].episode_id == "n0w0-1500-0"


def test_the_newest_checkpoint_wins_without_the_hint(tmp_path):
    make_store(tmp_path)
    commit_log.commit(tmp_path, synthetic_entry("n0w0", 0))
    compact(tmp_path)
    commit_log.commit(tmp_path, synthetic_entry("n0w0", 1))
    compact(tmp_path)
    (tmp_path / "_last_checkpoint").write_text("0")  # stale: readers probe past it
    assert open_store(tmp_path).snapshot.checkpoint == 1
    (tmp_path / "_last_checkpoint").unlink()  # missing: readers list
    reader = open_store(tmp_path)
    assert reader.snapshot.checkpoint == 1 and len(reader.episodes) == 2


_KILLED_BEFORE_RECORD = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from test_datasets import SPEC, make_episode, LENGTHS
from f1.datasets import open_writer, commit_log
real = commit_log.commit
def commit_then_die_at_the_second(store, entry, **kw):
    if entry["name"].endswith("000001.{ext}"):
        os.kill(os.getpid(), signal.SIGKILL)  # the shard is finished and renamed; its record never written
    return real(store, entry, **kw)
commit_log.commit = commit_then_die_at_the_second
with open_writer({store!r}, {fmt!r}, SPEC, "n0w0", {{}}, 2) as writer:
    for i, n in enumerate(LENGTHS):
        writer.add_episode(*make_episode(i, n))
"""


@pytest.mark.parametrize("fmt", ["zarr", "webdataset"])
def test_a_writer_killed_between_shard_and_record_lists_nothing_and_the_rerun_completes(tmp_path, fmt, capsys):
    from f1.datasets.verify import main as verify_main

    store = tmp_path / "s"
    ext = "zarr" if fmt == "zarr" else "tar"
    child = _python(_KILLED_BEFORE_RECORD, store=str(store), fmt=fmt, ext=ext)
    assert child.wait(timeout=300) == -signal.SIGKILL
    orphan = store / "shards" / "n0w0" / "0000" / f"shard-n0w0-000001.{ext}"
    assert orphan.exists()  # finished, but no record lists it
    reader = open_store(store)
    assert [e.episode_id for e in reader.episodes] == ["s0-e0000000", "s0-e0000001"]
    assert verify_store(store) == []
    assert verify_main(store) == 0 and f"unlisted {orphan}" in capsys.readouterr().out.replace("\n", "")
    write_store(store, fmt, episodes=EPISODES[2:], worker="n0w0")  # the next writer of that worker
    assert not orphan.exists()
    assert_same_store(open_store(store), EPISODES)
    assert [s["name"] for s in open_store(store).shards] == [f"shard-n0w0-{s:06d}.{ext}" for s in (0, 2, 3)]
    assert verify_store(store) == []


def test_a_pinned_snapshot_sees_the_same_episodes_after_more_commits_and_compactions(tmp_path):
    write_store(tmp_path, "webdataset", episodes=EPISODES[:3], per_shard=1, worker="n0w0")
    pinned = open_store(tmp_path)
    pin, ids = pinned.snapshot_id, [e.episode_id for e in pinned.episodes]
    assert pin == {"n0w0": 2}
    compact(tmp_path)
    write_store(tmp_path, "webdataset", episodes=EPISODES[3:], per_shard=1, worker="n0w0")
    write_store(tmp_path, "webdataset", episodes=[make_episode(9, 4)], per_shard=1, worker="n0w1")
    compact(tmp_path, retention_s=0)  # the pinned records are folded and the log folders of the old ones gone
    again = open_store(tmp_path, pin=pin)
    assert [e.episode_id for e in again.episodes] == ids and again.snapshot_id == pin
    assert list(again.lengths) == LENGTHS[:3]
    assert len(open_store(tmp_path).episodes) == 6  # a new run sees the new shards


def test_a_duplicate_committed_by_two_writers_is_read_once_from_the_lower_named_shard(tmp_path, capsys):
    from f1.datasets.verify import main as verify_main

    write_store(tmp_path, "zarr", episodes=EPISODES[:2], worker="n0w1")
    # A second writer that opened before the first committed (a retried Ray task's twin) commits
    # episode 1 too: its shard and record, written elsewhere, are put in place as it would have.
    write_store(tmp_path / "twin", "zarr", episodes=EPISODES[1:3], worker="n0w0")
    shutil.copytree(tmp_path / "twin" / "shards" / "n0w0", tmp_path / "shards" / "n0w0")
    shutil.copytree(tmp_path / "twin" / "log" / "n0w0", tmp_path / "log" / "n0w0")
    reader = open_store(tmp_path)
    assert [(e.episode_id, e.shard) for e in reader.episodes] == [
        ("s0-e0000001", "shard-n0w0-000000.zarr"), ("s0-e0000002", "shard-n0w0-000000.zarr"), ("s0-e0000000", "shard-n0w1-000000.zarr"),
    ]  # fmt: skip
    assert reader.snapshot.shadowed == [("shard-n0w1-000000.zarr", "s0-e0000001")]
    assert verify_store(tmp_path) == []
    assert verify_main(tmp_path) == 0 and "shadowed" in capsys.readouterr().out
    compact(tmp_path)
    assert [e.episode_id for e in open_store(tmp_path).episodes] == [e.episode_id for e in reader.episodes]
    # A writer opening now refuses a shard of listed episodes (the cheap commit-time check).
    with open_writer(tmp_path, "zarr", SPEC, "n0w2", {}, 2) as writer:
        writer.add_episode(*EPISODES[0])
    assert writer.dropped_episodes == ["s0-e0000000"] and writer.shards_written == []


def test_a_format_2_store_reads_upgrades_in_place_and_survives_a_killed_upgrade(tmp_path):
    store = write_store(tmp_path / "v2", "webdataset", per_shard=2)
    make_legacy(store)
    assert read_header(store)["format_version"] == 2 and (store / "shard-n0w0-000000.tar").is_file()
    assert_same_store(open_store(store), EPISODES)
    assert verify_store(store) == []
    with pytest.raises(StoreError, match="f1 dataset upgrade"):
        open_writer(store, "webdataset", SPEC, "n0w1", {}, 2)
    # An upgrade killed after its checkpoint, before the manifest switch: the store is still the old one.
    write_upgrade_checkpoint(store, json.loads((store / MANIFEST_NAME).read_text()))
    assert read_header(store)["format_version"] == 2
    assert_same_store(open_store(store), EPISODES)
    assert verify_store(store) == []
    assert upgrade(store) == 2 and upgrade(store) is None  # a rerun finishes it; a second one has nothing to do
    assert read_header(store)["format_version"] == FORMAT_VERSION and (store / "manifest.v2.json").is_file()
    assert_same_store(open_store(store), EPISODES)
    assert verify_store(store) == []
    write_store(store, "webdataset", episodes=[make_episode(7, 4)], worker="n0w0")  # continues after seq 2
    reader = open_store(store)
    assert [s["path"] for s in reader.shards][-1] == "shards/n0w0/0000/shard-n0w0-000003.tar" and len(reader.episodes) == 6
    assert verify_store(store) == []


_UPGRADE = """
from f1.datasets.upgrade import upgrade
upgrade(__import__("pathlib").Path({store!r}))
"""


@pytest.mark.slow
def test_an_upgrade_killed_at_any_moment_reads_as_before_or_after(tmp_path):
    source = write_store(tmp_path / "src", "zarr", per_shard=1)
    make_legacy(source)
    rng = np.random.default_rng(0)
    seen = set()
    for attempt in range(6):
        store = tmp_path / f"try{attempt}"
        shutil.copytree(source, store)
        child = _python(_UPGRADE, store=str(store))
        try:
            child.wait(timeout=rng.uniform(0.2, 2.5))
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGKILL)
            child.wait()
        seen.add(read_header(store)["format_version"])
        assert_same_store(open_store(store), EPISODES)
        upgrade(store)
        assert_same_store(open_store(store), EPISODES)
    assert seen <= {2, FORMAT_VERSION}


def test_merge_joins_stores_and_refuses_a_duplicate_or_another_spec_in_one_line(tmp_path):
    a = write_store(tmp_path / "a", "webdataset", episodes=EPISODES[:2], per_shard=1)
    b = write_store(tmp_path / "b", "webdataset", episodes=EPISODES[2:], per_shard=2)  # the same worker name, n0w0
    shards, episodes = merge([a, b], tmp_path / "ab")
    reader = open_store(tmp_path / "ab")
    assert (shards, episodes) == (4, 5) and reader.snapshot.checkpoint == 0
    assert [s["name"] for s in reader.shards] == [
        "shard-m0n0w0-000000.tar", "shard-m0n0w0-000001.tar", "shard-m1n0w0-000000.tar", "shard-m1n0w0-000001.tar"
    ]  # fmt: skip
    assert sorted(e.episode_id for e in reader.episodes) == sorted(m.episode_id for _, m in EPISODES)
    assert os.stat(tmp_path / "ab" / reader.shards[0]["path"]).st_ino == os.stat(a / open_store(a).shards[0]["path"]).st_ino
    assert verify_store(tmp_path / "ab") == []
    with pytest.raises(StoreError, match="episode 's0-e0000000' is in both .*a and .*ab;") as dup:
        merge([a, b, tmp_path / "ab"], tmp_path / "dup")
    assert "\n" not in str(dup.value)
    other = write_store(tmp_path / "c", "webdataset", episodes=[make_episode(8, 4)], spec=StoreSpec.from_dict({**SPEC.to_dict(), "control_freq": 20}))
    with pytest.raises(StoreError, match="control_freq"):
        merge([a, other], tmp_path / "ac")
    assert not (tmp_path / "dup").exists() and not (tmp_path / "ac").exists()
