"""`f1 collect --backend ray`: the run's episode plan as tasks on long-lived Ray actors.

    f1 collect --backend ray [--ray-address ADDR] (--gpus G | --gpus 0 --workers W) --envs M --episodes E ...

- The plan is the one `f1.collect.collector` makes (`f1.collect.plan`): the same
  episodes, ids and scenes, this node's share only. It is cut into tasks of
  whole scene blocks, about a shard's worth each (`plan_tasks`), and a task is
  one `WorkerPlan`: M slots, one per env of the actor that runs it.
- Actors: one per GPU (`num_gpus=1`) or one per CPU slot (`num_cpus=1`, no
  GPU). Each builds its M envs once and keeps them from task to task; a task
  writes its own shards under the actor's name `n<node>r<k>` and finalises
  them before it returns, so a task reported done is in the store.
- GPU pinning (DESIGN.md section 6, haosulab/SAPIEN#101: by CUDA_VISIBLE_DEVICES
  or by an explicit device, never both): a GPU actor takes the one GPU Ray gave
  it (`ray.get_gpu_ids()`), sets CUDA_VISIBLE_DEVICES and the seed's variables
  to it before SAPIEN is imported, and renders on its cuda:0. A CPU actor sets
  CUDA_VISIBLE_DEVICES="" itself: depending on its version and
  RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO, Ray gives a num_gpus=0 actor an empty
  value or the node's own, and SAPIEN would render on a GPU it was not given.
- A lost actor (its process killed, its node gone): its task goes back to the
  queue with the episodes the store does not list yet, another actor runs
  it, and a fresh actor takes the lost one's place. Tasks are at-least-once,
  so every run of a task first drops the episodes the store lists, and the
  writer drops a shard whose episodes the store already lists (the reader
  keeps the lowest-named record should two race): a block that reached the
  store is never added again. When the queue is empty the driver checks the
  store and collects whatever is still missing, so the store ends with
  exactly the asked episodes. A task lost `MAX_ATTEMPTS` times, or one that
  fails (an error inside it: a full disk, a render device that does not
  open), is reported as a failed worker is, and its actor retired.
- The progress channel (`ProgressChannel`, an actor of no CPU) is pinned to
  the driver's node, so that losing any other node costs it nothing; the
  actors tell it each episode without waiting for an answer, and if it is
  lost anyway (its process killed) the live bar advances task by task.
- The driver's own node lost (its raylet, or a Ray process the raylet cannot
  live without, such as the DashboardAgent; the whole cluster with it): the
  driver's actors and its bookkeeping are gone, so the run stops with
  `RunLost`, one line naming the cause (`f1.collect.collector.main` adds the
  rerun command; the traceback goes to the log file), exit 1; what reached
  the store is kept and the rerun resumes from it.
- Without `--ray-address` the driver starts a local Ray instance with the
  run's CPUs and GPUs, listening on 127.0.0.1 only and with no dashboard:
  Ray's ports take jobs from whoever reaches them. A real cluster belongs on
  a trusted network, and its nodes must all reach the store (a shared
  filesystem), so a relative --out is refused there.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import os
import socket
import time
import traceback
from collections import deque
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from rich.console import Console
from rich.markup import escape

from f1.collect.failures import RunLost
from f1.collect.plan import WorkerPlan, plan_collection
from f1.collect.worker import WorkerReport
from f1.datasets.s3 import S3Path, store_path
from f1.shared.config import F1Config
from f1.shared.errors import UserError

LOCAL_ONLY_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Ray's switch for single-machine mode ("0": every Ray process on 127.0.0.1), read when ray is imported."""
HEALTH_CHECK_S = 2.0  # how often the driver asks the GCS whether its own node is still alive
CHANNEL_TIMEOUT_S = 10.0  # a progress channel that does not answer in this long is dropped (the bar only)
MAX_ATTEMPTS = 3  # runs of one task that may lose their actor before the task is reported failed
REPAIR_ROUNDS = 2  # passes over what the store still lacks once the queue is empty
ACTOR_START_TIMEOUT_S = float(os.environ.get("F1_RAY_ACTOR_START_TIMEOUT_S", "600"))
POLL_S = 0.5


