"""`f1 collect` end to end on the CPU: real SAPIEN workers writing a real store."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from f1.collect.collector import worker_envs
from f1.datasets import open_store, verify_store
from f1.shared.gpu import SEED_DEVICE_VARS

from conftest import F1

T = 6  # actions per episode
SMALL = ["--image-size", "32", "--steps-per-episode", str(T), "--set", "environment.scene_reset_interval=2"]


def test_worker_envs_pin_one_gpu_per_rank(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    from f1.shared.gpu import physical_gpu_ids

    envs = worker_envs(physical_gpu_ids(2), 2)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["3", "5"]
    assert [[e[v] for v in SEED_DEVICE_VARS] for e in envs] == [["3"] * 3, ["5"] * 3]
    cpu = worker_envs([], 2)
    assert all(e["CUDA_VISIBLE_DEVICES"] == "" and e["LP_NUM_THREADS"] == "1" for e in cpu)


@pytest.mark.slow
def test_cpu_collect_two_workers_two_envs(tmp_path, f1_cli):
    out = tmp_path / "shards"  # the default --out, in the working directory
    result = f1_cli("collect", "--gpus", "0", "--workers", "2", "--envs", "2", "--episodes", "5", *SMALL, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    store = open_store(out)
    assert len(store.episodes) == 5
    assert len({e.episode_id for e in store.episodes}) == 5
    assert {s["name"].split("-")[1] for s in store.shards} == {"n0w0", "n0w1"}  # each worker its own shards
    for info in store.episodes:
        assert info.length == T + 1  # exactly T actions, T + 1 steps
        ep = store.read_episode(info)
        for cam in ("head_rgb", "wrist_rgb"):
            frames = ep[cam].astype(np.int16)
            assert frames.shape == (T + 1, 32, 32, 3)
            assert np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3)).min() > 0, f"{cam} frozen between steps"
        assert ep["is_first"].tolist() == [True] + [False] * T
        assert not ep["action"][-1].any()  # the last step's action is padding
    assert verify_store(out) == []
    assert not list(out.glob("writer-*.lock")), "the run left its writer lock behind"
    # `f1 dataset verify | stats` default to shards/ as well.
    verified = f1_cli("dataset", "verify", cwd=tmp_path)
    assert verified.returncode == 0 and "5 episodes" in verified.stdout + verified.stderr, verified
    stats = f1_cli("dataset", "stats", "--json", cwd=tmp_path)
    assert stats.returncode == 0 and '"episodes": 5' in stats.stdout, stats.stdout[-2000:]
    # Rerunning the same command finds nothing missing.
    again = f1_cli("collect", "--gpus", "0", "--workers", "2", "--envs", "2", "--episodes", "5", *SMALL, cwd=tmp_path)
    assert again.returncode == 0 and "nothing to do" in again.stderr
    assert len(open_store(out).episodes) == 5


def _shards_in_manifest(out: Path) -> int:
    """Shards committed so far: the store's commit records (format 3)."""
    return len(list(out.glob("log/*/*/*.json")))


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_resumes_to_exact_count(tmp_path):
    out = tmp_path / "store"
    # Longer episodes than SMALL's, so that the kill surely lands mid-run (a quiet machine is fast).
    args = [*F1, "collect", "--gpus", "0", "--workers", "2", "--envs", "1", "--episodes", "8", "--out", str(out),
            "--episodes-per-shard", "1", *SMALL, "--steps-per-episode", "60"]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while _shards_in_manifest(out) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    # Paused, still alive and holding its writer lock, so it cannot finish meanwhile (a commit takes no lock
    # another run could wait on: it creates one record).
    os.killpg(proc.pid, signal.SIGSTOP)
    assert proc.poll() is None and _shards_in_manifest(out) < 8, "run finished before it could be killed; make it longer"
    # A second run into the same store and node rank, while this one writes, is refused in one line.
    second = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert second.returncode == 2, second.stderr[-3000:]
    assert second.stderr.strip() == (
        f"error: {out} is being written for node rank 0 by pid {proc.pid} on {socket.gethostname()} since "
        f"{json.loads((out / 'writer-n0.lock').read_text())['since']}; wait for it to finish, stop it, "
        "or give this run another --out"
    )
    os.killpg(proc.pid, signal.SIGKILL)  # the whole run: parent and workers; its lock stays behind
    proc.wait()
    killed_with = len(open_store(out).episodes)
    assert 2 <= killed_with < 8
    assert verify_store(out) == []  # a killed run leaves a store that verifies

    assert (out / "writer-n0.lock").exists()
    rerun = subprocess.run(args, capture_output=True, text=True, timeout=600)  # takes the dead run's lock over
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    store = open_store(out)
    assert sorted(e.episode_id for e in store.episodes) == sorted(f"s0-e{i:07d}" for i in range(8))
    assert verify_store(out) == []


