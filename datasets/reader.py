"""StoreReader: one interface over Zarr and WebDataset stores, built from the manifest alone.

    store = open_store("data/run1")
    info = store.episodes[0]                       # EpisodeInfo, no image read
    chunk = store.read_steps(info, 0, 8, keys=("wrist_rgb", "action"))

Only shards in the manifest exist for a reader (a `.tmp` or a shard killed
before its manifest entry is invisible). Shard handles open on first use and
stay open (LRU), so training replay's many small `read_steps` calls cost a
seek and a decode, not an open. Safe to call from several threads.

`open_store("s3://bucket/run1")` reads a store on object storage the same
way: the manifest, then ranged GETs (one per Zarr image file touched, or one
over a tar's span). There a request costs milliseconds whatever its size, so
`read_steps` reads the whole episode at once and serves the episode's later
step ranges (replay's next chunks of that lane) from memory: an LRU of
REMOTE_EPISODE_CACHE_BYTES.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from f1.datasets.manifest import read_manifest, shard_bytes
from f1.datasets.s3 import S3Path, store_path
from f1.datasets.schema import MANIFEST_NAME, EpisodeMeta, StoreError, StoreSpec
from f1.datasets.wds_shard import TarShardReader
from f1.datasets.zarr_shard import ZarrShardReader

MAX_OPEN_SHARDS = 64
REMOTE_EPISODE_CACHE_BYTES = 256 << 20  # whole episodes read from object storage, kept for their next chunks


@dataclass(frozen=True)
class EpisodeInfo:
    episode_id: str
    length: int
    shard: str
    start: int
    """Offset of the episode's step 0 within its shard."""
    seed: int
    scene_id: int
    index: int
    """Position in StoreReader.episodes."""


