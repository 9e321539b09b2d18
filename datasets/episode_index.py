"""The episode index (format 3): shard and episode metadata as columns, in Parquet parts under `index/`.

A part is two immutable files written by a compaction (f1.datasets.compact):

    index/<part>.shards.parquet     name, path, format, steps, bytes, checksum      one row per shard
    index/<part>.episodes.parquet   id, id_hash, length, start, shard, seed,        one row per episode
                                    scene_id, randomization (JSON text)

`shard` is the row of the episode's shard in the same part's shards table,
`start` the offset of its step 0 in that shard, `id_hash` a 64-bit hash of
the id (duplicates are found on it without reading the ids). A reader reads
only the columns it needs: a replay plan's lengths are one column chunk per
part, not the randomisation behind them. Parquet was chosen over Zarr
arrays by measurement (bench/bench_store_scale.py, "episode index").

`entries_part(entries)` builds the same columns in memory from commit records
(or a format-1/2 manifest), so readers treat every source alike.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import uuid
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from f1.datasets.create_only import create_only
from f1.datasets.s3 import S3Path
from f1.datasets.schema import INDEX_DIR

SHARD_COLUMNS = ("name", "path", "format", "steps", "bytes", "checksum")
EPISODE_COLUMNS = ("id", "id_hash", "length", "start", "shard", "seed", "scene_id", "randomization")
_INT_COLUMNS = {"steps", "bytes", "id_hash", "length", "start", "shard", "seed", "scene_id"}
TABLES = ("shards", "episodes")


def id_hashes(ids: Iterable[str]) -> np.ndarray:
    """(E,) int64: the first 8 bytes of each id's BLAKE2b digest."""
    return np.array(
        [int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(), "little", signed=True) for i in ids], np.int64
    )


class Part:
    """One batch of shards as columns; `column(table, name)` gives a numpy array (strings as object arrays)."""

    num_shards: int
    num_episodes: int

    def column(self, table: str, name: str) -> np.ndarray:
        raise NotImplementedError


class EntriesPart(Part):
    """Columns built in memory from manifest entries or commit records (the records a checkpoint has not folded)."""

    def __init__(self, entries: list[dict[str, Any]]):
        self.entries = entries
        self.num_shards = len(entries)
        self.num_episodes = sum(len(e["episodes"]) for e in entries)
        self._cache: dict[tuple[str, str], np.ndarray] = {}

    def column(self, table: str, name: str) -> np.ndarray:
        key = (table, name)
        if key not in self._cache:
            self._cache[key] = self._build(table, name)
        return self._cache[key]

    def _build(self, table: str, name: str) -> np.ndarray:
        if table == "shards":
            values = [e.get("path", e["name"]) if name == "path" else e[name] for e in self.entries]
            return np.array(values, np.int64 if name in _INT_COLUMNS else object)
        if name == "id_hash":
            return id_hashes(self.column("episodes", "id"))
        if name in ("start", "shard"):
            starts, shards = [], []
            for row, entry in enumerate(self.entries):
                lengths = [e["length"] for e in entry["episodes"]]
                starts += np.concatenate([[0], np.cumsum(lengths)[:-1]]).tolist() if lengths else []
                shards += [row] * len(lengths)
            return np.array(starts if name == "start" else shards, np.int64)
        key = "id" if name == "id" else name
        values = [
            json.dumps(e.get("randomization", None)) if name == "randomization" else e[key]
            for entry in self.entries
            for e in entry["episodes"]
        ]
        return np.array(values, np.int64 if name in _INT_COLUMNS else object)


class ParquetPart(Part):
    """A part written by a compaction: columns read on demand (and kept) from its two Parquet files."""

    def __init__(self, store: Path | S3Path, info: dict[str, Any]):
        self.store, self.name = store, info["name"]
        self.num_shards, self.num_episodes = int(info["shards"]), int(info["episodes"])
        self._cache: dict[tuple[str, str], np.ndarray] = {}

    def path(self, table: str) -> Path | S3Path:
        return part_path(self.store, self.name, table)

    def column(self, table: str, name: str) -> np.ndarray:
        key = (table, name)
        if key not in self._cache:
            self._cache[key] = arrow_to_numpy(read_table(self.path(table), [name]).column(name), name)
        return self._cache[key]

    def table(self, table: str) -> Any:
        return read_table(self.path(table), None)


