"""Episode store speed and size: each format and image codec, write and read, against plain numpy.

    .venv/bin/python bench/bench_datasets.py [--size 128] [--episodes 8] [--steps 51] [--rounds 2] [--no-append]

Frames: rendered by F1RLEnv (two scenes, random joint moves) when the env
works here, else synthesised image-like frames (smooth gradients + shapes +
mild noise); the table says which. Episodes cycle through that pool of
frames; every frame is compressed on its own (one chunk or one PNG per
frame), so repeats do not flatter the sizes.

- write: `open_writer(...).add_episode` for every episode (foreground, so the
  time is the encoding and the disk), steps/s and raw MB/s, bytes per step on
  disk and the compression ratio; baseline: `np.save` of the same arrays, one
  uncompressed file per episode and key.
- read: `read_steps` in episode order, chunks of --chunk steps with every key
  (what training replay does); ceiling: the same arrays held in memory as
  numpy, sliced and copied the same way. On this VM that copy ran 2-20x
  slower depending on where the arrays happen to lie (page-aligned source and
  destination alias; the same bytes in another buffer copy fast), so the
  ceiling is re-measured beside every store and the best kept; a raw .npy
  read from the page cache can still beat it. Zarr zstd stores are written and
  read twice: by f1's fast paths (ShardedZstdFrameWriter, ShardedZstdFrames)
  and by zarr's own (`ZarrShardWriter(fast_images=False)` appends,
  `ZarrShardReader(fast_images=False)` slicing), the gains measured in the same
  run; the two stores are checked to be byte-identical.
Each figure is the best of --rounds (the machine is shared). The table is
printed and appended to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from results import machine, report

from f1.datasets import EpisodeMeta, StoreSpec, open_store, open_writer
from f1.datasets import codecs, writer
from f1.datasets.zarr_shard import ZarrShardReader, ZarrShardWriter

CONFIGS = [  # (format, codec, PNG zlib level or None)
    ("zarr", "delta-zstd", None),
    ("zarr", "zstd", None),
    ("zarr", "blosc-zstd", None),
    ("zarr", "blosc-lz4", None),
    ("webdataset", "png", codecs.PNG_LEVEL),
    ("webdataset", "png", 6),
    ("webdataset", "npy", None),
]


def rendered_frames(size: int, per_scene: int) -> dict[str, np.ndarray]:
    """Head and wrist frames from F1RLEnv: two scenes, random joint moves. (2 * per_scene, H, W, 3) per camera."""
    from f1.collect.env import F1RLEnv
    from f1.shared.config import load_config

    cfg = load_config(overrides=[f"environment.image_size=[{size},{size}]"])
    env = F1RLEnv(cfg)
    rng = np.random.default_rng(0)
    frames: dict[str, list[np.ndarray]] = {"head_rgb": [], "wrist_rgb": []}
    try:
        for scene in range(2):
            obs, _ = env.reset(seed=scene, options={"scene_seed": 100 + scene})
            for _ in range(per_scene):
                for key in frames:
                    frames[key].append(obs[key])
                obs, *_ = env.step(rng.uniform(-1, 1, cfg.training.action_dim).astype(np.float32))
    finally:
        env.close()
    return {k: np.stack(v) for k, v in frames.items()}


def synthetic_frames(size: int, count: int) -> dict[str, np.ndarray]:
    """Smooth gradients, a few flat-coloured discs that move, mild noise: (count, H, W, 3) per camera."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = {}
    for c, key in enumerate(("head_rgb", "wrist_rgb")):
        frames = np.empty((count, size, size, 3), np.uint8)
        for i in range(count):
            t = 0.05 * i + c
            img = np.stack([(0.5 + 0.4 * np.sin(2 * xx + t)) * 200, (0.3 + 0.3 * yy) * 255, (0.6 - 0.3 * xx * yy) * 255], -1)
            for j in range(5):
                disc = (xx - 0.2 - 0.15 * j - 0.02 * np.sin(t + j)) ** 2 + (yy - 0.3 - 0.1 * j) ** 2 < (0.08 + 0.02 * j) ** 2
                img[disc] = (40 * j, 200 - 30 * j, 100 + 20 * j)
            frames[i] = np.clip(img + rng.normal(0, 0.7, img.shape), 0, 255)
        out[key] = frames
    return out


