"""Stores on object storage: read libraries against a local S3 server, and the teacher's data wait from s3 vs local disk.

    .venv/bin/python bench/bench_s3.py [--size 64] [--episodes 24] [--steps 41] [--chunks 200] [--no-append]

A local S3-compatible server (moto's, on 127.0.0.1, started here) holds the
same Zarr store as a local folder. Rows:
- read libraries: each episode's wrist frames as one range (the reads replay
  makes), frames/s over the whole store, best of --rounds. Baseline: f1's
  hand-written fast path on local disk (ShardedZstdFrames, one pread per
  shard file). Then the same reader over S3 by obstore ranged GETs (f1's
  choice), by fsspec/s3fs `cat_file` ranges, tensorstore's zarr3 driver on
  its s3 kvstore (and on local files), and zarr-python's slicing through
  its ObjectStore.
- teacher: the real `f1 train teacher` loop (tiny model, 32x32 frames as in
  bench_teacher) for --chunks chunks, frames read and tokenised every chunk
  (teacher.cache_tokens=false, the read-heavy path) and with the token cache
  (the default), from the local store and from the bucket, prefetch 4: the
  data-wait share of a step (goal < 5 %) from episode_metrics.jsonl. The s3
  reader's whole-episode cache is cut to 4 episodes (2 x B lanes), so every
  epoch reads every episode from the server again.
moto is a Python server on the same 2 cores, so S3 figures here are a lower
bound on a real endpoint's throughput, not its latency. The table is printed
and appended to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path

import numpy as np

from results import load_average, machine, report

from f1.datasets import EpisodeMeta, StoreSpec, open_store, open_writer
from f1.datasets.s3 import S3Path


def start_server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1")
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, endpoint
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("moto_server did not start")


def upload_store(local: Path, url: str) -> None:
    root = S3Path.parse(url)
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        (root / path.relative_to(local).as_posix()).upload(path)


class FsspecKey:
    """The two calls ShardedZstdFrames makes of an S3Path (size, read_range), by s3fs instead of obstore."""

    def __init__(self, fs, path: str):
        self.fs, self.path = fs, path

    def __truediv__(self, name: str) -> "FsspecKey":
        return FsspecKey(self.fs, f"{self.path}/{name}")

    def size(self) -> int:
        try:
            return int(self.fs.info(self.path)["size"])
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise FileNotFoundError(self.path) from exc

    def read_range(self, offset: int, length: int) -> bytes:
        return self.fs.cat_file(self.path, start=offset, end=offset + length)

    def __str__(self) -> str:
        return f"s3://{self.path}"


def frames_rate(read, episodes, rounds: int) -> float:
    """Frames/s reading each episode's wrist frames as one range, best of `rounds` (the first also warms indexes)."""
    best = 0.0
    for _ in range(rounds):
        start, frames = time.perf_counter(), 0
        for shard, a, b in episodes:
            frames += len(read(shard, a, b))
        best = max(best, frames / (time.perf_counter() - start))
    return best


