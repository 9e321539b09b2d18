"""`f1 collect --backend ray` on the session's two-node Ray cluster (an actor killed, a node removed) and
on a local instance that loses its only node; ranks from Slurm and torchrun; the store's refusal of a
block run twice."""

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import psutil
import pytest

from f1.collect.plan import plan_collection
from f1.collect.ranks import ranks_from_environment, resolve_node_ranks
from f1.datasets import StoreError, open_store, open_writer, verify_store
from f1.shared.errors import UserError

from conftest import F1, ray_worker_node, run_f1
from test_datasets import SPEC, make_episode

pytestmark = pytest.mark.filterwarnings("ignore:Numcodecs codecs are not in the Zarr version 3 specification")

T = 6
SMALL = ["--gpus", "0", "--envs", "1", "--image-size", "32", "--steps-per-episode", str(T)]
LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_STEP_ID", "SLURM_STEPID",
                 "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_STEP")  # fmt: skip


def _env(**launcher) -> dict:
    """This process's environment without any launcher's variables, plus `launcher`'s."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    return {**env, **{k: str(v) for k, v in launcher.items()}}


def _ids(out: Path) -> list[str]:
    return [e.episode_id for e in open_store(out).episodes]


def _listed(out: Path) -> int:
    try:
        return len(open_store(out).episodes)
    except StoreError:  # not created yet
        return 0


# ---------------------------------------------------------------------- Ray


@pytest.mark.slow
def test_ray_run_completes_and_verifies(tmp_path, ray_address):
    out = tmp_path / "store"
    args = [*F1, "collect", "--backend", "ray", "--ray-address", ray_address, "--workers", "2", "--episodes", "5",
            "--episodes-per-shard", "2", "--out", str(out), *SMALL, "--set", "environment.scene_reset_interval=2"]  # fmt: skip
    result = subprocess.run(args, capture_output=True, text=True, timeout=400, env=_env())
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.startswith(f"Ray: the Ray cluster at {ray_address}; 2 actor(s), one per CPU slot"), result.stderr
    assert "5/5 episodes" in result.stderr
    assert sorted(_ids(out)) == [f"s0-e{i:07d}" for i in range(5)]  # the same ids as the multiprocessing plan
    assert verify_store(out) == []
    store = open_store(out)
    assert {s["name"].split("-")[1] for s in store.shards} <= {"n0r0", "n0r1"}  # each actor its own shards
    for info in store.episodes:
        assert info.length == T + 1
    # Each scene block keeps its scene: episodes 2k and 2k+1 share a scene id, as with --backend multiprocessing.
    scenes = {info.episode_id: info.scene_id for info in store.episodes}
    assert scenes["s0-e0000000"] == scenes["s0-e0000001"] != scenes["s0-e0000002"] == scenes["s0-e0000003"]
    assert not list(out.glob("writer-*.lock")) and not list(out.glob("*.tmp*"))
    again = subprocess.run(args, capture_output=True, text=True, timeout=120, env=_env())
    assert again.returncode == 0 and "nothing to do" in again.stderr, again.stderr[-2000:]


def _ray_processes(title: str, root: Optional[int] = None) -> list[psutil.Process]:
    """Ray processes whose title starts with `title` (ray::CollectActor, ray::CollectActor.run while it runs a
    task, ray::DashboardAgent), among the descendants of process `root` (default: this one, which started the
    session's cluster and the drivers with their local instances)."""
    found = []
    for proc in psutil.Process(root).children(recursive=True):
        try:
            if " ".join(proc.cmdline()).startswith(title):
                found.append(proc)
        except psutil.Error:
            pass
    return found


def _wait_for_busy_actor(proc: subprocess.Popen, out: Path, raylet_pid: Optional[int] = None) -> psutil.Process:
    """Once the store lists its first shard, an actor of this session (of the node whose raylet is
    `raylet_pid`, if given) caught running a task; fails the test after 300 s."""
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if _listed(out) >= 1:
            for actor in _ray_processes("ray::CollectActor.run"):
                try:
                    if raylet_pid in (None, actor.ppid()):  # a node's raylet starts its workers
                        return actor
                except psutil.Error:
                    pass
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"no actor was caught mid-task (exit code {proc.poll()}, {_listed(out)} episodes listed)")