class StoreReader:
    def __init__(self, store_dir: str | Path | S3Path):
        self.store_dir = store_path(store_dir)
        self.manifest: dict[str, Any] = read_manifest(self.store_dir)
        self.spec = StoreSpec.from_dict(self.manifest["spec"])
        self.format: str = self.manifest["format"]
        # Sorted by name so every process lists the episodes alike, whatever order workers finished in.
        self.shards: list[dict[str, Any]] = sorted(self.manifest["shards"], key=lambda s: s["name"])
        self._entries = {s["name"]: s for s in self.shards}
        self._listed = {e["id"]: e for s in self.shards for e in s["episodes"]}
        self.episodes: list[EpisodeInfo] = []
        for shard in self.shards:
            start = 0
            for e in shard["episodes"]:
                self.episodes.append(
                    EpisodeInfo(e["id"], e["length"], shard["name"], start, e["seed"], e["scene_id"], len(self.episodes))
                )
                start += e["length"]
        self._by_id = {}
        for info in self.episodes:
            self._by_id.setdefault(info.episode_id, info)  # duplicates are verify's to report
        self._open: OrderedDict[str, ZarrShardReader | TarShardReader] = OrderedDict()
        self._lock = threading.Lock()
        self._remote = isinstance(self.store_dir, S3Path)
        self._episode_cache: OrderedDict[tuple[int, tuple[str, ...]], dict[str, np.ndarray]] = OrderedDict()
        self._episode_cache_bytes = 0

    @property
    def num_steps(self) -> int:
        return sum(s["steps"] for s in self.shards)

    def episode(self, episode_id: str) -> EpisodeInfo:
        try:
            return self._by_id[episode_id]
        except KeyError:
            raise StoreError(
                f"no episode {episode_id!r} in {self.store_dir}; `f1 dataset stats {self.store_dir}` lists the store"
            ) from None

    def shard_reader(self, name: str) -> ZarrShardReader | TarShardReader:
        """The open reader of a manifest shard; StoreError when the file is missing or its size differs."""
        with self._lock:
            reader = self._open.get(name)
            if reader is not None:
                self._open.move_to_end(name)
                return reader
        entry = self._entries.get(name)
        if entry is None:
            raise StoreError(f"shard {name!r} is not in {self.store_dir / MANIFEST_NAME}; list the store's shards there")
        path = self.store_dir / name
        size = stored_bytes(path)
        if size is None:
            raise StoreError(f"{path} is in the manifest but missing; restore it, or re-collect into a new store")
        if size != entry["bytes"]:
            raise StoreError(
                f"{path} has {size} bytes, the manifest says {entry['bytes']}: truncated or changed; "
                "restore it, or re-collect into a new store"
            )
        if entry["format"] == "zarr":
            reader = ZarrShardReader(path, self.spec)
            if reader.num_steps != entry["steps"]:
                raise StoreError(f"{path} holds {reader.num_steps} steps, the manifest says {entry['steps']}; re-collect it")
        else:
            reader = TarShardReader.open(path, self.spec, entry["steps"])
        with self._lock:
            reader = self._open.setdefault(name, reader)  # another thread may have opened it meanwhile
            while len(self._open) > MAX_OPEN_SHARDS:
                self._open.popitem(last=False)  # dropped, not closed: a thread may still be reading it
        return reader

    def _keys(self, keys: Sequence[str] | None) -> tuple[str, ...]:
        if keys is None:
            return self.spec.keys
        unknown = [k for k in keys if k not in self.spec.keys]
        if unknown:
            raise ValueError(f"unknown keys {unknown}; the store has {list(self.spec.keys)}")
        return tuple(keys)

    def read_steps(
        self, info: EpisodeInfo, start: int, stop: int, keys: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Steps [start, stop) of one episode: {key: (stop - start, ...)}, fresh arrays."""
        if not 0 <= start <= stop <= info.length:
            raise IndexError(f"steps [{start}, {stop}) outside episode {info.episode_id!r} of length {info.length}")
        keys = self._keys(keys)
        if self._remote:
            whole = self._whole_episode(info, keys)
            return {k: whole[k][start:stop].copy() for k in keys}
        reader = self.shard_reader(info.shard)
        return reader.read(info.start + start, info.start + stop, keys)

    def _whole_episode(self, info: EpisodeInfo, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
        """All steps of one episode for `keys`, from the LRU or one read (object storage only)."""
        cache_key = (info.index, keys)
        with self._lock:
            arrays = self._episode_cache.get(cache_key)
            if arrays is not None:
                self._episode_cache.move_to_end(cache_key)
                return arrays
        arrays = self.shard_reader(info.shard).read(info.start, info.start + info.length, keys)
        size = sum(a.nbytes for a in arrays.values())
        with self._lock:
            if cache_key not in self._episode_cache:
                self._episode_cache[cache_key] = arrays
                self._episode_cache_bytes += size
            while self._episode_cache_bytes > REMOTE_EPISODE_CACHE_BYTES and len(self._episode_cache) > 1:
                _, old = self._episode_cache.popitem(last=False)
                self._episode_cache_bytes -= sum(a.nbytes for a in old.values())
        return arrays

    def read_episode(self, episode: str | EpisodeInfo, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        info = self.episode(episode) if isinstance(episode, str) else episode
        return self.read_steps(info, 0, info.length, keys)

    def episode_meta(self, info: EpisodeInfo) -> EpisodeMeta:
        """The full EpisodeMeta, randomisation included (read from the shard)."""
        reader = self.shard_reader(info.shard)
        if isinstance(reader, ZarrShardReader):
            return next(m for m in reader.metas() if m.episode_id == info.episode_id)
        listed = self._listed.get(info.episode_id, {})
        if "randomization" in listed:  # format version 2: the manifest holds the whole meta
            return EpisodeMeta(info.episode_id, info.seed, info.scene_id, dict(listed["randomization"]), info.length)
        meta = reader.episode_meta(info.start)
        if meta is None:
            raise StoreError(f"{self.store_dir / info.shard}: episode {info.episode_id!r} has no episode.json; re-collect it")
        return meta

    def iter_shard(self, name: str) -> Iterator[tuple[EpisodeMeta, dict[str, np.ndarray]]]:
        """(meta, arrays) of each episode of one shard, in order."""
        reader = self.shard_reader(name)
        if isinstance(reader, ZarrShardReader):
            yield from reader.iter_episodes()
            return
        for info in (e for e in self.episodes if e.shard == name):
            yield self.episode_meta(info), reader.read(info.start, info.start + info.length, self.spec.keys)

    def close(self) -> None:
        with self._lock:
            readers = list(self._open.values())
            self._open.clear()
            self._episode_cache.clear()
            self._episode_cache_bytes = 0
        for reader in readers:
            reader.close()

    def __enter__(self) -> "StoreReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def stored_bytes(path: Path | S3Path) -> int | None:
    """A shard's bytes (a Zarr shard's files together), None when it is missing."""
    if isinstance(path, S3Path):
        head = path.head()
        if head is not None:
            return int(head["size"])
        sizes = [size for _, size in path.list()]
        return sum(sizes) if sizes else None
    return shard_bytes(path) if path.exists() else None


def open_store(store_dir: str | Path | S3Path) -> StoreReader:
    """A reader over the store's manifest; StoreError (one line) when it is not a readable store."""
    return StoreReader(store_dir)
