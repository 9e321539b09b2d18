"""The token store against the in-memory token cache: the teacher's anonymous memory, data wait, time to its first step.

    .venv/bin/python bench/bench_token_store.py [--sizes 24 384] [--steps 40] [--train-steps 60] [--no-append]

For each store size (synthetic episodes written by `open_writer` at the default
camera size, 128x128, N = steps + 1 steps each; the tiny preset's model and
tokenizer, 64x64, 256 tokens a frame), three teacher runs, each a fresh
process (what a user starts):
- the in-memory cache (`teacher.token_store=false`, the baseline): every run
  tokenises its episodes into each rank's memory before its first step;
- the token store's first run: it builds the store beside the data;
- a second run on the tokenized store: it maps the files and starts.
Measured from outside the process: its peak RssAnon (sampled from
/proc/<pid>/status every 50 ms; file pages of the mapped store do not count)
and its time from start to its first optimizer step; from its
episode_metrics.jsonl, the data-wait share of a step (the chunk and its
tokens, over the step). Goals (issue 25): peak anonymous memory on the
largest store <= 1.2x the smallest's, data wait < 5 % of a step, a second
run's first step within 10 s. The table is printed and appended to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from results import load_average, machine, report

from f1.datasets import EpisodeMeta, StoreSpec, open_writer
from f1.shared.config import load_config
from f1.train.models.tokenizer import FSQTokenizer
from f1.train.run_outputs import read_metrics

SIZE = 128  # environment.image_size's default
SPEC = StoreSpec(image_hw=(SIZE, SIZE))
SETTINGS = ["training.save_every=100000", "training.sample_every=100000", "logging.tensorboard=false",
            "logging.console_level=WARNING"]  # fmt: skip

# The child: the real teacher main in a fresh process; prints the wall-clock time of its first optimizer step.
CHILD = """
import sys, time
from pathlib import Path
from f1.shared.config import load_config
from f1.train.offline.teacher import main
first = []
def on_chunk(record):
    if not first:
        first.append(time.time())
        print("FIRST_STEP", first[0], flush=True)