def _exact(out: Path, episodes: int) -> None:
    """The store holds episodes 0..episodes-1 once each, verifies (the CLI too), and no temp file is left."""
    ids = _ids(out)
    assert sorted(ids) == [f"s0-e{i:07d}" for i in range(episodes)], ids  # none lost, none twice
    assert verify_store(out) == []
    verified = run_f1("dataset", "verify", out, timeout=120)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert not list(out.glob("*.tmp*")), "a lost actor's half-written shard was left behind"


@pytest.mark.slow
def test_ray_actor_killed_mid_run_is_retried_and_the_store_is_exact(tmp_path, ray_address):
    out = tmp_path / "store"
    # One episode a task and a shard: after the first lands, an actor is caught mid-task (six tasks, so on a
    # quiet machine the two actors are not both between tasks, or done, when the test looks).
    episodes = 6
    args = [*F1, "collect", "--backend", "ray", "--ray-address", ray_address, "--workers", "2", "--episodes", str(episodes),
            "--episodes-per-shard", "1", "--out", str(out), *SMALL, "--steps-per-episode", "20"]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    victim = _wait_for_busy_actor(proc, out)
    assert _listed(out) < episodes
    victim.send_signal(signal.SIGKILL)
    (channel,) = _ray_processes("ray::ProgressChannel")  # and the run's progress channel: costs the live bar only
    channel.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate(timeout=400)
    assert proc.returncode == 0, stderr[-3000:]
    assert f"pid {victim.pid} was lost mid-task" in stderr and "run again on another actor" in stderr, stderr[-3000:]
    assert "the progress channel was lost; the run goes on" in stderr, stderr[-3000:]
    _exact(out, episodes)


@pytest.mark.slow
def test_ray_worker_node_lost_mid_run_the_head_finishes_the_exact_store(tmp_path, ray_address, ray_cluster):
    out = tmp_path / "store"
    worker = ray_worker_node(ray_cluster)
    raylet = worker.all_processes["raylet"][0].process.pid  # ray_constants.PROCESS_TYPE_RAYLET
    # Two actors of 1 CPU on two nodes of 1 CPU: one on each. One episode a task and a shard, eight tasks, each
    # long enough (~0.5 s) that the caught task is still running when the node goes (at 30 steps, 0.1 s a task,
    # the worker's actor once finished its last task first and nothing was lost).
    episodes = 8
    args = [*F1, "collect", "--backend", "ray", "--ray-address", ray_address, "--workers", "2", "--episodes", str(episodes),
            "--episodes-per-shard", "1", "--out", str(out), *SMALL, "--image-size", "16", "--steps-per-episode", "150"]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    victim = _wait_for_busy_actor(proc, out, raylet_pid=raylet)  # the worker node's actor, mid-task
    assert _listed(out) < episodes
    head = ray_cluster.head_node.all_processes["raylet"][0].process.pid
    assert [c.ppid() for c in _ray_processes("ray::ProgressChannel")] == [head]  # the driver's node, the head
    ray_cluster.remove_node(worker, allow_graceful=False)  # SIGKILL to its raylet and every Ray process it has
    _, stderr = proc.communicate(timeout=400)
    assert proc.returncode == 0, stderr[-3000:]
    # The lost actor was on the worker node; the driver (on the head) and its progress channel went on.
    assert f"(node {worker.node_id[:8]}), pid {victim.pid} was lost mid-task" in stderr, stderr[-3000:]
    assert "progress channel was lost" not in stderr and f"{episodes}/{episodes} episodes" in stderr, stderr[-3000:]
    _exact(out, episodes)


@pytest.mark.slow
def test_ray_driver_node_lost_is_one_line_and_the_rerun_completes_the_store(tmp_path):
    out = tmp_path / "store"
    episodes = 12
    # No --ray-address: the run starts its own local instance, whose one node is the driver's.
    args = [*F1, "collect", "--backend", "ray", "--workers", "1", "--episodes", str(episodes), "--episodes-per-shard", "1",
            "--out", str(out), *SMALL, "--image-size", "16", "--steps-per-episode", "40"]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    _wait_for_busy_actor(proc, out)
    # The raylet cannot live without its DashboardAgent: it exits and the GCS marks the node dead (as an
    # out-of-memory kill of the raylet does, only later).
    (agent,) = _ray_processes("ray::DashboardAgent", root=proc.pid)
    agent.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    listed = _listed(out)
    assert 1 <= listed < episodes, (listed, last)
    assert last.startswith("Ray lost this driver's node") and f"the store's {listed} episode" in last, last
    rerun, log = re.fullmatch(r".*: rerun `(f1 collect [^`]+)` to resume \(traceback: (\S+)\)", last).groups()
    assert shlex.split(rerun)[1:] == args[1:]
    assert "Traceback (most recent call last)" in Path(log).read_text()
    again = subprocess.run([*F1, *shlex.split(rerun)[1:]], capture_output=True, text=True, timeout=400, env=_env())
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = f"Resuming {out}: {listed} episodes present, collecting {episodes - listed} more."
    assert resumed in " ".join(again.stderr.split()), again.stderr[-3000:]  # rich wraps at 80 columns here
    _exact(out, episodes)


