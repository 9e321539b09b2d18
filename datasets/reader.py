"""StoreReader: one interface over Zarr and WebDataset stores, built from the store's metadata alone.

    store = open_store("data/run1")
    lengths = store.lengths                        # (E,) int64: one column of the episode index, nothing else
    info = store.episodes[0]                       # EpisodeInfo, built on demand, no image read
    chunk = store.read_steps(info, 0, 8, keys=("wrist_rgb", "action"))

A reader sees one snapshot of the store (f1.datasets.snapshot), taken when
it opens: the newest checkpoint plus the commit records after it (format 3),
or the manifest's entries (formats 1 and 2); `open_store(store, pin=...)`
opens the snapshot a training run pinned. Only committed shards exist for a
reader (a `.tmp` or a shard killed before its record is invisible). Shard handles open on first use and
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

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, overload

import numpy as np

from f1.datasets.manifest import read_header, shard_bytes
from f1.datasets.s3 import S3Path, store_path
from f1.datasets.schema import EpisodeMeta, StoreError, StoreSpec
from f1.datasets.snapshot import Snapshot, load_snapshot
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


class EpisodeList(Sequence[EpisodeInfo]):
    """StoreReader.episodes: every episode in canonical order; an EpisodeInfo is built when asked for, so a
    store of a million episodes opens without a million objects (ids, seeds and scenes load on first use)."""

    def __init__(self, snapshot: Snapshot, shard_names: np.ndarray):
        self._snapshot, self._shard_names = snapshot, shard_names

    def __len__(self) -> int:
        return self._snapshot.num_episodes

    @cached_property
    def _columns(self) -> tuple[np.ndarray, ...]:
        s = self._snapshot
        return (
            s.episode_column("id"), s.episode_column("length"), s.episode_shard_rows(),
            s.episode_column("start"), s.episode_column("seed"), s.episode_column("scene_id"),
        )  # fmt: skip

    @overload
    def __getitem__(self, i: int) -> EpisodeInfo: ...
    @overload
    def __getitem__(self, i: slice) -> list[EpisodeInfo]: ...
    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(f"episode index {i} outside [0, {len(self)})")
        i = int(i) % len(self)
        ids, lengths, shards, starts, seeds, scenes = self._columns
        return EpisodeInfo(ids[i], int(lengths[i]), self._shard_names[shards[i]], int(starts[i]), int(seeds[i]), int(scenes[i]), i)

    def __iter__(self) -> Iterator[EpisodeInfo]:
        return (self[i] for i in range(len(self)))


class StoreReader:
    def __init__(self, store_dir: str | Path | S3Path, pin: Optional[dict[str, int]] = None):
        self.store_dir = store_path(store_dir)
        self.manifest: dict[str, Any] = read_header(self.store_dir)
        """manifest.json (formats 1 and 2: with every shard; format 3: the spec and config only)."""
        self.spec = StoreSpec.from_dict(self.manifest["spec"])
        self.format: str = self.manifest["format"]
        self.snapshot = load_snapshot(self.store_dir, self.manifest, pin)
        self._shard_names = self.snapshot.shard_column("name")
        self.episodes = EpisodeList(self.snapshot, self._shard_names)
        self._open: OrderedDict[str, ZarrShardReader | TarShardReader] = OrderedDict()
        self._lock = threading.Lock()
        self._remote = isinstance(self.store_dir, S3Path)
        self._episode_cache: OrderedDict[tuple[int, tuple[str, ...]], dict[str, np.ndarray]] = OrderedDict()
        self._episode_cache_bytes = 0

    @property
    def snapshot_id(self) -> Optional[dict[str, int]]:
        """What a training run pins (`open_store(store, pin=reader.snapshot_id)` sees these episodes again):
        per worker, the highest commit record seen; None for a format-1/2 store (no log to pin)."""
        return dict(self.snapshot.identity) if int(self.manifest["format_version"]) >= 3 else None

    @cached_property
    def lengths(self) -> np.ndarray:
        """(E,) int64 every episode's length, in `episodes` order: one column of the index."""
        return self.snapshot.episode_column("length")

    @cached_property
    def shards(self) -> list[dict[str, Any]]:
        """Every shard by name: {name, path, format, steps, bytes, checksum, episodes} (`path` relative to the
        store; `episodes` the id, length, seed and scene_id of each it holds). Built on first use from the
        whole index: large stores are better read by column (`snapshot.shard_column`, `lengths`)."""
        return self.snapshot.shard_entries(randomization=False)

    @cached_property
    def _entries(self) -> dict[str, dict[str, Any]]:
        """name -> {name, path, format, steps, bytes}: what opening a shard checks."""
        cols = [self.snapshot.shard_column(c) for c in ("name", "path", "format", "steps", "bytes")]
        return {n: {"name": n, "path": p, "format": f, "steps": int(st), "bytes": int(b)} for n, p, f, st, b in zip(*cols)}

    @cached_property
    def _by_id(self) -> dict[str, int]:
        return {episode_id: i for i, episode_id in enumerate(self.snapshot.episode_column("id"))}

    @property
    def num_steps(self) -> int:
        return int(self.lengths.sum())

    def episode(self, episode_id: str) -> EpisodeInfo:
        try:
            return self.episodes[self._by_id[episode_id]]
        except KeyError:
            raise StoreError(
                f"no episode {episode_id!r} in {self.store_dir}; `f1 dataset stats {self.store_dir}` lists the store"
            ) from None

    def shard_path(self, name: str) -> Path | S3Path:
        return self.store_dir / self._entries[name]["path"]

    def shard_reader(self, name: str) -> ZarrShardReader | TarShardReader:
        """The open reader of a manifest shard; StoreError when the file is missing or its size differs."""
        with self._lock:
            reader = self._open.get(name)
            if reader is not None:
                self._open.move_to_end(name)
                return reader
        entry = self._entries.get(name)
        if entry is None:
            raise StoreError(f"shard {name!r} is not in {self.store_dir}; `f1 dataset verify {self.store_dir}` lists its shards")
        path = self.store_dir / entry["path"]
        size = stored_bytes(path)
        if size is None:
            raise StoreError(f"{path} is listed in the store but missing; restore it, or re-collect into a new store")
        if size != entry["bytes"]:
            raise StoreError(
                f"{path} has {size} bytes, the store lists {entry['bytes']}: truncated or changed; "
                "restore it, or re-collect into a new store"
            )
        if entry["format"] == "zarr":
            reader = ZarrShardReader(path, self.spec)
            if reader.num_steps != entry["steps"]:
                raise StoreError(f"{path} holds {reader.num_steps} steps, the store lists {entry['steps']}; re-collect it")
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
        randomization = json.loads(self._randomization[info.index])
        if randomization is not None:  # since format version 2 the store's metadata holds the whole meta
            return EpisodeMeta(info.episode_id, info.seed, info.scene_id, dict(randomization), info.length)
        meta = reader.episode_meta(info.start)
        if meta is None:
            raise StoreError(f"{self.store_dir / info.shard}: episode {info.episode_id!r} has no episode.json; re-collect it")
        return meta

    @cached_property
    def _randomization(self) -> np.ndarray:
        return self.snapshot.episode_column("randomization")

    def iter_shard(self, name: str) -> Iterator[tuple[EpisodeMeta, dict[str, np.ndarray]]]:
        """(meta, arrays) of each episode of one shard, in order."""
        reader = self.shard_reader(name)
        if isinstance(reader, ZarrShardReader):
            yield from reader.iter_episodes()
            return
        row = int(np.searchsorted(self._shard_names.astype(str), name))
        for i in np.flatnonzero(self.snapshot.episode_shard_rows() == row):
            info = self.episodes[int(i)]
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


def open_store(store_dir: str | Path | S3Path, pin: Optional[dict[str, int]] = None) -> StoreReader:
    """A reader over the store's snapshot now (or the pinned one, `StoreReader.snapshot_id`);
    StoreError (one line) when it is not a readable store."""
    return StoreReader(store_dir, pin)
