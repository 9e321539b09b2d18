"""Replay speed for truncated BPTT: chunks from a real on-disk store against the same episodes held in memory.

    .venv/bin/python bench/bench_replay.py [--size 64] [--episodes 32] [--steps 51] [--train-ms 20] [--no-append]

Steps/s counts valid chunk positions, the steps a trainer receives. Rows:
- in-memory ceiling: the episodes as numpy arrays, `read_steps` a slice and
  copy; prefetch 0, so the figure is the chunk assembly alone (the baseline).
- the same with prefetch 4, and Zarr / WebDataset stores written by
  `open_writer` and read by `open_store(...).read_steps`, prefetch 0 and 4,
  plus random windows (`sequential_training: false`). Zarr (zstd) is read by
  f1's fast path; the same store through zarr's own slicing
  (`ZarrShardReader(fast_images=False)`) gives the path's gain.
- with --train-ms: each chunk is followed by a simulated training step of
  that many ms (a sleep, as a GPU step leaves the CPU free): the data-wait
  share shows what the prefetch thread hides.
Frames are synthetic (smooth gradients + moving discs + mild noise) so the
codecs see image-like data. Best of --rounds. The table is printed and
appended to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from results import machine, report

from f1.datasets import EpisodeMeta, StoreSpec, open_store, open_writer
from f1.datasets.replay import OrderedReplay, RandomWindows
from f1.datasets.zarr_shard import ZarrShardReader

KEYS = ("wrist_rgb", "head_rgb", "state", "action", "is_first", "is_last")


@dataclass(frozen=True)
class MemoryEpisode:
    episode_id: str
    length: int


def synthetic_episode(spec: StoreSpec, e: int, steps: int) -> dict[str, np.ndarray]:
    """Image-like frames (gradients, moving discs, noise sigma 0.7), zero-padded vectors, correct markers."""
    rng = np.random.default_rng(e)
    size = spec.image_hw[0]
    yy, xx = np.mgrid[0:size, 0:size] / size
    arrays = {}
    for c, key in enumerate(spec.image_keys):
        frames = np.empty((steps, size, size, 3), np.uint8)
        for k in range(steps):
            t = 0.05 * k + c + e
            img = np.stack([(0.5 + 0.4 * np.sin(2 * xx + t)) * 200, (0.3 + 0.3 * yy) * 255, (0.6 - 0.3 * xx * yy) * 255], -1)
            for j in range(4):
                disc = (xx - 0.2 - 0.15 * j - 0.03 * np.sin(t + j)) ** 2 + (yy - 0.3 - 0.1 * j) ** 2 < (0.08 + 0.02 * j) ** 2
                img[disc] = (40 * j, 200 - 30 * j, 100 + 20 * j)
            frames[k] = np.clip(img + rng.normal(0, 0.7, img.shape), 0, 255)
        arrays[key] = frames
    state = np.zeros((steps, spec.state_dim), np.float32)
    state[:, : spec.real_state_dims] = rng.normal(size=(steps, spec.real_state_dims))
    action = np.zeros((steps, spec.action_dim), np.float32)
    action[:-1, : spec.real_action_dims] = rng.uniform(-1, 1, (steps - 1, spec.real_action_dims))
    k = np.arange(steps)
    arrays.update(state=state, action=action, is_first=k == 0, is_last=k == steps - 1, is_terminal=np.zeros(steps, bool))
    return arrays


def run_epoch(replay, train_s: float) -> tuple[float, int, dict]:
    """(seconds, valid steps, stats) for one epoch; train_s of simulated training after each chunk."""
    start = time.perf_counter()
    steps = 0
    for chunk in replay.iter_chunks(0):
        steps += int(chunk["valid"].sum())
        if train_s:
            time.sleep(train_s)
    return time.perf_counter() - start, steps, replay.stats()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="square image size")
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--steps", type=int, default=51, help="steps per episode (N = T + 1)")
    parser.add_argument("--batch-size", type=int, default=4, help="lanes B")
    parser.add_argument("--bptt-length", type=int, default=8, help="chunk length L")
    parser.add_argument("--history", type=int, default=4, help="h")
    parser.add_argument("--stride", type=int, default=1, help="s")
    parser.add_argument("--train-ms", type=float, default=20.0, help="simulated training step per chunk (0: none)")
    parser.add_argument("--rounds", type=int, default=2, help="timed runs per figure (best kept)")
    parser.add_argument("--no-append", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr version 3 specification")

    spec = StoreSpec(image_hw=(args.size, args.size), state_dim=32, action_dim=32, real_state_dims=16, real_action_dims=8)
    ids = [f"b-e{e:05d}" for e in range(args.episodes)]
    arrays = {i: synthetic_episode(spec, e, args.steps) for e, i in enumerate(ids)}
    memory_episodes = [MemoryEpisode(i, args.steps) for i in ids]

    def memory_read(info, start, stop, keys):
        return {key: arrays[info.episode_id][key][start:stop].copy() for key in keys}

    work = Path(tempfile.mkdtemp(prefix="bench_replay_"))
    stores = {}
    try:
        for fmt in ("zarr", "webdataset"):
            with open_writer(work / fmt, fmt, spec, "n0w0", {}, episodes_per_shard=8) as writer:
                for e, i in enumerate(ids):
                    writer.add_episode(arrays[i], EpisodeMeta(i, e, e // 4, {}, args.steps))
            stores[fmt] = open_store(work / fmt)

        replay_args = dict(
            batch_size=args.batch_size, bptt_length=args.bptt_length, history=args.history, stride=args.stride,
            seed=0, keys=KEYS,
        )  # fmt: skip
        cases = [  # (name, class, episodes, read_steps, prefetch, train_s)
            ("in-memory, prefetch 0 (ceiling, baseline)", OrderedReplay, memory_episodes, memory_read, 0, 0.0),
            ("in-memory, prefetch 4", OrderedReplay, memory_episodes, memory_read, 4, 0.0),
        ]
        for fmt, store in stores.items():
            cases += [
                (f"{fmt} store, prefetch 0", OrderedReplay, store.episodes, store.read_steps, 0, 0.0),
                (f"{fmt} store, prefetch 4", OrderedReplay, store.episodes, store.read_steps, 4, 0.0),
            ]
            if fmt == "zarr":
                assert store.shard_reader(store.shards[0]["name"]).fast_image_keys, "zstd fast path not taken"
                # The same store through zarr's own slicing, as before the fast path: its gain, in the same run.
                plain = {s["name"]: ZarrShardReader(work / fmt / s["name"], spec, fast_images=False) for s in store.shards}

                def plain_read(info, start, stop, keys):
                    return plain[info.shard].read(info.start + start, info.start + stop, tuple(keys))

                for prefetch in (0, 4):
                    name = f"zarr store, zarr slicing (no fast path), prefetch {prefetch}"
                    cases.append((name, OrderedReplay, store.episodes, plain_read, prefetch, 0.0))
        cases.append(("zarr store, random windows, prefetch 4", RandomWindows, stores["zarr"].episodes,
                      stores["zarr"].read_steps, 4, 0.0))  # fmt: skip
        if args.train_ms:
            train_s = args.train_ms / 1000
            for prefetch in (0, 4):
                cases.append((f"zarr store + {args.train_ms:g} ms train step, prefetch {prefetch}", OrderedReplay,
                              stores["zarr"].episodes, stores["zarr"].read_steps, prefetch, train_s))  # fmt: skip

        rows = []
        for name, cls, episodes, read, prefetch, train_s in cases:
            best = None
            for _ in range(args.rounds):
                replay = cls(episodes, read, prefetch=prefetch, **replay_args)
                seconds, steps, stats = run_epoch(replay, train_s)
                if best is None or seconds < best[0]:
                    best = (seconds, steps, stats)
            seconds, steps, stats = best
            rows.append((name, steps / seconds, stats["chunks"], stats["read_calls"] / max(stats["chunks"], 1),
                         stats["steps_read"] / steps, stats["read_s"], stats["data_wait_s"] / seconds))  # fmt: skip
            print(f"{name}: {steps / seconds:,.0f} steps/s")
    finally:
        for store in stores.values():
            store.close()
        shutil.rmtree(work, ignore_errors=True)

    baseline = rows[0][1]
    context = (args.history - 1) * args.stride
    setup = (
        f"Machine: {machine()}. {args.episodes} episodes x {args.steps} steps, {args.size}x{args.size} synthetic frames, "
        f"2 cameras; B={args.batch_size}, L={args.bptt_length}, h={args.history}, s={args.stride} "
        f"(window C+L+1 = {context + args.bptt_length + 1}); keys {', '.join(KEYS)}. One epoch per figure, best of "
        f"{args.rounds}. Steps/s counts valid chunk positions; steps read/step: steps decoded from the store per valid position (history and next frame included). Zarr (zstd) rows read through f1's fast path unless marked zarr slicing. Baseline: the same episodes in memory, prefetch 0."
    )
    columns = ("replay", "steps/s", "vs in-memory", "chunks", "reads/chunk", "steps read/step", "read s", "data-wait share")
    table = [
        (name, f"{rate:,.0f}", f"{rate / baseline:.3f}", f"{chunks}", f"{reads:.1f}", f"{per_step:.2f}", f"{read_s:.2f}", f"{wait:.1%}")
        for name, rate, chunks, reads, per_step, read_s, wait in rows
    ]
    report("bench_replay", setup, table, columns, append=not args.no_append)


if __name__ == "__main__":
    main()
