"""What the cameras' geometry and the wrist depth (store format 4) cost: collection speed and store size.

    .venv/bin/python bench/bench_depth.py [--size 128] [--episodes 4] [--steps 40] [--repeats 3] [--no-append]

Figures, all measured in this run, on the same episodes (same plan and seeds, so the same pictures):
- collection speed: the collector's loop (f1.collect.worker.collect_plan: env, OU policy, episode
  buffers, a real store written in the writer's background thread), steady state, with
  `environment.depth` off (baseline) and on, per format; runs alternate off/on and each takes its
  best of --repeats, as the machine is shared. Goal for depth on by default: under 15 % slower;
- the time the env spends per step reading both cameras' poses and intrinsics (they are always kept);
- store size: the depth-off store rewritten without the camera keys (what format 3 held: baseline),
  the depth-off store (poses and intrinsics), the depth-on store, per format. Goal for depth on by
  default: under 30 % larger.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from results import machine, report

from f1.collect.plan import plan_collection
from f1.shared.config import load_config


def store_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path / "shards").rglob("*") if p.is_file())


def without_cameras(src: Path, dst: Path, fmt: str) -> None:
    """`src`'s episodes rewritten with a spec that has no camera keys: the same store as format 3 would hold it."""
    from f1.datasets import open_store, open_writer
    from f1.datasets.schema import StoreSpec

    reader = open_store(src)
    spec = StoreSpec.from_dict({**reader.spec.to_dict(), "camera_geometry": False, "depth_cameras": []})
    with open_writer(dst, fmt, spec, "n0w0", reader.manifest["collection_config"], 1 << 30) as writer:
        for info in reader.episodes:
            arrays = reader.read_episode(info, keys=spec.keys)
            writer.add_episode(arrays, reader.episode_meta(info))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--steps", type=int, default=40, help="actions per episode")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()

    from f1.collect.env import F1RLEnv
    from f1.collect.worker import collect_plan, open_store_writer

    base = [
        f"environment.image_size=[{args.size},{args.size}]",
        f"training.steps_per_episode={args.steps}",
        "environment.scene_reset_interval=1000",
        "collect.envs=1",
    ]
    plan = plan_collection(seed=0, total_episodes=args.episodes, scene_reset_interval=1000, num_workers=1, envs_per_worker=1)[0]
    tmp = Path(tempfile.mkdtemp(prefix="f1-bench-depth-"))
    rows = []
    try:
        # ------------------------------------------------ the poses' share of a step
        env = F1RLEnv(load_config(overrides=base))
        env.reset(seed=0)
        start = time.perf_counter()
        for _ in range(2000):
            env.scene.camera_geometry()
        geometry_us = (time.perf_counter() - start) / 2000 * 1e6
        env.close()

        # ------------------------------------------------ speed and size, depth off vs on, per format
        warm = load_config(overrides=[*base, "environment.depth=true"])
        collect_plan(warm, plan, open_store_writer(warm, tmp / "warm-up", 0))  # the process's first renders: not measured
        for fmt in ("zarr", "webdataset"):
            rate = {False: 0.0, True: 0.0}
            for r in range(args.repeats):
                for depth in (False, True):
                    cfg = load_config(overrides=[*base, f"collect.format={fmt}", f"environment.depth={str(depth).lower()}"])
                    out = tmp / f"{fmt}-{depth}-{r}"
                    run = collect_plan(cfg, plan, open_store_writer(cfg, out, 0))
                    rate[depth] = max(rate[depth], run.steady_steps_per_s)
            off, on = (tmp / f"{fmt}-{d}-0" for d in (False, True))
            without_cameras(off, tmp / f"{fmt}-v3", fmt)
            v3, size_off, size_on = store_bytes(tmp / f"{fmt}-v3"), store_bytes(off), store_bytes(on)
            steps = args.episodes * (args.steps + 1)
            rows += [
                (f"{fmt}: collector loop, depth off (baseline)", f"{rate[False]:.1f} steps/s", "1.000"),
                (f"{fmt}: collector loop, depth on", f"{rate[True]:.1f} steps/s",
                 f"{rate[True] / rate[False]:.3f} (time a step {rate[False] / rate[True] - 1:+.1%}; goal < +15 %)"),
                (f"{fmt}: store without camera keys (format 3's content, baseline)", f"{v3 / steps:,.0f} B/step", "1.000"),
                (f"{fmt}: store with poses and intrinsics (depth off)", f"{size_off / steps:,.0f} B/step", f"{size_off / v3:.3f}"),
                (f"{fmt}: store with poses, intrinsics and depth", f"{size_on / steps:,.0f} B/step",
                 f"{size_on / v3:.3f} ({size_on / size_off - 1:+.1%} over depth off; goal < +30 %)"),
            ]  # fmt: skip
        rows.append(("env: both cameras' pose and intrinsics read, per step", f"{geometry_us:.1f} us", ""))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    setup = (
        f"machine: {machine()}; {args.size}x{args.size} head + wrist, {args.episodes} episodes x {args.steps} actions, "
        f"OU policy, one process, steady state, best of {args.repeats} alternating runs; default codecs "
        "(zarr: zstd, depth zstd per frame; webdataset: PNG, depth a 16-bit PNG)"
    )
    report("bench_depth", setup, rows, append=not args.no_append)


if __name__ == "__main__":
    main()
