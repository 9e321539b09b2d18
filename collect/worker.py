"""One collect worker process: M envs stepped together, episodes written to its own shards.

The process is spawned (never forked) by `f1.collect.collector`; `run_worker`
pins it to its GPU through the environment *before* SAPIEN is imported
(DESIGN.md section 6), so this module imports nothing heavy at the top.
It reports to the parent through a queue: ("episode", rank, steps),
("done", rank, WorkerReport) or ("error", rank, (root cause line, traceback text)).
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from f1.collect.plan import EpisodeTask, WorkerPlan
from f1.datasets.s3 import store_path


@dataclass
class WorkerReport:
    rank: int
    episodes: int = 0
    steps: int = 0
    wall_s: float = 0.0
    setup_s: float = 0.0  # building the envs (the first render compiles shaders: seconds on lavapipe)
    env_s: float = 0.0  # physics + rendering + observation assembly
    policy_s: float = 0.0
    write_s: float = 0.0  # time the loop was blocked handing episodes to the writer, plus its final flush

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.wall_s if self.wall_s else 0.0

    @property
    def steady_steps_per_s(self) -> float:
        """Steps per second once the envs are built (what more episodes would run at)."""
        busy = self.wall_s - self.setup_s
        return self.steps / busy if busy > 0 else 0.0


def run_worker(
    rank: int, env_vars: dict[str, str], cfg_dict: dict, out_dir: str, plan: WorkerPlan, queue: Any
) -> None:
    """Process entry point: pin, then collect into the store; every failure goes to the parent as text."""
    # The whole environment, as `f1.shared.gpu.worker_env` built it, before SAPIEN
    # or torch is imported anywhere in this process.
    os.environ.clear()
    os.environ.update(env_vars)
    try:
        from f1.shared.config import config_from_dict

        cfg = config_from_dict(cfg_dict)
        report = collect_plan(
            cfg, plan, open_store_writer(cfg, store_path(out_dir), rank), lambda steps: queue.put(("episode", rank, steps))
        )
        report.rank = rank
        queue.put(("done", rank, report))
    except BaseException as exc:  # noqa: BLE001 - the parent reports it and exits non-zero
        from f1.collect.failures import root_cause

        queue.put(("error", rank, (root_cause(exc, store_path(out_dir)), traceback.format_exc())))
        raise SystemExit(1)


def open_store_writer(cfg, out_dir: Path, rank: int):
    """This worker's writer: its own shards (n<node>w<rank>), encoding in a background thread."""
    from f1.collect.store_spec import open_config_writer

    return open_config_writer(cfg, out_dir, worker=f"n{cfg.collect.node_rank}w{rank}")


def collect_plan(cfg, plan: WorkerPlan, writer, on_episode=lambda steps: None, venv=None, warm: bool = False) -> WorkerReport:
    """Run the plan's rounds: each resets the active envs, takes T actions, hands the episodes to `writer`.

    `writer` has `add_episode(arrays, meta)` and `close()` (an `f1.datasets` writer; the
    collect bench passes one that discards, to measure what writing costs).
    `venv`: envs built by the caller, one per plan slot, left open (a Ray actor keeps its
    envs from task to task); None builds them here and closes them. `warm`: they have
    rendered before, so the first reset is no start-up cost.
    """
    from f1.collect.episode_buffer import EpisodeBuffer, camera_keys_in
    from f1.collect.policies import make_policy
    from f1.collect.vector import make_vector_env

    steps_per_episode = cfg.training.steps_per_episode
    report = WorkerReport(rank=0)
    start = time.perf_counter()
    own_venv = venv is None
    if own_venv:
        venv = make_vector_env(cfg, len(plan.slots), cameras=("head", "wrist"))
    policies = [make_policy(cfg.collect.policy, cfg.training.action_dim, seed=0) for _ in plan.slots]
    report.setup_s = time.perf_counter() - start
    try:
        for round_index, round_tasks in enumerate(plan.rounds()):
            active = [i for i, task in enumerate(round_tasks) if task is not None]
            tasks: list[EpisodeTask] = [round_tasks[i] for i in active]
            t0 = time.perf_counter()
            obs, infos = venv.reset(
                seeds=[t.seed for t in tasks],
                options=[{"scene_seed": t.scene_seed, "scene_id": t.scene_id} for t in tasks],
                env_indices=active,
            )
            if round_index == 0 and not warm:  # the scenes' first build and render: a one-off start-up cost
                report.setup_s += time.perf_counter() - t0
            else:
                report.env_s += time.perf_counter() - t0
            slots = cfg.environment.domain_randomization.max_objects
            cams = camera_keys_in(infos[0])
            buffers = [EpisodeBuffer(steps_per_episode, cfg.training.action_dim, slots, cams) for _ in tasks]
            for j, task in enumerate(tasks):
                policies[active[j]].reset(task.seed)
            for _ in range(steps_per_episode):
                t0 = time.perf_counter()
                actions = [policies[i].act() for i in active]
                report.policy_s += time.perf_counter() - t0
                for buf, ob, action, info in zip(buffers, obs, actions, infos):
                    buf.add(ob, action, info)
                t0 = time.perf_counter()
                obs, _, terminated, _, infos = venv.step(actions, env_indices=active)
                report.env_s += time.perf_counter() - t0
            for buf, task, ob, term, info in zip(buffers, tasks, obs, terminated, infos):
                buf.finish(ob, terminated=bool(term), info=info)
                t0 = time.perf_counter()
                writer.add_episode(buf.arrays(), buf.meta(task, info))
                report.write_s += time.perf_counter() - t0
                report.episodes += 1
                report.steps += steps_per_episode + 1
                on_episode(steps_per_episode + 1)
    except BaseException:
        # Episodes already handed over are complete: finalise them rather than lose them.
        writer.close()
        raise
    else:
        t0 = time.perf_counter()
        writer.close()
        report.write_s += time.perf_counter() - t0
    finally:
        if own_venv:
            venv.close()
    report.wall_s = time.perf_counter() - start
    return report