def make_episodes(spec: StoreSpec, pool: dict[str, np.ndarray], episodes: int, steps: int):
    rng = np.random.default_rng(1)
    pool_size = len(pool["head_rgb"])
    out = []
    for e in range(episodes):
        idx = (e * 7 + np.arange(steps)) % pool_size
        arrays = {key: pool[key][idx] for key in spec.image_keys}
        state = np.zeros((steps, spec.state_dim), np.float32)
        state[:, : spec.real_state_dims] = rng.normal(size=(steps, spec.real_state_dims))
        action = np.zeros((steps, spec.action_dim), np.float32)
        action[:-1, : spec.real_action_dims] = rng.uniform(-1, 1, (steps - 1, spec.real_action_dims))
        k = np.arange(steps)
        arrays.update(state=state, action=action, is_first=k == 0, is_last=k == steps - 1, is_terminal=np.zeros(steps, bool))
        out.append((arrays, EpisodeMeta(f"b-e{e:05d}", e, e // 4, {}, steps)))
    return out


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def same_files(a: Path, b: Path) -> bool:
    """Every shard file under a and b byte-identical (the manifest is left out: it records write times)."""
    files_a = {p.relative_to(a): p for p in a.rglob("*") if p.is_file() and ".zarr" in str(p.relative_to(a))}
    files_b = {p.relative_to(b): p for p in b.rglob("*") if p.is_file() and ".zarr" in str(p.relative_to(b))}
    return files_a.keys() == files_b.keys() and all(files_a[k].read_bytes() == files_b[k].read_bytes() for k in files_a)


def best_time(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="square image size")
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--steps", type=int, default=51, help="steps per episode (N = T + 1)")
    parser.add_argument("--chunk", type=int, default=8, help="steps per read_steps call (the BPTT length)")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs per figure (best kept)")
    parser.add_argument("--synthetic", action="store_true", help="skip rendering; synthesise frames")
    parser.add_argument("--no-append", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = parser.parse_args()

    source = "synthetic (gradients + shapes + noise sigma 0.7)"
    pool = None
    if not args.synthetic:
        try:
            t0 = time.perf_counter()
            pool = rendered_frames(args.size, per_scene=24)
            source = f"rendered by F1RLEnv (2 scenes x 24 steps, {time.perf_counter() - t0:.0f} s to render)"
        except Exception as exc:  # noqa: BLE001 - the bench still measures the stores on synthetic frames
            source = f"synthetic (the env did not render here: {type(exc).__name__}: {str(exc)[:80]})"
    if pool is None:
        pool = synthetic_frames(args.size, 48)
    spec = StoreSpec(image_hw=(args.size, args.size), state_dim=32, action_dim=32, real_state_dims=16, real_action_dims=8)
    episodes = make_episodes(spec, pool, args.episodes, args.steps)
    steps = args.episodes * args.steps
    raw_mb = steps * spec.raw_bytes_per_step() / 1e6
    work = Path(tempfile.mkdtemp(prefix="bench_datasets_"))
    default_level = codecs.PNG_LEVEL
    try:
        npy_dir = work / "npy"

        def write_npy() -> None:
            shutil.rmtree(npy_dir, ignore_errors=True)
            npy_dir.mkdir()
            for arrays, meta in episodes:
                for key, value in arrays.items():
                    np.save(npy_dir / f"{meta.episode_id}.{key}.npy", value)

        base_write = best_time(write_npy, args.rounds)
        base_bytes = disk_bytes(npy_dir) / steps
        in_memory = {meta.episode_id: arrays for arrays, meta in episodes}

        def read_memory() -> None:
            for arrays, meta in episodes:
                for start in range(0, meta.length, args.chunk):
                    {key: value[start : start + args.chunk].copy() for key, value in in_memory[meta.episode_id].items()}

        base_read = best_time(read_memory, args.rounds)
        compression = spec.raw_bytes_per_step() * steps / disk_bytes(npy_dir)
        results = []  # (name, write_s, bytes/step, compression, read_s)

        for fmt, codec, level in CONFIGS:
            store = work / f"{fmt}-{codec}-{level}"
            codecs.PNG_LEVEL = level if level is not None else default_level  # read by encode_image at each call

            def write_into(target: Path, codec: str) -> None:
                shutil.rmtree(target, ignore_errors=True)
                with open_writer(target, fmt, spec, "n0w0", {}, episodes_per_shard=8, image_codec=codec) as store_writer:
                    for arrays, meta in episodes:
                        store_writer.add_episode(arrays, meta)

            write_s = best_time(lambda: write_into(store, codec), args.rounds)
            reader = open_store(store)
            on_disk = sum(s["bytes"] for s in reader.shards)

            def read_store() -> None:
                for info in reader.episodes:
                    for start in range(0, info.length, args.chunk):
                        reader.read_steps(info, start, min(start + args.chunk, info.length))

            read_s = best_time(read_store, args.rounds)
            base_read = min(base_read, best_time(read_memory, args.rounds))  # the ceiling, re-measured beside each store
            got = reader.read_episode(reader.episodes[-1])
            assert all(np.array_equal(got[k], episodes[-1][0][k]) for k in got), (fmt, codec, "not lossless")
            name = f"{fmt} {codec}" + (f" (zlib level {level})" if level is not None else "")
            fast = fmt == "zarr" and bool(reader.shard_reader(reader.shards[0]["name"]).fast_image_keys)
            path_label = (" (f1's fast write + read)" if fast else " (zarr's write + slicing)") if fmt == "zarr" else ""
            results.append((name + path_label, write_s, on_disk / steps, raw_mb * 1e6 / on_disk, read_s))
            if fast:
                # The same store written and read by zarr's own paths: the fast paths' gains, measured in the same run.
                own = work / f"{fmt}-{codec}-zarr-own"
                shard_writers = dict(writer._SHARD_WRITERS)
                # Bench only: open_writer builds its shard writers from this table; zarr's own write path for this row.
                writer._SHARD_WRITERS["zarr"] = functools.partial(ZarrShardWriter, fast_images=False)
                try:
                    own_write_s = best_time(lambda: write_into(own, codec), args.rounds)
                finally:
                    writer._SHARD_WRITERS.update(shard_writers)
                assert same_files(store, own), (codec, "the fast write path's files differ from zarr's own")
                plain = {s["name"]: ZarrShardReader(own / s["name"], spec, fast_images=False) for s in reader.shards}

                def read_plain() -> None:
                    for info in reader.episodes:
                        for start in range(0, info.length, args.chunk):
                            stop = min(start + args.chunk, info.length)
                            plain[info.shard].read(info.start + start, info.start + stop, spec.keys)

                results.append((f"{name} (zarr's own write + slicing)", own_write_s, on_disk / steps, raw_mb * 1e6 / on_disk,
                                best_time(read_plain, args.rounds)))  # fmt: skip
            reader.close()
    finally:
        codecs.PNG_LEVEL = default_level
        shutil.rmtree(work, ignore_errors=True)
    rows = [("np.save, uncompressed / in memory (baselines)", base_write, base_bytes, compression, base_read)] + results

    setup = (
        f"Machine: {machine()}. Frames: {source}, {args.size}x{args.size}, 2 cameras. "
        f"{args.episodes} episodes x {args.steps} steps = {steps} steps ({spec.raw_bytes_per_step()} raw bytes/step). "
        f"Read: read_steps in episode order, chunks of {args.chunk} steps, all keys; ceiling: the same arrays in memory "
        f"(numpy slice + copy), best over all its runs (re-measured beside each store). Best of {args.rounds}."
    )
    columns = ("store", "write steps/s", "write MB/s (raw)", "bytes/step", "compression", "write vs np.save",
               "read steps/s", "read vs in-memory")  # fmt: skip
    table = []
    for name, write_s, per_step, comp, read_s in rows:
        written = (f"{steps / write_s:,.0f}", f"{raw_mb / write_s:,.1f}", f"{per_step:,.0f}", f"{comp:.2f}x",
                   f"{base_write / write_s:.2f}")  # fmt: skip
        table.append((name, *written, f"{steps / read_s:,.0f}", f"{base_read / read_s:.3f}"))
    report("bench_datasets", setup, table, columns, append=not args.no_append)


if __name__ == "__main__":
    main()