def library_rows(local: Path, url: str, endpoint: str, rounds: int) -> list[tuple[str, float, str]]:
    from f1.datasets.zarr_shard import ZarrShardReader

    store = open_store(local)
    spec = store.spec
    episodes = [(info.shard, info.start, info.start + info.length) for info in store.episodes]
    names = [s["name"] for s in store.shards]
    cases: list[tuple[str, object]] = []  # (label, {shard: read(a, b)} or the error text)

    def measure(label: str, make_reader) -> None:
        try:
            readers = {name: make_reader(name) for name in names}
            frames_rate(lambda shard, a, b: readers[shard](a, b), episodes, 1)  # warm: indexes, connections
            cases.append((label, readers))
        except Exception as exc:  # noqa: BLE001 - a library that cannot do it here is a row saying why
            cases.append((label, f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"))

    measure("local disk, f1 fast path (baseline)", lambda n: ZarrShardReader(local / n, spec)._fast["wrist_rgb"].read)
    remote = S3Path.parse(url)
    measure("s3, f1 fast path by obstore ranged GETs (f1's choice)",
            lambda n: ZarrShardReader(remote / n, spec)._fast["wrist_rgb"].read)  # fmt: skip

    def via_s3fs(name: str):
        import s3fs

        from f1.datasets.zarr_frames import ShardedZstdFrames

        fs = s3fs.S3FileSystem(endpoint_url=endpoint, key="bench", secret="bench")
        fast = ZarrShardReader(local / name, spec)._fast["wrist_rgb"]  # its layout; the bytes come from s3 below
        key = FsspecKey(fs, f"{remote.bucket}/{remote.key}/{name}/data/wrist_rgb")
        return ShardedZstdFrames(None, fast.shape, fast.frames_per_file, fast.fill_value, fast._file_key, remote=key).read

    measure("s3, f1 fast path by fsspec/s3fs cat_file ranges", via_s3fs)

    def via_tensorstore(kvstore: dict, threads: int | None = None):
        import tensorstore as ts

        def make(name: str):
            spec_ = {"driver": "zarr3", "kvstore": kvstore(name)}
            if threads is not None:  # as many threads as f1's reader uses (the prefetch thread alone)
                spec_["context"] = {"data_copy_concurrency": {"limit": threads}, "file_io_concurrency": {"limit": threads}}
            array = ts.open(spec_, read=True).result()
            return lambda a, b: array[a:b].read().result()

        return make

    s3_kv = lambda n: {"driver": "s3", "bucket": remote.bucket, "path": f"{remote.key}/{n}/data/wrist_rgb/",  # noqa: E731
                       "endpoint": endpoint, "aws_region": "us-east-1"}  # fmt: skip
    file_kv = lambda n: {"driver": "file", "path": str(local / n / "data" / "wrist_rgb")}  # noqa: E731
    measure("s3, tensorstore zarr3 driver, s3 kvstore", via_tensorstore(s3_kv))
    measure("local disk, tensorstore zarr3 driver, file kvstore", via_tensorstore(file_kv))
    measure("local disk, tensorstore zarr3 driver, file kvstore, 1 thread", via_tensorstore(file_kv, threads=1))
    measure("s3, zarr-python slicing through its ObjectStore (obstore)",
            lambda n: (lambda r: (lambda a, b: r._images["wrist_rgb"][a:b]))(ZarrShardReader(remote / n, spec, fast_images=False)))  # fmt: skip
    # Rounds interleaved over the libraries, best per library: the machine is shared, its load drifts.
    best = {label: 0.0 for label, readers in cases if isinstance(readers, dict)}
    for _ in range(rounds):
        for label, readers in cases:
            if isinstance(readers, dict):
                rate = frames_rate(lambda shard, a, b: readers[shard](a, b), episodes, 1)
                best[label] = max(best[label], rate)
    store.close()
    out = [(label, best[label], "") if isinstance(r, dict) else (label, float("nan"), r) for label, r in cases]
    for row in out:
        print(f"{row[0]}: {row[1]:,.0f} frames/s {row[2]}")
    return out


def teacher_rows(work: Path, url: str, chunks: int) -> list[tuple[str, str, str]]:
    import torch
    from accelerate.state import AcceleratorState

    from bench_teacher import SIZE, SPEC, TINY, data_wait_share, episode
    from f1.shared.config import load_config
    from f1.train.models.tokenizer import FSQTokenizer
    from f1.train.offline.teacher import main
    from f1.train.run_outputs import read_metrics

    arrays = {f"b{e:04d}": episode(e, 21) for e in range(24)}
    with open_writer(work / "tstore", "zarr", SPEC, "n0w0", {}, episodes_per_shard=8) as writer:
        for e, (name, a) in enumerate(arrays.items()):
            writer.add_episode(a, EpisodeMeta(name, e, 0, {}, 21))
    upload_store(work / "tstore", url)
    torch.manual_seed(0)
    tokenizer = FSQTokenizer.from_config(load_config(None, TINY))
    tokenizer(torch.from_numpy(np.concatenate([a["wrist_rgb"] for a in arrays.values()])))
    tokenizer.save(work / "tokenizer")
    # The s3 reader keeps whole episodes for their next chunks (REMOTE_EPISODE_CACHE_BYTES, 256 MB); this small
    # store would fit whole and be read from S3 once. Room for 2 x B = 4 episodes here, so that every epoch
    # fetches every episode from the server again, as a store larger than the cache would.
    import f1.datasets.reader as reader_module

    reader_module.REMOTE_EPISODE_CACHE_BYTES = 4 * 21 * SPEC.raw_bytes_per_step()
    rows = []
    for cache in (False, True):
        for where, data in (("local disk", work / "tstore"), ("s3", url)):
            name = f"{'token cache (the default)' if cache else 'frames read and tokenised every chunk'}, {where}"
            cfg = load_config(None, [*TINY, f"training.max_steps={chunks}", "training.prefetch_chunks=4",
                                     f"teacher.cache_tokens={str(cache).lower()}", f"teacher.output_dir={work / name}",
                                     f"teacher.tokenizer_path={work / 'tokenizer'}", "logging.console_level=WARNING"])  # fmt: skip
            AcceleratorState._reset_state(reset_partial_state=True)
            start = time.perf_counter()
            main(cfg, data)
            wall = time.perf_counter() - start
            records = read_metrics(work / name)
            step_ms = 1e3 * sum(r["perf/step_s"] for r in records[1:]) / max(sum(1 for _ in records[1:]), 1)
            share = data_wait_share(records)
            rows.append((f"teacher data-wait share, {name} (goal < 5 %)", f"{share:.2%}", f"{step_ms:.1f} ms a step, {wall:.0f} s run"))
            print(rows[-1])
    assert SIZE == 32
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="square frame size of the read-library store")
    parser.add_argument("--episodes", type=int, default=24)
    parser.add_argument("--steps", type=int, default=41, help="steps per episode (N = T + 1)")
    parser.add_argument("--chunks", type=int, default=400, help="teacher chunks per run")
    parser.add_argument("--rounds", type=int, default=5, help="read rounds, interleaved over the libraries")
    parser.add_argument("--no-append", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr version 3 specification")
    from bench_replay import synthetic_episode

    import boto3

    server, endpoint = start_server()
    work = Path(tempfile.mkdtemp(prefix="bench_s3_"))
    try:
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
        spec = StoreSpec(image_hw=(args.size, args.size), state_dim=32, action_dim=32, real_state_dims=16, real_action_dims=8)
        local = work / "store"
        with open_writer(local, "zarr", spec, "n0w0", {}, episodes_per_shard=8) as writer:
            for e in range(args.episodes):
                writer.add_episode(synthetic_episode(spec, e, args.steps), EpisodeMeta(f"b-e{e:05d}", e, 0, {}, args.steps))
        url = f"s3://{bucket}/store"
        start = time.perf_counter()
        with open_writer(url, "zarr", spec, "n0w0", {}, episodes_per_shard=8) as writer:  # the writer's own upload path
            for e in range(args.episodes):
                writer.add_episode(synthetic_episode(spec, e, args.steps), EpisodeMeta(f"b-e{e:05d}", e, 0, {}, args.steps))
        write_s = time.perf_counter() - start
        libs = library_rows(local, url, endpoint, args.rounds)
        teacher = teacher_rows(work, f"s3://{bucket}/teacher", args.chunks)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        server.terminate()
        server.wait()

    baseline = libs[0][1]
    rows = [(f"read {name}", f"{rate:,.0f} frames/s" if rate == rate else "failed", f"{rate / baseline:.3f}" if rate == rate else note)
            for name, rate, note in libs]  # fmt: skip
    rows += teacher
    frames = args.episodes * args.steps
    rows.append(("write: open_writer to s3 (stage, upload, conditional manifest), frames/s both cameras",
                 f"{2 * frames / write_s:,.0f} frames/s", ""))  # fmt: skip
    setup = (
        f"Machine: {machine()}, load average {load_average():.1f} at the end. S3: moto_server on 127.0.0.1 (Python, same cores). "
        f"Read rows: a Zarr store of {args.episodes} episodes x {args.steps} steps, {args.size}x{args.size} synthetic frames (zstd), "
        f"8 episodes a shard; each episode's wrist frames read as one range, frames/s after a warm-up pass, best of {args.rounds} "
        f"rounds interleaved over the libraries; ratio against "
        f"f1's fast path on local disk (same run). Teacher rows: the real loop, tiny model, 24 episodes x 21 steps of 32x32, "
        f"{args.chunks} chunks, prefetch 4; share = data-wait s / step s from episode_metrics.jsonl (first window left out)."
    )
    report("bench_s3", setup, rows, append=not args.no_append)


if __name__ == "__main__":
    main()