def test_store_with_another_spec_is_refused_before_any_worker_starts(tmp_path, f1_cli):
    from f1.collect.store_spec import collection_spec
    from f1.datasets.manifest import open_or_create_manifest
    from f1.datasets.writer import resolved_spec
    from f1.shared.config import load_config

    out = tmp_path / "store"
    cfg = load_config(overrides=["environment.image_size=[32,32]"])
    open_or_create_manifest(out, "zarr", resolved_spec(out, "zarr", collection_spec(cfg)), cfg.to_dict())
    before = (out / "manifest.json").read_bytes()
    result = f1_cli("collect", "--out", out, "--episodes", "1", "--image-size", "64")
    assert result.returncode == 2
    assert "different spec" in result.stderr and "image_hw" in result.stderr and "Traceback" not in result.stderr
    assert (out / "manifest.json").read_bytes() == before
    not_a_store = tmp_path / "other"
    not_a_store.mkdir()
    (not_a_store / "notes.txt").write_text("mine")
    result = f1_cli("collect", "--out", not_a_store, "--episodes", "1")
    assert result.returncode == 2 and "not an f1 store" in result.stderr


@pytest.mark.slow
def test_a_killed_worker_is_reported_and_the_run_exits_nonzero_keeping_the_others(tmp_path):
    import psutil

    out = tmp_path / "store"
    # Longer episodes than SMALL's, so that both workers are surely mid-run when the first shard lands.
    args = [*F1, "collect", "--gpus", "0", "--workers", "2", "--envs", "1", "--episodes", "8", "--out", str(out),
            "--episodes-per-shard", "1", *SMALL, "--steps-per-episode", "60"]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while _shards_in_manifest(out) < 1 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    workers = [p for p in psutil.Process(proc.pid).children() if "spawn_main" in " ".join(p.cmdline())]
    assert len(workers) == 2 and proc.poll() is None, "both workers must still be running"
    victim = workers[0]
    victim.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 1
    assert "died with exit code -9" in stderr and "Rerun the same command to resume" in stderr
    assert verify_store(out) == []  # the survivor's shards (and the victim's finished ones) are intact
    kept = len(open_store(out).episodes)
    assert 4 <= kept < 8, kept  # the surviving worker finished its half


def test_gpus_the_machine_lacks_are_refused_before_anything_is_written(tmp_path, f1_cli):
    if shutil.which("nvidia-smi") or Path("/proc/driver/nvidia/gpus").is_dir():
        pytest.skip("this machine has an NVIDIA driver: the no-GPU answer cannot be checked here")
    result = f1_cli("collect", "--gpus", "4", "--envs", "2", cwd=tmp_path)  # the README's command as typed
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: --gpus 4 asks for 4 GPUs, but 0 can be used here (no nvidia-smi, no /proc/driver/nvidia/gpus); "
        "use --gpus 0 to run CPU workers (rendering with lavapipe)"
    )
    assert not any(tmp_path.iterdir()), "the refused run wrote something"


def test_gpu_count_follows_the_driver_and_cuda_visible_devices(tmp_path):
    from f1.shared.errors import UserError
    from f1.shared.gpu_count import gpus_for_run

    if shutil.which("nvidia-smi"):
        pytest.skip("nvidia-smi answers first on this machine")
    proc = tmp_path / "gpus"
    for bus in ("0000:01:00.0", "0000:02:00.0"):
        (proc / bus).mkdir(parents=True)
    assert gpus_for_run(2, {}, proc) == ["0", "1"]
    assert gpus_for_run(1, {"CUDA_VISIBLE_DEVICES": "1"}, proc) == ["1"]
    with pytest.raises(UserError, match=r"--gpus 2 asks for 2 GPUs, but 1 can be used .*lists 2, CUDA_VISIBLE_DEVICES='1,7'.*use --gpus 1"):
        gpus_for_run(2, {"CUDA_VISIBLE_DEVICES": "1,7"}, proc)  # there is no GPU 7