# ---------------------------------------------------------------------- the driver's checks


def _is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _address_host(address: str) -> str:
    address = address.split("://", 1)[-1]  # ray://host:port (Ray Client)
    return address.rsplit(":", 1)[0] if address.count(":") == 1 or address.startswith("[") else address


def check_ray_store(out: Path | S3Path, ray_address: Optional[str]) -> None:
    """With a real cluster every node writes the store: a relative local path is refused (one line, exit 2);
    an s3:// store is reachable from every node."""
    if ray_address is not None and not isinstance(out, S3Path) and not Path(out).is_absolute():
        raise UserError(
            f"--out {out} is a relative path, but with --ray-address {ray_address} every Ray node writes the store: "
            "give an absolute path on a filesystem that every node mounts"
        )


def _import_ray(local: bool):
    if local:
        # Before ray is imported, and inherited by every process the local instance starts.
        os.environ[LOCAL_ONLY_VAR] = "0"
    try:
        import ray
    except ImportError:
        raise UserError("--backend ray needs Ray, an optional extra: pip install 'f1[ray]' (make setup installs it)") from None
    if local:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False  # in case this process imported ray before the variable was set
    return ray


def _connect(ray, ray_address: Optional[str], num_cpus: int, num_gpus: int) -> str:
    """Start the local instance or join the cluster; what it is, for the run's line."""
    quiet = dict(logging_level=logging.ERROR, log_to_driver=False)
    if ray_address is None:
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, **quiet)
        gcs = ray.get_runtime_context().gcs_address
        if not _is_loopback(_address_host(gcs)):
            ray.shutdown()
            raise UserError(
                f"the local Ray instance listens on {gcs}, not on 127.0.0.1 (this Ray ignores {LOCAL_ONLY_VAR}=0); "
                "start a cluster on a trusted network and pass --ray-address"
            )
        return f"a local Ray instance on {gcs}, {num_cpus} CPUs, {num_gpus} GPUs, no dashboard"
    try:
        ray.init(address=ray_address, **quiet)
    except Exception as exc:  # noqa: BLE001 - ConnectionError, ValueError, RuntimeError: Ray says which
        said = str(exc).strip().splitlines()
        raise UserError(
            f"cannot join the Ray cluster at --ray-address {ray_address} ({type(exc).__name__}: "
            f"{said[0] if said else 'no message'}); start it (`ray start --head`) or fix the address"
        ) from None
    return f"the Ray cluster at {ray_address}"


def _size(ray, cfg: F1Config, ray_address: Optional[str], gpu_ids: list[str]) -> tuple[int, bool, str]:
    """(actors, one per GPU?, where): connect, and check that the cluster can hold that many actors."""
    c = cfg.collect
    if ray_address is None:
        num_actors = len(gpu_ids) if gpu_ids else (c.workers or os.cpu_count() or 1)
        where = _connect(ray, None, max(num_actors, os.cpu_count() or 1) if gpu_ids else num_actors, len(gpu_ids))
        return num_actors, bool(gpu_ids), where
    where = _connect(ray, ray_address, 0, 0)
    have = ray.cluster_resources()
    if c.gpus:
        if have.get("GPU", 0) < c.gpus:
            ray.shutdown()
            raise UserError(
                f"--gpus {c.gpus} asks for {c.gpus} GPU actors, but {where} has {int(have.get('GPU', 0))} GPUs; "
                "lower --gpus or add GPU nodes"
            )
        return c.gpus, True, where
    cpus = int(have.get("CPU", 0))
    num_actors = c.workers or cpus
    if not 0 < num_actors <= cpus:
        ray.shutdown()
        raise UserError(
            f"--workers {num_actors} asks for {num_actors} CPU actors, but {where} has {cpus} CPUs; "
            f"use --workers {max(cpus, 1)} or fewer, or add nodes"
        )
    return num_actors, False, where


# ---------------------------------------------------------------------- the plan as tasks


def listed_episode_ids(out: Path) -> set[str]:
    """Every episode the store lists (what a task run again must not redo)."""
    from f1.datasets.manifest import read_manifest

    return {e["id"] for s in read_manifest(store_path(out))["shards"] for e in s["episodes"]}