main(load_config(None, sys.argv[2:]), Path(sys.argv[1]), on_chunk=on_chunk)
"""


def episode(e: int, n: int) -> dict[str, np.ndarray]:
    """A gradient with a square moving two pixels a step (a different colour and start per episode), random vectors."""
    rng = np.random.default_rng(e)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    arrays = {}
    for c, key in enumerate(SPEC.image_keys):
        frames = np.empty((n, SIZE, SIZE, 3), np.uint8)
        base = np.stack([xx * 2 + 40 * c, yy * 2, np.full_like(xx, (13 * e) % 200)], -1)
        for k in range(n):
            img = base.copy()
            top, left = (8 + 2 * k) % 96, 8 + (7 * e) % 96
            img[top : top + 24, left : left + 24] = ((37 * e) % 256, 40 * c, 90)
            frames[k] = np.clip(img, 0, 255)
        arrays[key] = frames
    action = np.zeros((n, SPEC.action_dim), np.float32)
    action[:-1, :8] = rng.uniform(-1, 1, (n - 1, 8))
    state = np.zeros((n, SPEC.state_dim), np.float32)
    state[:, :8] = rng.normal(size=(n, 8))
    k = np.arange(n)
    arrays.update(state=state, action=action, is_first=k == 0, is_last=k == n - 1, is_terminal=np.zeros(n, bool))
    return arrays


def write_store(path: Path, episodes: int, steps: int) -> None:
    with open_writer(path, "zarr", SPEC, "n0w0", {}, episodes_per_shard=8) as writer:
        for e in range(episodes):
            writer.add_episode(episode(e, steps + 1), EpisodeMeta(f"b{e:05d}", e, 0, {}, steps + 1))


def rss_anon(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def teacher_run(store: Path, out: Path, tokenizer: Path, train_steps: int, extra: list[str]) -> dict[str, float]:
    """One teacher process: peak RssAnon, seconds to its first step, wall time, data-wait share (log windows after the first)."""
    args = [*SETTINGS, f"training.log_every={max(1, train_steps // 4)}",  # 4 log windows; the first (start-up) is left out
            f"training.max_steps={train_steps}", f"teacher.output_dir={out}", f"teacher.tokenizer_path={tokenizer}", *extra]  # fmt: skip
    start = time.time()
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(store), *args], stdout=subprocess.PIPE, text=True)
    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_anon(child.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    first = None
    for line in child.stdout:
        if line.startswith("FIRST_STEP"):
            first = float(line.split()[1])
    rc = child.wait()
    done.set()
    sampler.join()
    assert rc == 0 and first is not None, (rc, out)
    records = read_metrics(out)[1:]  # the first log window holds start-up
    wait = sum(r["perf/data_wait_s"] for r in records) / sum(r["perf/step_s"] for r in records)
    return {"peak_anon": peak[0], "first_step_s": first - start, "wall_s": time.time() - start, "wait_share": wait}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[24, 384], help="store sizes in episodes")
    parser.add_argument("--steps", type=int, default=40, help="actions per episode (N = steps + 1)")
    parser.add_argument("--train-steps", type=int, default=60, help="optimizer steps of each teacher run")
    parser.add_argument("--no-append", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr version 3 specification")

    work = Path(tempfile.mkdtemp(prefix="bench_token_store_"))
    results: dict[tuple[int, str], dict[str, float]] = {}
    try:
        torch.manual_seed(0)
        tokenizer = FSQTokenizer.from_config(load_config(None, []))  # untrained: its codes' cost is the same
        tokenizer.save(work / "tokenizer")
        for size in args.sizes:
            store = work / f"store{size}"
            start = time.perf_counter()
            write_store(store, size, args.steps)
            print(f"[bench_token_store] {size} episodes written in {time.perf_counter() - start:.0f} s", flush=True)
            for arm, extra in (
                ("in-memory cache (baseline)", ["teacher.token_store=false"]),
                ("token store, first run (builds it)", []),
                ("token store, second run", []),
            ):
                out = work / f"run{size}-{len(results)}"
                results[(size, arm)] = teacher_run(store, out, work / "tokenizer", args.train_steps, extra)
                print(f"[bench_token_store] {size} episodes, {arm}: {json.dumps(results[(size, arm)])}", flush=True)
            token_bytes = sum(p.stat().st_size for p in (store / "tokens").rglob("*.npy"))
            results[(size, "bytes")] = {"token_store": token_bytes}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    small, large = min(args.sizes), max(args.sizes)
    rows = []
    for arm in ("in-memory cache (baseline)", "token store, second run"):
        base = results[(small, arm)]["peak_anon"]
        for size in args.sizes:
            peak = results[(size, arm)]["peak_anon"]
            goal = " (goal <= 1.2x)" if size == large and arm.startswith("token store") else ""
            rows.append((f"peak RssAnon, {size} episodes, {arm}{goal}", f"{peak / 2**20:.0f} MB", f"{peak / base:.2f}"))
    for size in args.sizes:
        base = results[(size, "in-memory cache (baseline)")]["first_step_s"]
        for arm in ("in-memory cache (baseline)", "token store, first run (builds it)", "token store, second run"):
            figure = results[(size, arm)]["first_step_s"]
            goal = " (goal < 10 s)" if arm == "token store, second run" else ""
            rows.append((f"time to first step, {size} episodes, {arm}{goal}", f"{figure:.1f} s", f"{figure / base:.2f}"))
    for size in args.sizes:
        for arm in ("in-memory cache (baseline)", "token store, second run"):
            rows.append((f"data wait share of a step, {size} episodes, {arm} (goal < 5 %)", f"{results[(size, arm)]['wait_share']:.2%}", ""))
        rows.append((f"token store on disk, {size} episodes", f"{results[(size, 'bytes')]['token_store'] / 2**20:.0f} MB", ""))
    setup = (
        f"Machine: {machine()}, load average {load_average():.1f} at the end. Stores: {', '.join(map(str, args.sizes))} synthetic "
        f"episodes of {args.steps + 1} steps, {SIZE}x{SIZE} wrist and head frames, Zarr. Tiny preset (tokenizer 64x64, 256 tokens "
        f"a frame, int32), {args.train_steps} optimizer steps a run, each run a fresh process. Peak RssAnon sampled from "
        "/proc every 50 ms (the mapped token store's pages are file memory and do not count); time to first step from "
        "the process's start (imports included); data wait = the replay's chunk plus gathering its tokens, over the step, "
        "from episode_metrics.jsonl after the first log window. Ratios: against the smallest store (memory) or the "
        "in-memory cache of the same store (time)."
    )
    report("token store: the teacher's memory and start-up (bench_token_store.py)", setup, rows, append=not args.no_append)


if __name__ == "__main__":
    main()