def test_ray_address_needs_an_absolute_store_and_the_ray_backend(tmp_path, f1_cli):
    result = f1_cli("collect", "--backend", "ray", "--ray-address", "10.0.0.1:6379", "--out", "rel", "--episodes", "1", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "error: --out rel is a relative path, but with --ray-address 10.0.0.1:6379 every Ray node writes the store: "
        "give an absolute path on a filesystem that every node mounts"
    )
    assert not (tmp_path / "rel").exists()
    result = f1_cli("collect", "--ray-address", "10.0.0.1:6379", "--out", tmp_path / "s", "--episodes", "1")
    assert result.returncode == 2 and "needs --backend ray" in result.stderr and "Traceback" not in result.stderr
    result = f1_cli("collect", "--backend", "dask", "--out", tmp_path / "s", "--episodes", "1")
    assert result.returncode == 2 and "--backend 'dask' is not one of multiprocessing, ray" in result.stderr


def test_a_shard_whose_episodes_are_listed_already_is_dropped_not_added(tmp_path):
    store = tmp_path / "store"
    with open_writer(store, "zarr", SPEC, "n0r0", {}, 2) as first:
        for i in (0, 1):
            first.add_episode(*make_episode(i, 4))
    # The same block run again by another actor (an at-least-once retry), and one new episode after it.
    with open_writer(store, "zarr", SPEC, "n0r1", {}, 2) as second:
        for i in (1, 2):
            second.add_episode(*make_episode(i, 4))
        second.finish_shard()
        second.add_episode(*make_episode(3, 4))
    assert second.dropped_episodes == ["s0-e0000001", "s0-e0000002"]
    assert second.shards_written == ["shard-n0r1-000001.zarr"]
    assert _ids(store) == ["s0-e0000000", "s0-e0000001", "s0-e0000003"]
    assert verify_store(store) == []
    assert sorted(p.name for p in store.glob("shards/*/*/shard-*")) == ["shard-n0r0-000000.zarr", "shard-n0r1-000001.zarr"]


# ---------------------------------------------------------------------- ranks from the launcher


def _planned(rank: int, count: int) -> list[int]:
    plans = plan_collection(seed=0, total_episodes=24, scene_reset_interval=2, num_workers=2, envs_per_worker=1,
                            node_rank=rank, num_nodes=count)  # fmt: skip
    return sorted(t.index for p in plans for s in p.slots for t in s)


def test_slurm_and_torchrun_variables_split_the_work_as_node_rank_would():
    cases = {
        "srun": [{"SLURM_PROCID": r, "SLURM_NTASKS": 3, "SLURM_STEP_ID": 0} for r in range(3)],
        "array": [{"SLURM_ARRAY_TASK_ID": 5 + 2 * r, "SLURM_ARRAY_TASK_COUNT": 3, "SLURM_ARRAY_TASK_MIN": 5,
                   "SLURM_ARRAY_TASK_STEP": 2} for r in range(3)],
        "torchrun": [{"RANK": r, "WORLD_SIZE": 3, "SLURM_PROCID": 0, "SLURM_NTASKS": 1, "SLURM_STEP_ID": 0}
                     for r in range(3)],  # torchrun under srun: the launcher closest to the process wins
    }  # fmt: skip
    for name, envs in cases.items():
        ranks = [ranks_from_environment({k: str(v) for k, v in env.items()}) for env in envs]
        assert [(r.rank, r.count) for r in ranks] == [(0, 3), (1, 3), (2, 3)], (name, ranks)
        shares = [_planned(r.rank, r.count) for r in ranks]
        assert shares == [_planned(i, 3) for i in range(3)], name
        assert sorted(sum(shares, [])) == list(range(24)), name  # every episode once over the nodes
    # srun inside a job array: 2 array tasks x 2 srun tasks = 4 nodes, each once.
    both = [ranks_from_environment({"SLURM_ARRAY_TASK_ID": str(a), "SLURM_ARRAY_TASK_COUNT": "2", "SLURM_PROCID": str(p),
                                    "SLURM_NTASKS": "2", "SLURM_STEP_ID": "0"}) for a in range(2) for p in range(2)]  # fmt: skip
    assert sorted((r.rank, r.count) for r in both) == [(0, 4), (1, 4), (2, 4), (3, 4)]
    assert "SLURM_ARRAY_TASK_ID=1" in both[-1].source and "SLURM_PROCID=1" in both[-1].source