def arrow_to_numpy(col: Any, name: str) -> np.ndarray:
    """(N,) int64 or object array of a chunked Arrow column. Not Arrow's to_numpy: it imports pandas (1-3 s, on every
    open); the int columns are int64 without nulls (write_part writes them from int64 arrays), read as their buffers."""
    if name not in _INT_COLUMNS:
        return np.array(col.to_pylist(), object)
    chunks = [np.frombuffer(c.buffers()[1], np.int64, len(c), c.offset * 8) for c in col.chunks if len(c)]
    assert str(col.type) == "int64" and col.null_count == 0, (name, col.type)
    return np.concatenate(chunks) if chunks else np.zeros(0, np.int64)


def part_path(store: Path | S3Path, part: str, table: str) -> Path | S3Path:
    return store / INDEX_DIR / f"{part}.{table}.parquet"


class _RangedFile(io.RawIOBase):
    """A seekable read-only file over an object: Parquet reads the footer, then only the column chunks asked for."""

    def __init__(self, path: S3Path):
        self.path, self.pos, self.length = path, 0, path.size()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = {0: offset, 1: self.pos + offset, 2: self.length + offset}[whence]
        return self.pos

    def readinto(self, buffer: Any) -> int:
        n = max(0, min(len(buffer), self.length - self.pos))
        data = self.path.read_range(self.pos, n)
        buffer[: len(data)] = data
        self.pos += len(data)
        return len(data)


def read_table(path: Path | S3Path, columns: list[str] | None) -> Any:
    # ParquetFile, not pq.read_table: the latter imports pyarrow.dataset and pandas (a second, on every open).
    import pyarrow.parquet as pq

    source = _RangedFile(path) if isinstance(path, S3Path) else str(path)
    return pq.ParquetFile(source).read(columns=columns)


def part_tables(part: Part) -> dict[str, Any]:
    """Both tables of a part as pyarrow Tables (every column)."""
    import pyarrow as pa

    if isinstance(part, ParquetPart):
        return {t: part.table(t) for t in TABLES}
    return {
        "shards": pa.table({c: part.column("shards", c) for c in SHARD_COLUMNS}),
        "episodes": pa.table({c: part.column("episodes", c) for c in EPISODE_COLUMNS}),
    }


def concat_parts(parts: list[Part]) -> dict[str, Any]:
    """One part's tables holding every row of `parts`, in order (episode `shard` rows renumbered)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    shards, episodes, offset = [], [], 0
    for part in parts:
        tables = part_tables(part)
        ep = tables["episodes"]
        ep = ep.set_column(ep.schema.get_field_index("shard"), "shard", pc.add(ep.column("shard").cast(pa.int64()), offset))
        shards.append(tables["shards"].cast(_schema("shards")))
        episodes.append(ep.cast(_schema("episodes")))
        offset += part.num_shards
    return {"shards": pa.concat_tables(shards), "episodes": pa.concat_tables(episodes)}


def _schema(table: str) -> Any:
    import pyarrow as pa

    columns = SHARD_COLUMNS if table == "shards" else EPISODE_COLUMNS
    return pa.schema([(c, pa.int64() if c in _INT_COLUMNS else pa.string()) for c in columns])


def write_part(store: Path | S3Path, tables: dict[str, Any]) -> dict[str, Any]:
    """Write both tables under a new part name (create-only); the checkpoint's description of the part."""
    import pyarrow.parquet as pq

    name = f"{time.time_ns():x}-{uuid.uuid4().hex[:8]}"
    for table in TABLES:
        sink = io.BytesIO()
        pq.write_table(tables[table].cast(_schema(table)), sink, compression="zstd", row_group_size=1 << 20)
        create_only(part_path(store, name, table), sink.getvalue(), fsync=not isinstance(store, S3Path))
    return {"name": name, "shards": tables["shards"].num_rows, "episodes": tables["episodes"].num_rows}


def delete_part(store: Path | S3Path, name: str) -> None:
    for table in TABLES:
        part_path(store, name, table).unlink(missing_ok=True)
