"""`f1 collect`: plan the missing episodes, spawn one worker per GPU (or per CPU slot), show progress.

The parent process never imports SAPIEN or torch (DESIGN.md section 6): it
reads the store's manifest to see what exists, splits what is missing
(`f1.collect.plan`), spawns workers with their GPU pinned in the environment,
and shows a live bar fed by the workers' queue. Workers write their own shards
and add them to the manifest under a lock, so a kill -9 at any moment loses at
most the episodes in flight, and rerunning the same command resumes.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue as queue_mod
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from f1.collect.plan import plan_collection
from f1.collect.store_spec import collection_spec
from f1.collect.worker import WorkerReport, run_worker
from f1.datasets.manifest import open_or_create_manifest
from f1.datasets.writer import resolved_spec
from f1.shared.config import F1Config
from f1.shared.errors import UserError
from f1.shared.gpu import physical_gpu_ids, worker_env

log = logging.getLogger("f1.collect")


def _existing_episode_ids(out: Path) -> set[str]:
    from f1.datasets import MANIFEST_NAME, open_store

    if not (out / MANIFEST_NAME).exists():
        if out.exists() and any(out.iterdir()) and not any(out.glob("shard-*")):
            raise UserError(f"{out} exists and is not an f1 store (no manifest.json); choose an empty or new --out")
        return set()
    return {info.episode_id for info in open_store(out).episodes}


def _dir_bytes(path: Path) -> int:
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
    errors: dict[int, str] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def steady_steps_per_s(self) -> float:
        """All workers' steps over the longest worker's time once its envs were built."""
        busy = max((r.wall_s - r.setup_s for r in self.reports.values()), default=0.0)
        return sum(r.steps for r in self.reports.values()) / busy if busy > 0 else 0.0


def main(cfg: F1Config, out: Path) -> int:
    """`f1 collect`: exit code 0, or 1 when a worker failed (its traceback printed, other shards kept)."""
    console = Console(stderr=True)
    run = run_collection(cfg, Path(out), console)
    if run is None:
        return 0
    _print_summary(console, Path(out), run.reports, run.wall_s)
    for rank, text in sorted(run.errors.items()):
        console.print(f"[red]worker {rank} failed:[/red]\n{text.rstrip()}")
    if run.errors:
        console.print(
            f"[red]{len(run.errors)} worker(s) failed; finished shards are kept. Rerun the same command to resume."
        )
        return 1
    return 0


def run_collection(cfg: F1Config, out: Path, console: Console) -> Optional[CollectRun]:
    """Collect what the store is missing; None when nothing is."""
    c = cfg.collect
    out = Path(out)
    done = _existing_episode_ids(out)
    gpu_ids = physical_gpu_ids(c.gpus) if c.gpus > 0 else []
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
    open_or_create_manifest(out, c.format, resolved_spec(out, c.format, collection_spec(cfg)), cfg.to_dict())
    if done:
        console.print(f"Resuming {out}: {len(done)} episodes present, collecting {todo} more.")

    ctx = mp.get_context("spawn")  # never fork: each worker must pin its GPU before SAPIEN loads
    events = ctx.Queue()
    cfg_dict = cfg.to_dict()
    procs = {}
    for rank, (plan, env_vars) in enumerate(zip(plans, worker_envs(gpu_ids, len(plans)))):
        proc = ctx.Process(
            target=run_worker, args=(rank, env_vars, cfg_dict, str(out), plan, events), name=f"f1-collect-{rank}"
        )
        proc.start()
        procs[rank] = proc

    run = CollectRun()
    reports, errors = run.reports, run.errors
    start = time.perf_counter()
    steps = 0
    columns = (
        TextColumn("[bold]collect"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("episodes"),
        TextColumn("{task.fields[rate]:>8.1f} steps/s"),
        TextColumn("{task.fields[mb]:>8.1f} MB"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
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
                        errors[rank] = f"worker {rank} died with exit code {proc.exitcode} (no traceback: killed?)"
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
    console.print(f"{out}: {_dir_bytes(out) / 1e6:.1f} MB on disk")