def test_flags_win_and_inconsistent_launcher_variables_are_one_line():
    slurm = {"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_STEP_ID": "0"}
    assert resolve_node_ranks(None, None, 0, 1, {}) is None  # a lone machine: rank 0 of 1, nothing said
    assert resolve_node_ranks(None, None, 0, 1, slurm).source == "Slurm srun (SLURM_PROCID=1, SLURM_NTASKS=2)"
    flagged = resolve_node_ranks(0, 3, 0, 3, slurm)
    assert (flagged.rank, flagged.count) == (0, 3) and flagged.source.startswith("--node-rank")
    # A batch script (no job step) with several tasks would take one share only: refused.
    with pytest.raises(UserError, match="not a job step: start f1 collect with `srun`"):
        ranks_from_environment({"SLURM_PROCID": "0", "SLURM_NTASKS": "4"})
    assert ranks_from_environment({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) is None  # sbatch --ntasks=1: one machine
    with pytest.raises(UserError, match="SLURM_ARRAY_TASK_ID=3 is not on the array's range"):
        ranks_from_environment({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "2"})
    with pytest.raises(UserError, match="RANK='x' is not an integer"):
        ranks_from_environment({"RANK": "x", "WORLD_SIZE": "2"})


def test_the_run_says_where_its_node_rank_came_from(tmp_path, f1_cli):
    # Node 1 of 2 owns scene block 1, and a 1-episode run has only block 0: nothing to do, no simulator started.
    result = f1_cli("collect", "--out", tmp_path / "s", "--episodes", "1", *SMALL,
                    env=_env(SLURM_PROCID=1, SLURM_NTASKS=2, SLURM_STEP_ID=0))  # fmt: skip
    assert result.returncode == 0, result.stderr
    first, rest = result.stderr.split("\n", 1)
    assert first == "node rank 1 of 2, from Slurm srun (SLURM_PROCID=1, SLURM_NTASKS=2)"
    assert "nothing to do" in rest
    result = f1_cli("collect", "--out", tmp_path / "s", "--episodes", "1", *SMALL, env=_env(SLURM_PROCID=0, SLURM_NTASKS=4))
    assert result.returncode == 2 and "not a job step" in result.stderr and "Traceback" not in result.stderr


def test_two_runs_of_the_same_episodes_at_once_list_each_once(tmp_path):
    from test_datasets import _child

    store = tmp_path / "store"
    # Two writer processes (a Ray task and its retry, both alive) adding the same 5 episodes, one a shard.
    children = [_child(store, "webdataset", f"n0r{w}", per_shard=1, count=5, after="writer.close()") for w in range(2)]
    for child in children:
        assert child.stdout.readline().strip() == "ready"
        assert child.wait(timeout=120) == 0
    assert sorted(_ids(store)) == [f"s0-e{i:07d}" for i in range(5)]
    assert verify_store(store) == []
    # A writer that saw the other's shard drops its own (deleted, not left unlisted); two that committed the
    # same episode at once both stay listed, and readers keep the lower-named shard's (format 3).
    assert len(list(store.glob("shards/*/*/shard-*.tar"))) == len(open_store(store).shards)


def test_a_cpu_actor_hides_the_gpus_itself(tmp_path):
    """Ray gives a num_gpus=0 actor an empty CUDA_VISIBLE_DEVICES or the node's own, by version: the actor
    sets "" itself, drops the seed's device variables and keeps lavapipe to one thread, before SAPIEN loads."""
    code = (
        "import os; from f1.collect.ray_backend import _pin; _pin(False, True); "
        "print(repr(os.environ['CUDA_VISIBLE_DEVICES']), os.environ['LP_NUM_THREADS'], 'VK_DEVICE_INDEX' in os.environ)"
    )
    env = {**_env(), "CUDA_VISIBLE_DEVICES": "0,1", "VK_DEVICE_INDEX": "1"}
    env.pop("LP_NUM_THREADS", None)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["''", "1", "False"]
