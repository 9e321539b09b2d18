"""Store format 3 at scale: a commit costs the same at any size (issue 24), against format 2's manifest.

    nice -n 10 .venv/bin/python bench/bench_store_scale.py [--sizes 1000,10000,100000,1000000]
        [--s3-max 100000] [--commits 50] [--committers 32] [--collect 3000] [--no-append]

Stores are built directly from metadata (no frames behind them): 8 episodes a
shard over 16 workers, every episode with a realistic randomisation (the
collector's own scene and episode parameters, ~3 KB of JSON, a pool of 4,096
cycled; the index part compresses them better than distinct ones), folded into
checkpoint parts as compaction writes them, plus one compaction interval
(COMPACT_EVERY records) left in the log, so a reader pays for both. Per size,
local disk (and the local S3 server, moto on 127.0.0.1, up to --s3-max):
- commit latency, p50 and p99 of --commits real commits on top
  (f1.datasets.commit_log.commit: the record's bytes, written to a temporary
  name, fsynced, hard-linked to its name, the folder fsynced; on S3 one PUT
  with If-None-Match: *). Not included: writing and checksumming the shard,
  which costs the same in every format, and the compaction every
  COMPACT_EVERY records, timed on its own row;
- opening the store and reading every episode's length (a fresh process:
  time, peak RSS); the metadata part of `f1 dataset stats` (store_summary)
  and of `f1 dataset verify` (every shard's listed episodes, randomisation
  left unread), each in a fresh process;
- compaction: folding the pending records into a new checkpoint.
Then 32 processes commit at once on one store (local: the largest; S3: its
largest): commits/s, every record listed once. Format 2 is built the same way
at 1k and 10k (manifest.json with the same entries) and committed with its
add_shard (read, check, rewrite under the lock): the baseline. Last, `f1
collect` end to end: 3,000 episodes of 1 step at 16x16, one episode a shard
(3,000 commits + the compactions), against 300 such episodes: episodes/s
once the envs are built, compaction included. The episode index format
(Parquet vs Zarr arrays) is measured first: reading 1M lengths and ids.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from results import load_average, machine, report

from f1.datasets import commit_log
from f1.datasets.compact import COMPACT_EVERY, MAX_PART_EPISODES, compact
from f1.datasets.episode_index import id_hashes, write_part
from f1.datasets.manifest import add_shard, new_manifest, write_manifest
from f1.datasets.s3 import S3Path, store_path
from f1.datasets.schema import MANIFEST_NAME, StoreSpec, shard_name, shard_relpath
from f1.datasets.store_checkpoint import write_checkpoint

SPEC = StoreSpec(image_hw=(128, 128), object_slots=8, image_codec="png")
PER_SHARD, WORKERS = 8, 16
POOL = 4096  # distinct randomisations, cycled: sampling a million would take longer than the bench


def randomizations(first: int, count: int) -> list[str]:
    """JSON of episodes first .. first + count - 1: the collector's scene and episode parameters (a pool of POOL)."""
    global _POOL
    if "_POOL" not in globals():
        from f1.collect.randomization import sample_episode, sample_scene
        from f1.shared.config import load_config

        dr = load_config().environment.domain_randomization
        scenes = [sample_scene(dr, s) for s in range(POOL // 4)]
        _POOL = [json.dumps({"scene": scenes[e // 4].to_dict(), "episode": sample_episode(scenes[e // 4], e, 0.02).to_dict()}) for e in range(POOL)]
    return [_POOL[e % POOL] for e in range(first, first + count)]


def shard_entry(k: int, first_episode: int, worker: str | None = None, seq: int | None = None) -> dict:
    """Shard k's entry (8 episodes from first_episode), as a writer commits it."""
    worker = worker or f"n0w{k % WORKERS}"
    seq = k // WORKERS if seq is None else seq
    name = shard_name(worker, seq, "webdataset")
    rand = randomizations(first_episode, PER_SHARD)
    eps = [{"id": f"s0-e{first_episode + i:07d}", "length": 41, "seed": first_episode + i, "scene_id": (first_episode + i) // 4,
            "randomization": json.loads(rand[i])} for i in range(PER_SHARD)]  # fmt: skip
    return {"name": name, "path": shard_relpath(name), "format": "webdataset", "episodes": eps, "steps": 41 * PER_SHARD,
            "bytes": 3_000_000, "checksum": "sha256:" + "0" * 64}  # fmt: skip


def part_tables(first_shard: int, shards: int) -> dict:
    """An index part's tables for shards first_shard .. (columns built directly, as a compaction writes them)."""
    import pyarrow as pa

    k = np.arange(first_shard, first_shard + shards)
    names = [shard_name(f"n0w{i % WORKERS}", i // WORKERS, "webdataset") for i in k]
    e = np.arange(first_shard * PER_SHARD, (first_shard + shards) * PER_SHARD)
    ids = [f"s0-e{i:07d}" for i in e]
    return {
        "shards": pa.table({"name": names, "path": [shard_relpath(n) for n in names], "format": ["webdataset"] * shards,
                            "steps": np.full(shards, 41 * PER_SHARD), "bytes": np.full(shards, 3_000_000),
                            "checksum": ["sha256:" + "0" * 64] * shards}),
        "episodes": pa.table({"id": ids, "id_hash": id_hashes(ids), "length": np.full(len(e), 41),
                              "start": (e % PER_SHARD) * 41, "shard": (e // PER_SHARD) - first_shard, "seed": e,
                              "scene_id": e // 4, "randomization": randomizations(int(e[0]), len(e))}),
    }  # fmt: skip


def build_v3(store, episodes: int) -> int:
    """A format-3 store of `episodes`, one compaction interval of it still in the log; its pending records."""
    shards = episodes // PER_SHARD
    pending = min(COMPACT_EVERY, shards // 2)
    folded_shards = shards - pending
    if isinstance(store, Path):
        store.mkdir(parents=True)
    (store / MANIFEST_NAME).write_bytes(json.dumps(new_manifest("webdataset", SPEC, {})).encode())
    parts, per_part = [], MAX_PART_EPISODES // PER_SHARD
    for first in range(0, folded_shards, per_part):
        parts.append(write_part(store, part_tables(first, min(per_part, folded_shards - first))))
        print(f"  built {first + min(per_part, folded_shards - first)}/{shards} shards", end="\r", flush=True)
    folded = {}
    for k in range(folded_shards):  # a worker's highest folded seq
        folded[f"n0w{k % WORKERS}"] = k // WORKERS
    write_checkpoint(store, 0, parts, folded)
    for k in range(folded_shards, shards):
        commit_log.commit(store, shard_entry(k, k * PER_SHARD), fsync=False)
    return pending


def build_v2(store: Path, episodes: int) -> None:
    store.mkdir(parents=True)
    manifest = new_manifest("webdataset", SPEC, {}, version=2)
    manifest["shards"] = [{**shard_entry(k, k * PER_SHARD), "path": None} for k in range(episodes // PER_SHARD)]
    for entry in manifest["shards"]:
        del entry["path"]
    write_manifest(store, manifest)


def time_commits(store, n: int, commit, first_episode: int) -> np.ndarray:
    """Seconds each of n commits took (worker n9w0, a new one, so every commit is a new shard)."""
    entries = [shard_entry(0, first_episode + i * PER_SHARD, worker="n9w0", seq=i) for i in range(n)]
    out = []
    for entry in entries:
        start = time.perf_counter()
        commit(store, entry)
        out.append(time.perf_counter() - start)
    return np.array(out)


_MEASURE = """
import json, sys, time
from f1.datasets.reader import open_store
from f1.datasets.stats import store_summary
from f1.datasets.verify import listed_shards
from f1.datasets.s3 import store_path
def peak_mb():  # VmHWM: this process's peak RSS (ru_maxrss would carry the forking parent's peak over the exec)
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
base = peak_mb()
start = time.perf_counter()
what = sys.argv[2]
if what == "lengths":
    n = int(open_store(sys.argv[1]).lengths.sum())
elif what == "stats":
    n = store_summary(open_store(sys.argv[1]))["episodes"]
else:
    n = sum(len(s["episodes"]) for s in listed_shards(store_path(sys.argv[1]))[1])
print(json.dumps({"s": time.perf_counter() - start, "peak_mb": peak_mb(), "imports_mb": base, "n": n}))
"""


def measure(store, what: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(store), what], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _committer(store: str, worker: str, n: int, ready, go, times) -> None:
    s = store_path(store)
    entries = [shard_entry(0, 10**8 + i * PER_SHARD, worker=worker, seq=i) for i in range(n)]
    ready.put(worker)
    go.wait()
    start = time.time()
    for entry in entries:
        commit_log.commit(s, entry)
    times.put((start, time.time()))


def concurrent_commits(store, committers: int, per: int) -> tuple[float, bool]:
    """(commits/s of `committers` processes at once, whether each of their records is listed exactly once)."""
    from f1.datasets.reader import open_store

    ctx = mp.get_context("spawn")
    ready, go, times = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_committer, args=(str(store), f"n8w{i}", per, ready, go, times)) for i in range(committers)]
    for p in procs:
        p.start()
    for _ in procs:  # every process has imported and built its entries: only the commits are timed
        ready.get(timeout=600)
    go.set()
    spans = [times.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    wall = max(e for _, e in spans) - min(s for s, _ in spans)
    names = [n for n in open_store(store).snapshot.shard_column("name") if n.startswith("shard-n8w")]
    exact = sorted(names) == sorted(shard_name(f"n8w{i}", q, "webdataset") for i in range(committers) for q in range(per))
    return committers * per / wall, exact


def index_format_rows(tmp: Path) -> list[tuple[str, str, str]]:
    """1M episodes' lengths and ids: one Parquet file's columns vs Zarr v3 arrays (read all, fresh process)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zarr

    n = 1_000_000
    ids = np.array([f"s0-e{i:07d}" for i in range(n)])
    lengths = np.full(n, 41, np.int64)
    pq.write_table(pa.table({"id": ids, "length": lengths}), tmp / "index.parquet", compression="zstd")
    group = zarr.open_group(tmp / "index.zarr", mode="w")
    group.create_array("length", data=lengths, chunks=(65536,))
    group.create_array("id", data=ids.astype("U12"), chunks=(65536,))
    code = {  # (import, read), timed apart: the read alone
        "parquet": ("import pyarrow.parquet as pq; from f1.datasets.episode_index import arrow_to_numpy",
                    "t = arrow_to_numpy(pq.ParquetFile(P + '/index.parquet').read(columns=[C]).column(C), C)"),  # as the reader does
        "zarr": ("import zarr", "t = zarr.open_group(P + '/index.zarr', mode='r')[C][:]"),
    }
    rows = []
    for column in ("length", "id"):
        for fmt, (imports, body) in code.items():
            snippet = f"import time; {imports}; P, C = {str(tmp)!r}, {column!r}; s = time.perf_counter(); {body}; print(time.perf_counter() - s)"
            best = min(float(subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, check=True).stdout) for _ in range(3))
            rows.append((fmt, column, best))
    base = {c: next(t for f, cc, t in rows if f == "parquet" and cc == c) for c in ("length", "id")}
    return [(f"episode index: read 1M {c}s, {f}", f"{t * 1e3:.0f} ms", f"{t / base[c]:.2f}") for f, c, t in rows]


def collect_rate(episodes: int, tmp: Path) -> tuple[float, float]:
    """(episodes/s once the envs are built, compaction at the end included; compaction s) of `f1 collect`."""
    from rich.console import Console

    from f1.collect.collector import run_collection
    from f1.shared.config import load_config

    cfg = load_config(overrides=["environment.image_size=[16,16]", "training.steps_per_episode=1", "collect.envs=1",
                                 "collect.workers=2", f"collect.episodes={episodes}", "collect.episodes_per_shard=1",
                                 "collect.format=webdataset"])  # fmt: skip
    out = tmp / f"collect{episodes}"
    run = run_collection(cfg, out, Console(stderr=True, quiet=True))
    assert run is not None and not run.errors, run.errors
    start = time.perf_counter()
    compact(out)
    compaction = time.perf_counter() - start
    busy = max(r.wall_s - r.setup_s for r in run.reports.values())
    from f1.datasets.reader import open_store

    assert len(open_store(out).episodes) == episodes
    return episodes / (busy + compaction), compaction


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000,1000000")
    parser.add_argument("--s3-max", type=int, default=100_000)
    parser.add_argument("--v2-sizes", default="1000,10000")
    parser.add_argument("--commits", type=int, default=50)
    parser.add_argument("--v2-commits", type=int, default=10, help="format-2 commits at 10k (seconds each)")
    parser.add_argument("--committers", type=int, default=32)
    parser.add_argument("--per-committer", type=int, default=25)
    parser.add_argument("--collect", type=int, default=3000, help="episodes of the end-to-end run (0: skip it)")
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="f1-bench-scale-", dir=os.environ.get("BENCH_TMP")))
    rows: list[tuple[str, str, str]] = []
    server = None
    try:
        rows += index_format_rows(tmp)
        print(*rows, sep="\n", flush=True)
        from bench_s3 import start_server

        server, _ = start_server()
        import boto3

        bucket = f"f1-scale-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).create_bucket(Bucket=bucket)
        p50 = {}
        for where in ("local", "s3"):
            for n in sizes:
                if where == "s3" and n > args.s3_max:
                    continue
                store = tmp / f"v3-{n}" if where == "local" else S3Path(bucket, f"v3-{n}")
                start = time.perf_counter()
                pending = build_v3(store, n)
                print(f"{where} {n}: built in {time.perf_counter() - start:.0f} s", flush=True)
                label = f"{where}, {n:,} episodes"
                got = {what: measure(store, what) for what in ("lengths", "stats", "verify")}
                commits = time_commits(store, args.commits, commit_log.commit, 10**9)
                p50[(where, n)] = np.median(commits)
                base = p50[(where, sizes[0])]
                start = time.perf_counter()
                compact(store)
                fold = time.perf_counter() - start
                rows += [
                    (f"{label}: commit p50 / p99", f"{np.median(commits) * 1e3:.1f} / {np.quantile(commits, 0.99) * 1e3:.1f} ms",
                     f"{np.median(commits) / base:.2f} of {sizes[0]:,}"),
                    (f"{label}: open + read all lengths ({pending} records unfolded)",
                     f"{got['lengths']['s']:.2f} s, peak RSS {got['lengths']['peak_mb']:.0f} MB (imports {got['lengths']['imports_mb']:.0f})", ""),
                    (f"{label}: stats, metadata part", f"{got['stats']['s']:.2f} s, peak RSS {got['stats']['peak_mb']:.0f} MB", ""),
                    (f"{label}: verify, metadata part", f"{got['verify']['s']:.2f} s, peak RSS {got['verify']['peak_mb']:.0f} MB", ""),
                    (f"{label}: compaction of {pending + args.commits} records", f"{fold:.2f} s", ""),
                ]  # fmt: skip
                print(*rows[-5:], sep="\n", flush=True)
                assert got["lengths"]["n"] == 41 * n and got["stats"]["n"] == n and got["verify"]["n"] == n, got
            largest = tmp / f"v3-{max(sizes)}" if where == "local" else S3Path(bucket, f"v3-{max(s for s in sizes if s <= args.s3_max)}")
            rate, exact = concurrent_commits(largest, args.committers, args.per_committer)
            goal = 200 if where == "local" else 30
            rows.append((f"{where}: {args.committers} committers at once, {args.committers * args.per_committer} commits",
                         f"{rate:.0f} commits/s", f"goal >= {goal}; each listed once: {'yes' if exact else 'NO'}"))  # fmt: skip
            print(rows[-1], flush=True)
            if where == "local":
                for n in (int(s) for s in args.v2_sizes.split(",")):
                    store = tmp / f"v2-{n}"
                    build_v2(store, n)
                    got = measure(store, "lengths")
                    commits = time_commits(store, args.commits if n <= 1000 else args.v2_commits, add_shard, 10**9)
                    rows += [
                        (f"format 2, {n:,} episodes: commit p50 / p99 ({len(commits)} commits)",
                         f"{np.median(commits) * 1e3:.1f} / {np.quantile(commits, 0.99) * 1e3:.1f} ms",
                         f"format 3 at {n:,}: {p50[('local', n)] / np.median(commits):.4f}" if ("local", n) in p50 else ""),
                        (f"format 2, {n:,} episodes: open + read all lengths", f"{got['s']:.2f} s, peak RSS {got['peak_mb']:.0f} MB", ""),
                    ]  # fmt: skip
                    print(*rows[-2:], sep="\n", flush=True)
                    shutil.rmtree(store)
        if args.collect:
            small, _ = collect_rate(args.collect // 10, tmp)
            large, fold = collect_rate(args.collect, tmp)
            rows += [
                (f"f1 collect, {args.collect // 10} x 1-step episodes at 16x16, 1 a shard (baseline)", f"{small:.1f} episodes/s", "1.00"),
                (f"f1 collect, {args.collect} x 1-step episodes, 1 a shard ({args.collect} commits; final compaction {fold:.2f} s)",
                 f"{large:.1f} episodes/s", f"{large / small:.2f} (goal >= 0.80)"),
            ]  # fmt: skip
    finally:
        if server is not None:
            server.terminate()
        shutil.rmtree(tmp, ignore_errors=True)
    setup = (
        f"machine: {machine()}, load average {load_average():.1f} at the end. Stores built directly from metadata: {PER_SHARD} "
        f"episodes a shard, {WORKERS} workers, realistic randomisation JSON per episode (the collector's scene and episode "
        f"parameters, {POOL} distinct ones cycled); one compaction interval ({COMPACT_EVERY} records) left unfolded. A commit is the record alone: its JSON "
        "written to a temporary name, fsynced, hard-linked to log/<worker>/<chunk>/<seq>.json, the folder fsynced (S3: one "
        "PUT with If-None-Match: *); the shard's write and checksum (the same in every format) are not in it, nor the "
        f"compaction every {COMPACT_EVERY} records (its own rows). Format 2: add_shard (read manifest.json, check, rewrite "
        "under the flock). Open/stats/verify: a fresh process each, time after imports, peak RSS with them. S3: moto_server "
        "on 127.0.0.1 (Python, on the same 2 cores). Collect: steady episodes/s (envs built), the final compaction included."
    )
    report("bench_store_scale", setup, rows, append=not args.no_append)


if __name__ == "__main__":
    main()
