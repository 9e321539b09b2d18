"""What Ray costs: `f1 collect` with 2 Ray actors vs 2 multiprocessing workers on the same job.

    .venv/bin/python bench/bench_ray.py [--size 64] [--episodes 16] [--steps 40] [--workers 2] [--no-append]

After a one-episode warm-up run (Mesa caches compiled shaders on disk, which
would favour whichever run came second), both runs collect the same episodes (same seed, plan and store settings) into
fresh stores, CPU only (lavapipe), one env per worker or actor:
- multiprocessing (baseline): `run_collection` spawning W workers;
- ray: `run_collection(..., backend="ray")`: a local Ray instance started for
  the run (127.0.0.1, no dashboard) and W actors taking tasks of whole scene blocks.
Figures: whole-run steps/s (everything from the call to its return: for Ray the
instance's start, actor start-up and per-task dispatch included), steady-state
steps/s (all workers' steps over the longest worker's busy time once its envs
were built, as `CollectRun.steady_steps_per_s` computes it for both; Ray's sums
each actor's time inside its tasks, so the gaps between tasks show in the whole-run
figure only), and Ray's fixed cost: what Ray adds to the time outside the workers'
loop (a run's wall time less `CollectRun.wall_s`; both pay the same checks and
render probe), i.e. starting the local instance and connecting. Goal: steady state within 10 % of multiprocessing; the fixed cost is
paid once per run.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from results import load_average, machine, report

from f1.shared.config import load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--steps", type=int, default=40, help="actions per episode")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()

    from rich.console import Console

    from f1.collect.collector import run_collection

    overrides = [
        f"environment.image_size=[{args.size},{args.size}]",
        f"training.steps_per_episode={args.steps}",
        "collect.envs=1",
        f"collect.workers={args.workers}",
        f"collect.episodes={args.episodes}",
    ]
    cfg = load_config(overrides=overrides)
    steps = args.episodes * (args.steps + 1)
    tmp = Path(tempfile.mkdtemp(prefix="f1-bench-ray-"))
    figures = {}
    loads = []
    try:
        # Warm-up, not measured: Mesa keeps compiled shaders on disk, so whichever run came first
        # would pay their compilation for both.
        warm = load_config(overrides=[*overrides, "collect.workers=1", "collect.episodes=1"])
        assert run_collection(warm, tmp / "warm-up", Console(stderr=True, quiet=True)) is not None
        for backend in ("multiprocessing", "ray"):
            loads.append(load_average())
            start = time.perf_counter()
            run = run_collection(cfg, tmp / backend, Console(stderr=True, quiet=True), backend=backend)
            wall = time.perf_counter() - start
            assert run is not None and not run.errors, (backend, run and run.errors)
            figures[backend] = (steps / wall, run.steady_steps_per_s, wall - run.wall_s, wall)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    mp_whole, mp_steady, mp_outside, mp_wall = figures["multiprocessing"]
    ray_whole, ray_steady, ray_outside, ray_wall = figures["ray"]
    w = args.workers
    rows = [
        (f"multiprocessing, {w} workers, whole run (baseline)", f"{mp_whole:.1f} steps/s ({mp_wall:.1f} s)", "1.00"),
        (f"ray, {w} actors, whole run", f"{ray_whole:.1f} steps/s ({ray_wall:.1f} s)", f"{ray_whole / mp_whole:.2f}"),
        (f"multiprocessing, {w} workers, steady state", f"{mp_steady:.1f} steps/s", "1.00"),
        (f"ray, {w} actors, steady state", f"{ray_steady:.1f} steps/s",
         f"{ray_steady / mp_steady:.2f} (goal >= 0.90)"),
        ("ray's fixed cost: the local instance's start and connection", f"{ray_outside - mp_outside:+.1f} s",
         f"{ray_outside:.1f} s / {mp_outside:.1f} s outside the loop"),
    ]  # fmt: skip
    setup = (
        f"machine: {machine()}, load average {loads[0]:.1f} before the multiprocessing run and {loads[1]:.1f} "
        f"before the Ray run (a shared machine); {args.episodes} episodes of {args.steps} actions, "
        f"{args.size}x{args.size} head + wrist, 1 env per worker, CPU only (lavapipe), {cfg.collect.format} store"
    )
    report("bench_ray", setup, rows, append=not args.no_append)


if __name__ == "__main__":
    main()
