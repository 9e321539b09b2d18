"""`f1 train teacher` speed and stability: data-wait share, steps/s, replay vs its in-memory ceiling, growth over 2,000 chunks.

    .venv/bin/python bench/bench_teacher.py [--chunks 2000] [--baseline-chunks 200] [--no-append]

The real loop (`f1.train.offline.teacher.main`, in this process) on a real Zarr store
written by `open_writer`, at a deliberately tiny model size so that 2,000
chunks take a few minutes on 2 cores: what is measured is the loop around
the model (data, memory carry, bookkeeping), not the model. Rows:
- training, prefetch 4 (the default) against prefetch 0 (the baseline): chunks/s
  and the data-wait share of a step (goal < 5 %), from episode_metrics.jsonl.
- the replay alone, as the teacher reads it (vectors and markers; frames come
  from the token cache) and as the uncached path reads it (frames too), from
  the store against the same episodes in memory (the ceiling).
- stability: the median step time (process CPU time and wall time) over the
  20 chunks up to chunk 2,000 against chunks 1..20, of the same run and of a
  fresh run started right after it (the same machine load as chunk 2,000);
  the process RSS and the number of objects the garbage collector tracks at
  chunk 2,000 against chunk 20 (goal: ratio <= 1.1, nothing grows with the
  run, no graph kept across chunks).
The table is printed and appended to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import torch

from results import load_average, machine, report

from f1.datasets import EpisodeMeta, StoreSpec, open_store, open_writer
from f1.datasets.replay import OrderedReplay
from f1.shared.config import load_config
from f1.train.run_outputs import read_metrics
from f1.train.models.tokenizer import FSQTokenizer

EARLY = 20  # the stability baseline: chunk 20 of a run
OBJECT_COUNT_AT: set[int] = set()  # chunks at which `train` counts the objects gc tracks (set in main)
SIZE = 32
SPEC = StoreSpec(image_hw=(SIZE, SIZE), state_dim=8, action_dim=8, real_state_dims=8, real_action_dims=8)
# The smallest world model the config allows, so the loop's own costs are visible.
TINY = [
    f"environment.image_size=[{SIZE},{SIZE}]", "training.action_dim=8", "training.state_dim=8",
    f"model.tokenizer_image_size={SIZE}", "model.tokenizer_downsample=8", "model.tokenizer_channels=8",
    "model.tokenizer_levels=[4,4]", "model.code_dim=8", "model.hidden_size=16", "model.num_layers=1",
    "model.intermediate_size=16", "model.memory_hidden=8", "training.n_obs_img_steps=2",
    "training.batch_size=2", "training.bptt_length=2", "teacher.use_head_camera=false",
    "training.epochs=1000", "training.log_every=20", "training.save_every=100000", "training.sample_every=100000",
    "logging.tensorboard=false",
]  # fmt: skip


@dataclass(frozen=True)
class MemoryEpisode:
    episode_id: str
    length: int


def episode(e: int, n: int) -> dict[str, np.ndarray]:
    """A gradient with a square moving one pixel a step, random vectors, correct markers."""
    rng = np.random.default_rng(e)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    arrays = {}
    for c, key in enumerate(SPEC.image_keys):
        frames = np.empty((n, SIZE, SIZE, 3), np.uint8)
        for k in range(n):
            img = np.stack([xx * 6 + 40 * c, yy * 5, np.full_like(xx, (13 * e) % 200)], -1)
            img[(2 + k) % 24 : (2 + k) % 24 + 8, 4 + e % 20 : 12 + e % 20] = (230, 40 * c, 90)
            frames[k] = np.clip(img, 0, 255)
        arrays[key] = frames
    k = np.arange(n)
    action = np.zeros((n, 8), np.float32)
    action[:-1] = rng.uniform(-1, 1, (n - 1, 8))
    arrays.update(state=rng.normal(size=(n, 8)).astype(np.float32), action=action, is_first=k == 0,
                  is_last=k == n - 1, is_terminal=np.zeros(n, bool))  # fmt: skip
    return arrays


def train(work: Path, name: str, chunks: int, prefetch: int, cache: bool) -> tuple[list[dict], list[tuple]]:
    """Run the teacher for `chunks` steps; -> (metric records, per chunk at its end (wall s, CPU s, RSS bytes, gc objects))."""
    from accelerate.state import AcceleratorState

    from f1.train.offline.teacher import main

    cfg = load_config(None, [*TINY, f"training.max_steps={chunks}", f"training.prefetch_chunks={prefetch}",
                             f"teacher.cache_tokens={str(cache).lower()}", f"teacher.output_dir={work / name}",
                             f"teacher.tokenizer_path={work / 'tokenizer'}", "logging.console_level=WARNING"])  # fmt: skip
    process = psutil.Process()

    def mark(record: dict) -> None:
        cpu = process.cpu_times()
        # Objects the garbage collector tracks: a count that does not depend on the machine's load.
        objects = len(gc.get_objects()) if record["step"] in OBJECT_COUNT_AT else 0
        marks.append((time.perf_counter(), cpu.user + cpu.system, process.memory_info().rss, objects))

    marks: list[tuple[float, float, float, int]] = []
    AcceleratorState._reset_state(reset_partial_state=True)
    main(cfg, work / "store", on_chunk=mark)
    assert len(marks) == chunks, (len(marks), chunks)
    return read_metrics(work / name), marks


def chunk_rate(marks: list[tuple]) -> float:
    """Chunks/s after the first chunk (start-up left out)."""
    return (len(marks) - 1) / (marks[-1][0] - marks[0][0])


def median_around(marks: list[tuple], chunk: int, column: int) -> float:
    """Median per-chunk increment of a mark column (0: wall s, 1: CPU s) over the ~20 chunks ending near `chunk`."""
    values = np.diff([m[column] for m in marks])  # values[i]: chunk i+2
    return float(np.median(values[max(chunk - 21, 0) : chunk - 1]))


def data_wait_share(records: list[dict]) -> float:
    """Data-wait time over step time, over the whole run but its first log window (start-up)."""
    rest = records[1:] or records
    return sum(r["perf/data_wait_s"] for r in rest) / sum(r["perf/step_s"] for r in rest)


def replay_rate(episodes, read, keys, rounds: int = 2) -> float:
    """Valid steps/s of one epoch of the ordered replay (prefetch 0: the assembly itself), best of `rounds`."""
    best = 0.0
    for _ in range(rounds):
        replay = OrderedReplay(episodes, read, batch_size=2, bptt_length=2, history=2, stride=1, seed=0, keys=keys, prefetch=0)
        start, steps = time.perf_counter(), 0
        for chunk in replay.iter_chunks(0):
            steps += int(chunk["valid"].sum())
        best = max(best, steps / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=2000, help="training chunks of the long run")
    parser.add_argument("--baseline-chunks", type=int, default=200, help="training chunks of the prefetch-0 run")
    parser.add_argument("--episodes", type=int, default=24)
    parser.add_argument("--steps", type=int, default=21, help="steps per episode (N = T + 1)")
    parser.add_argument("--no-append", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr version 3 specification")
    early, late = EARLY, args.chunks

    work = Path(tempfile.mkdtemp(prefix="bench_teacher_"))
    try:
        arrays = {f"b{e:04d}": episode(e, args.steps) for e in range(args.episodes)}
        with open_writer(work / "store", "zarr", SPEC, "n0w0", {}, episodes_per_shard=8) as writer:
            for e, (name, a) in enumerate(arrays.items()):
                writer.add_episode(a, EpisodeMeta(name, e, 0, {}, args.steps))
        torch.manual_seed(0)
        tokenizer = FSQTokenizer.from_config(load_config(None, TINY))
        tokenizer(torch.from_numpy(np.concatenate([a["wrist_rgb"] for a in arrays.values()])))
        tokenizer.save(work / "tokenizer")

        OBJECT_COUNT_AT.update({EARLY, args.chunks})
        runs = {}
        for name, chunks, prefetch, cache in (
            ("frames read and tokenised per chunk, prefetch 0 (baseline)", args.baseline_chunks, 0, False),
            ("frames read and tokenised per chunk, prefetch 4", args.baseline_chunks, 4, False),
            ("token cache, prefetch 4 (the default)", args.chunks, 4, True),
        ):
            print(f"training {chunks} chunks: {name} ...")
            start = time.perf_counter()
            runs[name] = (*train(work, f"run{len(runs)}", chunks, prefetch, cache), time.perf_counter() - start)
        records, marks, total_s = runs[name]  # the long run
        # Its chunk 20 ran minutes before its chunk 2,000, under whatever else the machine ran then; a fresh
        # run right after gives a chunk 20 under the same conditions as chunk 2,000.
        print(f"training {2 * EARLY} chunks again: chunk {EARLY} right after the long run ...")
        _, fresh_marks = train(work, "fresh", 2 * EARLY, 4, True)

        store = open_store(work / "store")
        memory = [MemoryEpisode(name, args.steps) for name in arrays]
        memory_read = lambda info, a, b, keys: {k: arrays[info.episode_id][k][a:b].copy() for k in keys}  # noqa: E731
        vectors = ("state", "action", "is_first", "is_last")
        frames = ("wrist_rgb", *vectors)
        rates = {
            (keys, where): replay_rate(eps, read, keys)
            for keys in (vectors, frames)
            for where, eps, read in (("memory", memory, memory_read), ("store", store.episodes, store.read_steps))
        }
        store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    (base_name, (_, base_marks, _)), *_ = runs.items()
    rows = []
    for name, (run_records, run_marks, _) in runs.items():
        rate = chunk_rate(run_marks)
        rows.append((f"training chunks/s: {name}", f"{rate:.1f}", f"{rate / chunk_rate(base_marks):.2f}"))
    for name, (run_records, _, _) in runs.items():
        rows.append((f"data-wait share of a step (goal < 5 %): {name}", f"{data_wait_share(run_records):.2%}", ""))
    for keys, label in ((vectors, "vectors only (token-cache path)"), (frames, "wrist frames + vectors (uncached path)")):
        ceiling = rates[(keys, "memory")]
        rows.append((f"replay steps/s, {label}: in memory (ceiling)", f"{ceiling:,.0f}", "1.00"))
        rows.append((f"replay steps/s, {label}: zarr store", f"{rates[(keys, 'store')]:,.0f}", f"{rates[(keys, 'store')] / ceiling:.2f}"))
    for column, label in ((1, "process CPU time a step"), (0, "wall time a step")):
        first, fresh, last = (median_around(m, c, column) for m, c in ((marks, early), (fresh_marks, early), (marks, late)))
        rows.append((f"{label}, chunks {early - 19}..{early} of the long run (baseline)", f"{first * 1e3:.1f} ms", "1.00"))
        rows.append((f"{label}, chunks {early - 19}..{early} of a fresh run after it (baseline)", f"{fresh * 1e3:.1f} ms", "1.00"))
        rows.append((f"{label}, chunks {late - 19}..{late} (goal <= 1.1 x the fresh run)", f"{last * 1e3:.1f} ms",
                     f"{last / first:.2f} / {last / fresh:.2f}"))  # fmt: skip
    rss_first, rss_last = marks[early - 1][2], marks[late - 1][2]
    rows.append((f"process RSS at chunk {early} (baseline)", f"{rss_first / 2**20:.1f} MB", "1.00"))
    rows.append((f"process RSS at chunk {late} (goal <= 1.1)", f"{rss_last / 2**20:.1f} MB", f"{rss_last / rss_first:.3f}"))
    objects_first, objects_last = marks[early - 1][3], marks[late - 1][3]
    rows.append((f"objects tracked by gc at chunk {early} (baseline)", f"{objects_first:,}", "1.00"))
    rows.append((f"objects tracked by gc at chunk {late}", f"{objects_last:,}", f"{objects_last / objects_first:.3f}"))
    setup = (
        f"Machine: {machine()}, load average {load_average():.1f} at the end. Store: {args.episodes} episodes x {args.steps} steps, "
        f"{SIZE}x{SIZE} frames, Zarr. Model: the smallest the config allows (hidden 16, 1 layer, 4 tokens a frame, "
        f"h=2, B=2, L=2, wrist only), so the loop's own costs show. Long run (token cache, prefetch 4): {args.chunks} "
        f"chunks in {total_s:.0f} s; the other runs {args.baseline_chunks} chunks, the fresh run {2 * EARLY}. Chunks/s from per-chunk timestamps "
        f"after the first; data-wait share from episode_metrics.jsonl (20-step windows, the first left out); step "
        f"times are medians over 20 chunks, CPU time is the process's user + system time (less sensitive than wall "
        f"time to other jobs on the machine); replay rates: one epoch, prefetch 0, best of 2."
    )
    report("bench_teacher", setup, rows, append=not args.no_append)


if __name__ == "__main__":
    main()
