"""`f1 collect` end to end on the CPU: real SAPIEN workers writing a real store."""

import os
import signal
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
    out = tmp_path / "store"
    result = f1_cli("collect", "--gpus", "0", "--workers", "2", "--envs", "2", "--episodes", "5", "--out", out, *SMALL)
    assert result.returncode == 0, result.stderr[-3000:]
    store = open_store(out)
    assert len(store.episodes) == 5
    assert len({e.episode_id for e in store.episodes}) == 5
    assert {s["name"].split("-")[1] for s in store.manifest["shards"]} == {"n0w0", "n0w1"}  # each worker its own shards
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
    # Rerunning the same command finds nothing missing.
    again = f1_cli("collect", "--gpus", "0", "--workers", "2", "--envs", "2", "--episodes", "5", "--out", out, *SMALL)
    assert again.returncode == 0 and "nothing to do" in again.stderr
    assert len(open_store(out).episodes) == 5


def _shards_in_manifest(out: Path) -> int:
    import json

    try:
        return len(json.loads((out / "manifest.json").read_text())["shards"])
    except (FileNotFoundError, ValueError):
        return 0


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
    assert proc.poll() is None, "run finished before it could be killed; make it longer"
    os.killpg(proc.pid, signal.SIGKILL)  # the whole run: parent and workers
    proc.wait()
    killed_with = len(open_store(out).episodes)
    assert 2 <= killed_with < 8
    assert verify_store(out) == []  # a killed run leaves a store that verifies

    rerun = subprocess.run(args, capture_output=True, text=True, timeout=600)
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
