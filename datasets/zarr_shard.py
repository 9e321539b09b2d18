"""One Zarr v3 shard: `data/<key>` concatenated along time, `meta/episode_ends` (diffusion_policy style).

Images are chunked one frame at a time (a read of any step range decodes
only its frames) and grouped by zarr's sharding codec into files of
FRAMES_PER_FILE frames, so a shard is a few files, not thousands. The writer
buffers frames until a file is full and writes it whole: zarr never has to
read back and rewrite a partly written file. Depth maps (format 4) are stored
the same way, one zstd chunk a frame, whatever the colour codec. Vectors and
flags are small; they are written once, at the end, as one chunk each.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from f1.datasets.codecs import ZSTD_LEVEL, zarr_image_codecs
from f1.datasets.schema import FORMAT_VERSION, EpisodeMeta, StoreError, StoreSpec
from f1.datasets.zarr_frames import ShardedZstdFrames, ShardedZstdFrameWriter

FRAMES_PER_FILE = 128  # ~6 MB raw per file at 128x128: a few files per shard, bounded write buffer


class ZarrShardWriter:
    """Writes one shard at `path` (the writer's `.tmp` directory, renamed once finished).

    Images in the 'zstd' layout are written by ShardedZstdFrameWriter (the same bytes zarr writes, ~1 ms of
    Python less per frame); other codecs by zarr's `append`. `fast_images=False` forces zarr's own write path
    everywhere (the benches' comparison and the tests' reference); `fast_image_keys` says which path each key takes.
    """

    def __init__(self, path: Path, spec: StoreSpec, fast_images: bool = True):
        import zarr
        from zarr.codecs import ZstdCodec

        self.path, self.spec = path, spec
        self._root = zarr.open_group(str(path), mode="w-", zarr_format=3)
        data = self._root.create_group("data")
        self._images: dict[str, Any] = {}
        self._pending: dict[str, list[np.ndarray]] = {}
        h, w = spec.image_hw
        for key in spec.image_keys:
            self._images[key] = data.create_array(
                key, shape=(0, h, w, 3), dtype="uint8", chunks=(1, h, w, 3),
                shards=(FRAMES_PER_FILE, h, w, 3), fill_value=0, **zarr_image_codecs(spec.image_codec),
            )  # fmt: skip
            self._pending[key] = []
        for key in spec.depth_keys:  # (N, H, W) uint16 mm, a frame a chunk like the images; zstd (numcodecs Delta first saved only 15 % on rendered depth and leaves the fast path)
            self._images[key] = data.create_array(
                key, shape=(0, h, w), dtype="uint16", chunks=(1, h, w),
                shards=(FRAMES_PER_FILE, h, w), fill_value=0, **zarr_image_codecs("zstd"),
            )  # fmt: skip
            self._pending[key] = []
        fast = {k: ShardedZstdFrameWriter.open(a) for k, a in self._images.items()} if fast_images else {}
        self._fast = {k: f for k, f in fast.items() if f is not None}
        self.fast_image_keys = frozenset(self._fast)
        self._vectors: dict[str, list[np.ndarray]] = {k: [] for k in spec.keys if k not in spec.frame_keys}
        self._zstd = ZstdCodec(level=ZSTD_LEVEL)
        self._metas: list[EpisodeMeta] = []

    def add_episode(self, arrays: dict[str, np.ndarray], meta: EpisodeMeta) -> None:
        for key in self.spec.frame_keys:
            self._pending[key].append(arrays[key])
            self._flush(key, final=False)
        for key, parts in self._vectors.items():
            parts.append(arrays[key])
        self._metas.append(meta)

    def _flush(self, key: str, final: bool) -> None:
        """Append whole files of FRAMES_PER_FILE frames (and, when final, the remainder)."""
        pending = self._pending[key]
        buffered = sum(len(p) for p in pending)
        if buffered < FRAMES_PER_FILE and not (final and buffered):
            return
        frames = np.concatenate(pending)  # (buffered, H, W, 3) or (buffered, H, W)
        whole = len(frames) if final else len(frames) - len(frames) % FRAMES_PER_FILE
        (self._fast[key] if key in self._fast else self._images[key]).append(frames[:whole])
        self._pending[key] = [frames[whole:]] if whole < len(frames) else []

    def discard(self) -> None:
        """Delete the unfinished shard (after a failed write); zarr holds no file open between writes.

        A failed zarr write can leave its sibling writes still finishing in zarr's threads, which may put a
        file back into a folder being removed: try again briefly; the next writer removes whatever remains.
        """
        for _ in range(5):
            shutil.rmtree(self.path, ignore_errors=True)
            if not self.path.exists():
                return
            time.sleep(0.1)

    def finish(self) -> list[Path]:
        """Write the remainder, the vectors and the per-episode meta; returns sidecar files (none for Zarr)."""
        for key in self.spec.frame_keys:
            self._flush(key, final=True)
        data = self._root["data"]
        for key, parts in self._vectors.items():
            values = np.concatenate(parts)  # (S, ...) for the whole shard
            data.create_array(key, data=values, chunks=values.shape, compressors=[self._zstd])
        meta = self._root.create_group("meta")
        lengths = np.array([m.length for m in self._metas], dtype=np.int64)
        meta.create_array("episode_ends", data=np.cumsum(lengths), chunks=lengths.shape)
        ids = meta.create_array("episode_ids", shape=lengths.shape, dtype=str, chunks=lengths.shape)
        ids[:] = np.array([m.episode_id for m in self._metas], dtype=object)
        meta.create_array("seeds", data=np.array([m.seed for m in self._metas], dtype=np.int64), chunks=lengths.shape)
        meta.create_array("scene_ids", data=np.array([m.scene_id for m in self._metas], dtype=np.int64), chunks=lengths.shape)
        self._root.attrs.update(
            {
                "f1_format_version": FORMAT_VERSION,
                "spec": self.spec.to_dict(),
                "randomization": [m.randomization for m in self._metas],
            }
        )
        return []


class ZarrShardReader:
    """Random access to one finalised shard; vectors and flags are loaded whole (small), images read per range.

    Images in the 'zstd' layout are read by ShardedZstdFrames (one pread per shard file, one zstd call per
    frame, ~20x faster than zarr's per-chunk pipeline); other codecs by zarr's slicing. `fast_images=False`
    forces zarr's slicing everywhere (the benches' comparison); `fast_image_keys` says which path each key takes.
    """

    def __init__(self, path: Path, spec: StoreSpec, fast_images: bool = True):
        """`path` is a local directory, or an S3Path (zarr reads the metadata and vectors through its
        ObjectStore; the fast image path reads by ranged GETs)."""
        import zarr

        from f1.datasets.s3 import S3Path, bucket_store

        self.path, self.spec = path, spec
        remote = isinstance(path, S3Path)
        try:
            if remote:
                from zarr.storage import ObjectStore

                store = ObjectStore(bucket_store(path.bucket), read_only=True)
                self._root = zarr.open_group(store=store, path=path.key, mode="r", zarr_format=3)
            else:
                self._root = zarr.open_group(str(path), mode="r", zarr_format=3)
            self._images = {k: self._root[f"data/{k}"] for k in spec.frame_keys}
            ends = self._root["meta/episode_ends"][:]
        except (KeyError, FileNotFoundError, ValueError) as exc:
            raise StoreError(f"{path} is not a readable Zarr shard ({type(exc).__name__}: {exc}); re-collect it") from None
        self.episode_ends = np.asarray(ends, dtype=np.int64)
        self.num_steps = int(self.episode_ends[-1]) if len(self.episode_ends) else 0
        self._small: dict[str, np.ndarray] = {}
        fast = (
            {k: ShardedZstdFrames.open(a, remote=path / "data" / k if remote else None) for k, a in self._images.items()}
            if fast_images
            else {}
        )
        self._fast = {k: f for k, f in fast.items() if f is not None}
        self.fast_image_keys = frozenset(self._fast)

    def _vector(self, key: str) -> np.ndarray:
        if key not in self._small:
            self._small[key] = self._root[f"data/{key}"][:]
        return self._small[key]

    def read(self, start: int, stop: int, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Steps [start, stop) of the shard (shard-global indices)."""
        out = {}
        for key in keys:
            if key in self._fast:
                out[key] = self._fast[key].read(start, stop)  # (stop-start, H, W, 3), depth (stop-start, H, W)
            elif key in self._images:
                out[key] = self._images[key][start:stop]  # the same, decoded frame by frame
            else:
                out[key] = self._vector(key)[start:stop].copy()
        return out

    def metas(self) -> list[EpisodeMeta]:
        ends = self.episode_ends
        lengths = np.diff(ends, prepend=0)
        ids = self._root["meta/episode_ids"][:]
        seeds, scenes = self._root["meta/seeds"][:], self._root["meta/scene_ids"][:]
        rand = self._root.attrs.get("randomization", [{}] * len(ends))
        return [
            EpisodeMeta(str(ids[i]), int(seeds[i]), int(scenes[i]), dict(rand[i]), int(lengths[i])) for i in range(len(ends))
        ]

    def structure_problems(self) -> list[str]:
        """Array lengths, dtypes, shapes and episode_ends, checked without reading images."""
        problems = []
        ends = self.episode_ends
        if len(ends) and (np.any(np.diff(ends, prepend=0) <= 0)):
            problems.append(f"meta/episode_ends is not strictly increasing: {ends.tolist()}")
        for key, (dtype, shape) in self.spec.step_dtypes().items():
            try:
                arr = self._root[f"data/{key}"]
            except KeyError:
                problems.append(f"data/{key} is missing")
                continue
            if arr.dtype != dtype or tuple(arr.shape) != (self.num_steps, *shape):
                problems.append(f"data/{key} is {arr.dtype}{tuple(arr.shape)}, expected {dtype}{(self.num_steps, *shape)}")
        for key in ("episode_ids", "seeds", "scene_ids"):
            try:
                n = self._root[f"meta/{key}"].shape[0]
            except KeyError:
                problems.append(f"meta/{key} is missing")
                continue
            if n != len(ends):
                problems.append(f"meta/{key} has {n} entries, episode_ends {len(ends)}")
        return problems

    def iter_episodes(self) -> Iterator[tuple[EpisodeMeta, dict[str, np.ndarray]]]:
        start = 0
        for meta in self.metas():
            yield meta, self.read(start, start + meta.length, self.spec.keys)
            start += meta.length

    def close(self) -> None:
        self._small.clear()
