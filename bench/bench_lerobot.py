"""LeRobot export speed: `f1 dataset convert --format lerobot` against f1's own Zarr -> WebDataset convert.

    .venv/bin/python bench/bench_lerobot.py [--sizes 64 128] [--episodes 16] [--steps 51] [--rounds 2] [--synthetic] [--no-append]

For each image size: one Zarr store (f1's default codec) of --episodes episodes, frames rendered by
F1RLEnv (bench_datasets.rendered_frames; synthetic frames with --synthetic or where the env does not
render). On that store, in the same run: the baseline `convert.main(store, dir, "webdataset")` (read,
decode, PNG-encode, write), then the LeRobot export at the default codec (AV1) and with --lossless
(H.264 RGB, qp 0). Figures: store steps read per second (the same work for all three: the export
drops each episode's padding step, so it writes T of the N steps), the best of --rounds, and the
ratio to the baseline (the issue's goal: >= 0.5x). Output bytes per step beside them.
The table is printed and appended to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from bench_datasets import disk_bytes, make_episodes, rendered_frames, synthetic_frames
from results import machine, report

from f1.datasets import StoreSpec, open_writer
from f1.datasets.convert import main as convert
from f1.datasets.lerobot_export import main as export

COLUMNS = ("size", "what", "store steps/s", "vs convert", "bytes/step")


def timed(run, out: Path, rounds: int) -> tuple[float, int]:
    """Best seconds of `run(out)` over `rounds` (out deleted before each), and the bytes it wrote."""
    best = float("inf")
    for _ in range(rounds):
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        run(out)
        best = min(best, time.perf_counter() - start)
    return best, disk_bytes(out)


def bench_size(size: int, args: argparse.Namespace, work: Path) -> tuple[list[list[str]], str]:
    source = "synthetic"
    pool = None
    if not args.synthetic:
        try:
            pool = rendered_frames(size, per_scene=24)
            source = "rendered"
        except Exception as exc:  # noqa: BLE001 - the bench still measures on synthetic frames
            source = f"synthetic (the env did not render: {type(exc).__name__})"
    if pool is None:
        pool = synthetic_frames(size, 48)
    spec = StoreSpec(image_hw=(size, size), state_dim=32, action_dim=32, real_state_dims=15, real_action_dims=8)
    store = work / f"store{size}"
    with open_writer(store, "zarr", spec, "n0w0", {"environment": {"task_name": "bench"}}, 8) as writer:
        for arrays, meta in make_episodes(spec, pool, args.episodes, args.steps):
            writer.add_episode(arrays, meta)
    steps = args.episodes * args.steps
    runs = {
        "zarr -> webdataset (baseline)": lambda out: convert(store, out, "webdataset"),
        "export lerobot, AV1": lambda out: export(str(store), str(out)),
        "export lerobot, --lossless": lambda out: export(str(store), str(out), lossless=True),
    }
    rows, baseline = [], None
    for name, run in runs.items():
        seconds, size_bytes = timed(run, work / f"out{size}", args.rounds)
        rate = steps / seconds
        baseline = baseline or rate
        rows.append([f"{size}x{size}", name, f"{rate:.0f}", f"{rate / baseline:.2f}x", f"{size_bytes / steps:.0f}"])
        print(rows[-1], flush=True)
    return rows, source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="square image sizes")
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--steps", type=int, default=51, help="steps per episode (N = T + 1)")
    parser.add_argument("--rounds", type=int, default=2, help="timed runs per figure (best kept)")
    parser.add_argument("--synthetic", action="store_true", help="skip rendering; synthesise frames")
    parser.add_argument("--no-append", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_lerobot_"))
    rows, sources = [], []
    try:
        for size in args.sizes:
            size_rows, source = bench_size(size, args, work)
            rows += size_rows
            sources.append(f"{size}: {source}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    setup = (
        f"`bench/bench_lerobot.py`, {machine()}. One Zarr store (delta-zstd) per size, {args.episodes} episodes x "
        f"{args.steps} steps, both cameras, frames {', '.join(sources)}. Baseline: f1's own `convert` of the same store "
        f"to WebDataset, measured in the same run. Store steps read per second, best of {args.rounds}; the export "
        f"writes {args.steps - 1} frames an episode (the padding step dropped). Goal: export >= 0.5x the baseline."
    )
    report("bench_lerobot: LeRobot export vs f1 convert", setup, rows, COLUMNS, append=not args.no_append)


if __name__ == "__main__":
    main()