def plan_tasks(cfg: F1Config, done_ids: set[str], num_actors: int) -> list[WorkerPlan]:
    """This node's missing episodes as tasks: whole scene blocks per slot, about a shard's worth a task,
    and at least two tasks an actor where the blocks allow, so that a lost actor costs little."""
    c = cfg.collect
    interval = cfg.environment.scene_reset_interval
    kwargs = dict(
        seed=c.seed,
        total_episodes=c.episodes,
        scene_reset_interval=interval,
        envs_per_worker=c.envs,
        node_rank=c.node_rank,
        num_nodes=c.num_nodes,
        done_ids=done_ids,
    )
    todo = sum(p.num_episodes for p in plan_collection(num_workers=1, **kwargs))
    if not todo:
        return []
    per_task = max(c.episodes_per_shard, interval * c.envs)
    num_tasks = max(-(-todo // per_task), min(2 * num_actors, -(-todo // (interval * c.envs))))
    return [p for p in plan_collection(num_workers=num_tasks, **kwargs) if p.num_episodes]


def without(plan: WorkerPlan, done_ids: set[str]) -> WorkerPlan:
    """The plan less the episodes already done, slots kept (one per env)."""
    return WorkerPlan(plan.rank, [[t for t in slot if t.episode_id not in done_ids] for slot in plan.slots])


# ---------------------------------------------------------------------- the actor


def _pin(gpu: bool, one_lavapipe_thread: bool) -> None:
    """Pin this actor's process before SAPIEN is imported (see the module docstring)."""
    from f1.shared.gpu import worker_env

    if gpu:
        import ray

        ids = [str(i) for i in ray.get_gpu_ids()]
        if len(ids) != 1:
            raise RuntimeError(f"Ray gave this actor GPUs {ids}; a collect actor takes exactly one (num_gpus=1)")
        env = worker_env(0, ids)
    else:
        env = worker_env(0, [])
        if one_lavapipe_thread:
            env.setdefault("LP_NUM_THREADS", "1")
    os.environ.clear()
    os.environ.update(env)


class CollectActor:
    """One GPU or CPU slot: M envs, built on the first task and kept; runs tasks one after another.

    Created by the driver through `ray.remote(...)(CollectActor)`; this module imports no Ray at its top.
    """

    def __init__(self, cfg_dict: dict, out_dir: str, worker: str, gpu: bool, one_lavapipe_thread: bool):
        _pin(gpu, one_lavapipe_thread)
        from f1.shared.config import config_from_dict

        self.cfg = config_from_dict(cfg_dict)
        self.out = store_path(out_dir)
        self.worker = worker
        self.venv = None
        self.warm = False

    def ready(self) -> dict[str, Any]:
        import ray

        node = ray.get_runtime_context().get_node_id()
        return {"host": socket.gethostname(), "pid": os.getpid(), "node": node, "gpu": os.environ.get("CUDA_VISIBLE_DEVICES", "")}

    def run(self, task_id: int, attempt: int, plan: WorkerPlan, channel) -> tuple:
        """("done", WorkerReport, dropped episode ids) or ("error", root cause line, traceback text)."""
        try:
            from f1.collect.store_spec import open_config_writer
            from f1.collect.worker import collect_plan

            plan = without(plan, listed_episode_ids(self.out))  # a rerun skips what reached the store
            if not plan.num_episodes:
                return ("done", WorkerReport(rank=0), [])
            setup_s = 0.0
            if self.venv is None:
                from f1.collect.vector import make_vector_env

                start = time.perf_counter()
                self.venv = make_vector_env(self.cfg, len(plan.slots), cameras=("head", "wrist"))
                setup_s = time.perf_counter() - start
            writer = open_config_writer(self.cfg, self.out, worker=self.worker)
            # Fire and forget: no answer awaited, so a lost channel costs this task nothing.
            report = collect_plan(
                self.cfg, plan, writer, lambda steps: channel.put.remote((task_id, attempt, steps)), venv=self.venv, warm=self.warm
            )
            self.warm = True
            report.setup_s += setup_s
            report.wall_s += setup_s
            return ("done", report, list(writer.dropped_episodes))
        except BaseException as exc:  # noqa: BLE001 - the driver reports it as one line
            from f1.collect.failures import root_cause

            return ("error", root_cause(exc, self.out), traceback.format_exc())


class ProgressChannel:
    """(task id, attempt, steps) per episode from the actors, taken in batches by the driver.

    Created by the driver on its own node (`_open_channel`), so that it lives as long as the driver's bookkeeping does.
    """

    def __init__(self):
        self.events: list[tuple[int, int, int]] = []

    def put(self, event: tuple[int, int, int]) -> None:
        self.events.append(event)

    def take(self) -> list[tuple[int, int, int]]:
        events, self.events = self.events, []
        return events


def _open_channel(ray, node_id: str):
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    pinned = NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
    return ray.remote(num_cpus=0, max_restarts=0)(ProgressChannel).options(scheduling_strategy=pinned).remote()


def _kept(out: Path) -> str:
    n = len(listed_episode_ids(out))
    return "the store's 1 episode is kept" if n == 1 else f"the store's {n} episodes are kept"


def _check_driver_node(ray, node_id: str, out: Path, seen: Optional[BaseException] = None) -> None:
    """Raise `RunLost` when the GCS no longer lists the driver's node as alive, or does not answer;
    `seen`: the error that made the driver ask, for the log file."""
    trace = "".join(traceback.format_exception(seen)) if seen is not None else ""
    try:
        nodes = {n["NodeID"]: n for n in ray.nodes()}
    except Exception as exc:  # noqa: BLE001 - whatever the GCS client raises, the cluster cannot be asked
        raise RunLost(
            f"the Ray cluster's GCS does not answer ({_first_line(exc)}): its head node was lost; {_kept(out)}",
            trace + traceback.format_exc(),
        ) from exc
    node = nodes.get(node_id, {})
    if node.get("Alive"):
        return
    others = sum(1 for k, n in nodes.items() if n.get("Alive") and k != node_id)
    table = [(k[:8], n.get("NodeManagerAddress"), "alive" if n.get("Alive") else "dead") for k, n in nodes.items()]
    raise RunLost(
        f"Ray lost this driver's node ({node_id[:8]} on {node.get('NodeManagerAddress', '?')}; {others} other node(s) "
        f"alive), and with it the run's actors and bookkeeping; {_kept(out)}",
        f"{trace}the GCS's nodes: {table}\n",
    ) from seen


# ---------------------------------------------------------------------- the driver's loop


@dataclass
class _Task:
    id: int
    plan: WorkerPlan
    total: int
    attempt: int = 0
    progress: int = 0
    """Episodes of this task done: in the store when this attempt began, plus those it reported since."""


@dataclass
class _Actor:
    index: int
    name: str
    handle: Any
    since: float
    info: dict = field(default_factory=dict)
    task: Optional[_Task] = None

    def describe(self) -> str:
        where = f" on {self.info['host']} (node {self.info['node'][:8]}), pid {self.info['pid']}" if self.info else ""
        return f"actor {self.name}{where}"


def _add_report(into: Optional[WorkerReport], report: WorkerReport, rank: int) -> WorkerReport:
    if into is None:
        into = WorkerReport(rank=rank)
    for f in fields(WorkerReport):
        if f.name != "rank":
            setattr(into, f.name, getattr(into, f.name) + getattr(report, f.name))
    return into


def run_ray(cfg: F1Config, out: Path, console: Console, todo: int, ray_address: Optional[str], gpu_ids: list[str]):
    """Run this node's missing episodes on Ray actors; a `f1.collect.collector.CollectRun`."""
    local = ray_address is None or _is_loopback(_address_host(ray_address))
    ray = _import_ray(local)
    num_actors, gpu, where = _size(ray, cfg, ray_address, gpu_ids)
    c = cfg.collect
    console.print(
        f"Ray: {escape(where)}; {num_actors} actor(s), one per {'GPU' if gpu else 'CPU slot'}, {c.envs} env(s) each",
        soft_wrap=True,
    )
    here = ray.get_runtime_context().get_node_id()
    try:
        return _drive(ray, here, cfg, store_path(out), console, todo, num_actors, gpu)
    except RunLost:
        raise
    except Exception as exc:  # a Ray call that failed because this node is gone is RunLost; anything else, as it was
        _check_driver_node(ray, here, store_path(out), exc)
        raise
    finally:
        ray.shutdown()


def _drive(ray, here: str, cfg: F1Config, out: Path, console: Console, todo: int, num_actors: int, gpu: bool):
    """The loop of `run_ray` on the driver's node `here` (its Ray node id)."""
    from ray.exceptions import RayError, RayTaskError

    from f1.collect.collector import CollectRun, _dir_bytes, progress_bar
    from f1.collect.store_spec import open_config_writer

    c = cfg.collect
    actor_cls = ray.remote(num_cpus=1, num_gpus=1 if gpu else 0, max_restarts=0)(CollectActor)
    channel = _open_channel(ray, here)
    channel_open = True  # False once it is lost: then the bar counts whole tasks
    cfg_dict = cfg.to_dict()
    run = CollectRun(who="task")
    starting: dict[Any, _Actor] = {}
    busy: dict[Any, _Actor] = {}
    idle: deque[_Actor] = deque()
    alive: list[_Actor] = []
    lost: list[str] = []
    counter = itertools.count()
    spawns_left = [num_actors * MAX_ATTEMPTS]  # replacements for lost actors, so a crash loop ends

    def spawn() -> None:
        k = next(counter)
        name = f"n{c.node_rank}r{k}"
        actor = _Actor(k, name, actor_cls.remote(cfg_dict, str(out), name, gpu, num_actors > 1), time.monotonic())
        starting[actor.handle.ready.remote()] = actor
        alive.append(actor)

    def retire(actor: _Actor, was_lost: bool) -> None:
        alive.remove(actor)
        ray.kill(actor.handle, no_restart=True)
        if was_lost:
            lost.append(actor.name)
            if spawns_left[0] > 0:
                spawns_left[0] -= 1
                spawn()

    def requeue(task: _Task) -> None:
        task.plan = without(task.plan, listed_episode_ids(out))
        task.progress = task.total - task.plan.num_episodes
        queue.appendleft(task)

    done_at_start = listed_episode_ids(out)
    ids = itertools.count()
    queue: deque[_Task] = deque(_Task(next(ids), p, p.num_episodes) for p in plan_tasks(cfg, done_at_start, num_actors))
    tasks = {t.id: t for t in queue}
    for _ in range(num_actors):
        spawn()

    start = checked = time.perf_counter()
    steps = 0
    with progress_bar(console) as progress:
        bar = progress.add_task("collect", total=todo, rate=0.0, mb=0.0)
        for repair in range(REPAIR_ROUNDS + 1):
            while queue or busy:
                while idle and queue:
                    actor, task = idle.popleft(), queue.popleft()
                    actor.task = task
                    busy[actor.handle.run.remote(task.id, task.attempt, task.plan, channel)] = actor
                if queue and not busy and not idle:
                    if not starting and spawns_left[0] > 0:
                        spawns_left[0] -= 1
                        spawn()
                    oldest = min((a.since for a in starting.values()), default=None)
                    if oldest is None or time.monotonic() - oldest > ACTOR_START_TIMEOUT_S:
                        left = sum(t.plan.num_episodes for t in queue)
                        why = (
                            f"no Ray actor started within {ACTOR_START_TIMEOUT_S:.0f} s (does the cluster have "
                            f"{'GPUs' if gpu else 'CPUs'} free?)" if oldest is not None else "every Ray actor was lost or failed"
                        )
                        run.errors[queue[0].id] = (f"{len(queue)} task(s), {left} episodes, not run: {why}", "")
                        queue.clear()
                        break
                refs = [*starting, *busy]
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=POLL_S) if refs else ([], [])
                for ref in ready:
                    if ref in starting:
                        actor = starting.pop(ref)
                        try:
                            actor.info = ray.get(ref)
                            idle.append(actor)
                        except RayError as exc:
                            _check_driver_node(ray, here, out, exc)
                            console.print(f"[yellow]{actor.describe()} did not start: {escape(_first_line(exc))}", soft_wrap=True)
                            retire(actor, was_lost=True)
                        continue
                    actor = busy.pop(ref)
                    task, actor.task = actor.task, None
                    try:
                        result = ray.get(ref)
                    except RayTaskError as exc:  # raised outside run()'s own handler (e.g. its arguments)
                        result = ("error", _first_line(exc), str(exc))
                    except RayError as exc:  # the actor's process or node is gone: the task runs again elsewhere
                        _check_driver_node(ray, here, out, exc)  # unless that node was the driver's
                        task.attempt += 1
                        again = task.attempt < MAX_ATTEMPTS
                        console.print(
                            f"[yellow]{actor.describe()} was lost mid-task ({escape(_first_line(exc))}); "
                            + (f"task {task.id}'s unfinished episodes run again on another actor" if again
                               else f"task {task.id} lost its actor {MAX_ATTEMPTS} times; giving it up"),
                            soft_wrap=True,
                        )  # fmt: skip
                        if again:
                            requeue(task)
                        else:
                            run.errors[task.id] = (f"lost its actor {MAX_ATTEMPTS} times ({_first_line(exc)})", str(exc))
                        retire(actor, was_lost=True)
                        continue
                    if result[0] == "done":
                        run.reports[actor.index] = _add_report(run.reports.get(actor.index), result[1], actor.index)
                        task.progress = task.total
                        idle.append(actor)
                    else:
                        run.errors[task.id] = (result[1], result[2])
                        retire(actor, was_lost=False)  # its envs may be broken; the other actors go on
                if channel_open:
                    taken = _take_progress(ray, channel, tasks)
                    if taken is None:
                        _check_driver_node(ray, here, out)  # the channel lives on this node: lost with it?
                        console.print("[yellow]the progress channel was lost; the run goes on, the bar counts whole tasks")
                        channel_open = False
                    steps += taken or 0
                if time.perf_counter() - checked > HEALTH_CHECK_S:  # an actor's error may come before its node's death
                    _check_driver_node(ray, here, out)
                    checked = time.perf_counter()
                elapsed = time.perf_counter() - start
                progress.update(
                    bar, completed=sum(t.progress for t in tasks.values()), rate=steps / max(elapsed, 1e-9),
                    mb=_dir_bytes(out) / 1e6,
                )  # fmt: skip
            if run.errors or repair == REPAIR_ROUNDS:
                break
            # The queue is empty: a shard dropped as a duplicate may have held episodes no other run listed.
            listed = listed_episode_ids(out)
            missing = plan_tasks(cfg, listed, num_actors)
            if not missing:
                break
            console.print(f"{sum(p.num_episodes for p in missing)} episode(s) still missing from the store; collecting them")
            for plan in missing:
                task = _Task(next(ids), plan, plan.num_episodes)
                tasks[task.id] = task
                queue.append(task)
        progress.update(bar, completed=min(todo, len(listed_episode_ids(out) - done_at_start)))  # other nodes add too
    for actor in list(alive):
        ray.kill(actor.handle, no_restart=True)
    ray.kill(channel, no_restart=True)
    for name in lost:  # what a lost actor left half-written (temp shards) goes; its listed shards stay
        open_config_writer(cfg, out, worker=name).close()
    run.wall_s = time.perf_counter() - start
    return run


def _take_progress(ray, channel, tasks: dict[int, _Task]) -> Optional[int]:
    """The steps the actors reported since the last call, and each episode counted in its task's progress
    (those of a superseded attempt are not); None when the channel is lost."""
    from ray.exceptions import RayError

    try:
        batch = ray.get(channel.take.remote(), timeout=CHANNEL_TIMEOUT_S)
    except RayError:  # GetTimeoutError included
        return None
    steps = 0
    for task_id, attempt, episode_steps in batch:
        task = tasks[task_id]
        steps += episode_steps
        if attempt == task.attempt:
            task.progress = min(task.progress + 1, task.total)
    return steps


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
