"""`f1 collect`: plan the missing episodes, spawn one worker per GPU (or per CPU slot), show progress.

The parent process never imports SAPIEN or torch (DESIGN.md section 6): it
reads the store's manifest to see what exists, splits what is missing
(`f1.collect.plan`), spawns workers with their GPU pinned in the environment,
and shows a live bar fed by the workers' queue. Workers write their own shards
and add them to the manifest under a lock, so a kill -9 at any moment loses at
most the episodes in flight, and rerunning the same command resumes.

Before any worker starts, the parent checks what it can without SAPIEN: that
the GPUs asked for exist (f1.shared.gpu_count), that no live run writes this
store with this node rank (f1.datasets.writer_lock), that the render device
opens (f1.collect.render_probe, in a short child) and whether the run fits on
the disk. A failed worker is one console line with its root cause; its
traceback goes to a log file that line names.

`--backend ray` keeps all of that and hands the plan to `f1.collect.ray_backend`
instead of spawning the workers here: scene blocks as tasks on Ray actors.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue as queue_mod
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from f1.collect.failures import RunLost, disk_full_error, disk_full_line
from f1.collect.plan import plan_collection
from f1.collect.render_probe import probe_render_device
from f1.collect.space import space_warning
from f1.collect.store_spec import collection_spec
from f1.collect.worker import WorkerReport, run_worker
from f1.datasets.compact import compact
from f1.datasets.manifest import open_or_create_manifest
from f1.datasets.reader import open_store
from f1.datasets.s3 import S3Path, store_path
from f1.datasets.writer import resolved_spec
from f1.datasets.writer_lock import writer_lock
from f1.shared.config import F1Config
from f1.shared.errors import UserError
from f1.shared.gpu import worker_env
from f1.shared.gpu_count import gpus_for_run

log = logging.getLogger("f1.collect")


def _existing_episode_ids(out: Path) -> set[str]:
    from f1.datasets import MANIFEST_NAME

    if not (out / MANIFEST_NAME).is_file():
        if out.exists() and any(out.iterdir()) and not any(out.glob("shard-*")):
            raise UserError(f"{out} exists and is not an f1 store (no manifest.json); choose an empty or new --out")
        return set()
    return {info.episode_id for info in open_store(out).episodes}


def _dir_bytes(path: Path | S3Path) -> int:
    if isinstance(path, S3Path):
        return 0  # not listed every half second: the summary counts the manifest's bytes instead
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except FileNotFoundError:  # a temp file renamed while we looked
                pass
    return total


def worker_envs(gpu_ids: list[str], num_workers: int) -> list[dict[str, str]]:
    """The full environment of each worker: one physical GPU each, or CPU-only."""
    envs = [worker_env(rank, gpu_ids) for rank in range(num_workers)]
    if not gpu_ids and num_workers > 1:
        for env in envs:
            # lavapipe starts a rasteriser thread per core; with a worker per core they would contend.
            env.setdefault("LP_NUM_THREADS", "1")
    return envs


@dataclass
class CollectRun:
    reports: dict[int, WorkerReport] = field(default_factory=dict)
    errors: dict[int, tuple[str, str]] = field(default_factory=dict)
    """rank -> (root cause line, traceback text)"""
    wall_s: float = 0.0
    who: str = "worker"
    """What a rank in `reports` and `errors` is: a worker process, or a Ray actor or task."""

    @property
    def steady_steps_per_s(self) -> float:
        """All workers' steps over the longest worker's time once its envs were built."""
        busy = max((r.wall_s - r.setup_s for r in self.reports.values()), default=0.0)
        return sum(r.steps for r in self.reports.values()) / busy if busy > 0 else 0.0


def main(
    cfg: F1Config, out: Path, backend: str = "multiprocessing", ray_address: Optional[str] = None, ranks=None
) -> int:
    """`f1 collect`: exit code 0, or 1 when a worker failed (one line each, tracebacks in a log file, other shards kept).

    `ranks` (`f1.collect.ranks.NodeRanks`): where this node's rank came from, said on the first line.
    """
    console = Console(stderr=True)
    out = store_path(out)  # a directory or s3://bucket/prefix
    if ranks is not None:
        console.print(f"node rank {ranks.rank} of {ranks.count}, from {escape(ranks.source)}", soft_wrap=True)
    try:
        run = run_collection(cfg, out, console, backend=backend, ray_address=ray_address)
    except OSError as exc:  # the parent's own writes (manifest, lock) on a full disk
        if disk_full_error(exc) is None:
            raise
        raise UserError(disk_full_line(out)) from None
    except RunLost as exc:  # a Ray run's own node lost: one line, the rerun command, the traceback in the log
        log_path = _write_tracebacks(out, {0: (exc.line, exc.trace)}, who="run")
        console.print(
            f"[red]{escape(exc.line)}: rerun `{escape(rerun_command())}` to resume (traceback: {escape(log_path)})",
            soft_wrap=True,
        )
        return 1
    if run is None:
        return 0
    compact(out)  # fold this run's commit records into a checkpoint: the next reader opens from it
    _print_summary(console, out, run.reports, run.wall_s)
    log_path = _write_tracebacks(out, run.errors, who=run.who)
    for rank, (cause, _) in sorted(run.errors.items()):
        console.print(f"[red]{run.who} {rank} failed:[/red] {escape(cause)} (traceback: {escape(log_path)})", soft_wrap=True)
    if run.errors:
        console.print(
            f"[red]{len(run.errors)} {run.who}(s) failed; finished shards are kept. Rerun the same command to resume."
        )
        return 1
    return 0


def rerun_command() -> str:
    """The command this process runs, as the user would type it again."""
    return shlex.join(["f1", *sys.argv[1:]])


def _write_tracebacks(out: Path, errors: dict[int, tuple[str, str]], who: str = "worker") -> Optional[str]:
    """The failed workers' tracebacks in <store>/logs/collect-<time>.log (else the temp dir: the store's disk may be full)."""
    if not errors:
        return None
    text = "".join(f"{who} {rank}: {cause}\n{trace}\n" for rank, (cause, trace) in sorted(errors.items()))
    name = f"collect-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    for folder in (out / "logs", Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
            return str(folder / name)
        except OSError:
            (folder / name).unlink(missing_ok=True)
    return "none written: no space for a log file either"


def run_collection(
    cfg: F1Config, out: Path, console: Console, backend: str = "multiprocessing", ray_address: Optional[str] = None
) -> Optional[CollectRun]:
    """Collect what the store is missing; None when nothing is."""
    c = cfg.collect
    out = store_path(out)  # a directory or s3://bucket/prefix
    if backend == "ray":
        from f1.collect.ray_backend import check_ray_store, run_ray

        check_ray_store(out, ray_address)  # a relative path with a real cluster: one line before anything
    # Before anything is written: a machine without those GPUs is one line (a real Ray cluster counts its own).
    gpu_ids = gpus_for_run(c.gpus) if ray_address is None else []
    done = _existing_episode_ids(out)
    num_workers = len(gpu_ids) if gpu_ids else (c.workers or os.cpu_count() or 1)
    plans = plan_collection(
        seed=c.seed,
        total_episodes=c.episodes,
        scene_reset_interval=cfg.environment.scene_reset_interval,
        num_workers=num_workers,
        envs_per_worker=c.envs,
        node_rank=c.node_rank,
        num_nodes=c.num_nodes,
        done_ids=done,
    )
    plans = [p for p in plans if p.num_episodes]
    todo = sum(p.num_episodes for p in plans)
    if not todo:
        console.print(f"[green]{out}: all {c.episodes} episodes of this node are already collected; nothing to do.")
        return None
    # Create the store, or check that it holds this format and spec, before any worker starts:
    # a mismatch is one line here rather than a traceback from every worker.
    spec = resolved_spec(out, c.format, collection_spec(cfg))
    open_or_create_manifest(out, c.format, spec, cfg.to_dict())
    with writer_lock(out, c.node_rank):
        env_vars = worker_envs(gpu_ids, len(plans))
        if ray_address is None:  # a real Ray cluster's GPUs are not on this machine: its actors say if they fail
            probe_render_device(env_vars[0])
        # Object storage has no free-space figure; its shards are staged in the temp dir one at a time.
        warning = None if isinstance(out, S3Path) else space_warning(open_store(out), todo * (cfg.training.steps_per_episode + 1))
        if warning:
            console.print(f"[yellow]{escape(warning)}", soft_wrap=True)
        if done:
            console.print(f"Resuming {out}: {len(done)} episodes present, collecting {todo} more.")
        if backend == "ray":
            return run_ray(cfg, out, console, todo, ray_address, gpu_ids)
        return _run_workers(cfg, out, console, plans, env_vars, todo)


def progress_bar(console: Console) -> Progress:
    """The live bar of a run: episodes done of those asked, steps/s, MB in the store, time (fields rate, mb)."""
    columns = (
        TextColumn("[bold]collect"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("episodes"),
        TextColumn("{task.fields[rate]:>8.1f} steps/s"),
        TextColumn("{task.fields[mb]:>8.1f} MB"),
        TimeElapsedColumn(),
    )
    return Progress(*columns, console=console, transient=False)


def _run_workers(cfg: F1Config, out: Path, console: Console, plans, env_vars, todo: int) -> CollectRun:
    """Spawn one worker per plan and show their progress until every one has reported or died."""
    ctx = mp.get_context("spawn")  # never fork: each worker must pin its GPU before SAPIEN loads
    events = ctx.Queue()
    cfg_dict = cfg.to_dict()
    procs = {}
    for rank, (plan, worker_vars) in enumerate(zip(plans, env_vars)):
        proc = ctx.Process(
            target=run_worker, args=(rank, worker_vars, cfg_dict, str(out), plan, events), name=f"f1-collect-{rank}"
        )
        proc.start()
        procs[rank] = proc

    run = CollectRun()
    reports, errors = run.reports, run.errors
    start = time.perf_counter()
    steps = 0
    with progress_bar(console) as progress:
        bar = progress.add_task("collect", total=todo, rate=0.0, mb=0.0)
        while len(reports) + len(errors) < len(procs):
            try:
                kind, rank, payload = events.get(timeout=0.5)
            except queue_mod.Empty:
                kind = None
            if kind == "episode":
                steps += payload
                progress.advance(bar)
            elif kind == "done":
                reports[rank] = payload
            elif kind == "error":
                errors[rank] = payload
            for rank, proc in procs.items():
                # A worker killed outright (SIGKILL, OOM) sends nothing: notice its exit code.
                if rank not in reports and rank not in errors and not proc.is_alive() and events.empty():
                    proc.join(timeout=1)
                    if proc.exitcode not in (0, None):
                        errors[rank] = (f"died with exit code {proc.exitcode} (killed?)", "no traceback: the process was killed\n")
            elapsed = time.perf_counter() - start
            progress.update(bar, rate=steps / max(elapsed, 1e-9), mb=_dir_bytes(out) / 1e6)
    for proc in procs.values():
        proc.join()
    run.wall_s = time.perf_counter() - start
    return run


def _print_summary(console: Console, out: Path, reports: dict[int, WorkerReport], wall: float) -> None:
    table = Table(title=f"collect summary: {out}")
    for name in ("worker", "episodes", "steps", "wall s", "setup s", "steps/s", "env s", "policy s", "write s"):
        table.add_column(name, justify="right")
    for rank, r in sorted(reports.items()):
        table.add_row(
            str(rank), str(r.episodes), str(r.steps), f"{r.wall_s:.1f}", f"{r.setup_s:.1f}", f"{r.steps_per_s:.1f}",
            f"{r.env_s:.1f}", f"{r.policy_s:.2f}", f"{r.write_s:.2f}",
        )  # fmt: skip
    episodes = sum(r.episodes for r in reports.values())
    steps = sum(r.steps for r in reports.values())
    table.add_row("all", str(episodes), str(steps), f"{wall:.1f}", "", f"{steps / max(wall, 1e-9):.1f}", "", "", "")
    console.print(table)
    if isinstance(out, S3Path):
        console.print(f"{out}: {open_store(out).snapshot.shard_column('bytes').sum() / 1e6:.1f} MB in finalised shards")
    else:
        console.print(f"{out}: {_dir_bytes(out) / 1e6:.1f} MB on disk")