def test_a_render_device_that_cannot_open_is_one_line_before_any_worker(tmp_path, f1_cli):
    out = tmp_path / "store"
    result = f1_cli("collect", "--gpus", "0", "--workers", "2", "--episodes", "2", "--out", out, *SMALL,
                    env={"VK_ICD_FILENAMES": str(tmp_path / "no-such-icd.json")})  # fmt: skip
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: cannot render, so no worker was started: SAPIEN could not open a Vulkan rendering device")
    assert not (out / "shards").exists() and not (out / "logs").exists()


def _hold_lock_then_die(store: Path, node_rank: int) -> None:
    """A real run's lock left behind by kill -9: a child takes it, then is killed holding it."""
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from f1.datasets.writer_lock import writer_lock\n"
        f"with writer_lock(Path({str(store)!r}), {node_rank}):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    child = subprocess.run([sys.executable, "-c", code], cwd=store.parent)
    assert child.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_writer_lock_per_node_rank_dead_holders_taken_over(tmp_path, f1_cli):
    from f1.collect.store_spec import collection_spec
    from f1.datasets.manifest import open_or_create_manifest
    from f1.datasets.writer import resolved_spec
    from f1.datasets.writer_lock import writer_lock
    from f1.shared.config import load_config

    out = tmp_path / "store"
    nodes = ["--num-nodes", "2", "--episodes", "4", "--gpus", "0", "--workers", "1", "--envs", "1", "--out", out, *SMALL]
    # An empty store with a dead holder's lock for node rank 0.
    cfg = load_config(overrides=["environment.image_size=[32,32]"])
    open_or_create_manifest(out, "zarr", resolved_spec(out, "zarr", collection_spec(cfg)), cfg.to_dict())
    _hold_lock_then_die(out, 0)
    assert (out / "writer-n0.lock").exists()
    with writer_lock(out, 1):  # a live writer (this process) for node rank 1
        node0 = f1_cli("collect", *nodes, "--node-rank", "0")
        assert node0.returncode == 0, node0.stderr[-3000:]  # took the dead lock over, wrote beside node rank 1
        node1 = f1_cli("collect", *nodes, "--node-rank", "1")
        assert node1.returncode == 2
        assert f"being written for node rank 1 by pid {os.getpid()} on {socket.gethostname()}" in node1.stderr
    assert sorted(e.episode_id for e in open_store(out).episodes) == ["s0-e0000000", "s0-e0000001"]
    assert not (out / "writer-n0.lock").exists() and not (out / "writer-n1.lock").exists()
    assert f1_cli("collect", *nodes, "--node-rank", "1").returncode == 0  # free again: node 1's blocks
    assert len(open_store(out).episodes) == 4 and verify_store(out) == []


@pytest.fixture
def tiny_disk(tmp_path):
    """A real, tiny filesystem (tmpfs) to fill; needs root (mount)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=320k", "tmpfs", str(disk)]).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root): the full-disk path is not exercised")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


@pytest.mark.slow
def test_a_full_disk_stops_cleanly_keeps_finished_shards_and_resumes(tiny_disk, f1_cli):
    out = tiny_disk / "store"
    args = ["collect", "--gpus", "0", "--workers", "1", "--envs", "1", "--episodes", "12", "--episodes-per-shard", "1",
            "--out", out, *SMALL]  # fmt: skip
    full = f1_cli(*args)
    assert full.returncode == 1, full.stderr[-3000:]
    assert "Traceback" not in full.stderr
    assert re.search(rf"warning: {out} has [\d.]+ MB free but this run is estimated at [\d.]+ MB", full.stderr), full.stderr
    match = re.search(rf"worker 0 failed: No space left on device: {out} has ([\d.]+) MB free; .*\(traceback: (\S+)\)", full.stderr)
    assert match, full.stderr[-3000:]
    # of 0.32: full for a shard (a Zarr shard's many small files take whole 4 KB pages; format 4's four camera
    # arrays add 8 files, 32 KB)
    assert float(match.group(1)) < 0.25
    assert "Traceback" in Path(match.group(2)).read_text()  # the full story is in the log file the line names
    kept = open_store(out).episodes
    assert 1 <= len(kept) < 12, len(kept)
    assert verify_store(out) == []

    subprocess.run(["mount", "-o", "remount,size=8m", str(tiny_disk)], check=True)
    resumed = f1_cli(*args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{len(kept)} episodes present" in " ".join(resumed.stderr.split())  # rich wraps long lines
    assert len(open_store(out).episodes) == 12 and verify_store(out) == []
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name], "an unfinished shard's temp files were left"
