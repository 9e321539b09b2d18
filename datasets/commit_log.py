"""Commit records (format 3): `log/<worker>/<chunk>/<seq>.json`, one per shard, created once, never rewritten.

A record holds the shard's entry (name, path, format, steps, bytes, checksum
and its episodes' metas, as a format-2 manifest entry did, plus the shard's
path in the store). The worker owns its name (one writer per worker at a
time, f1.datasets.writer_lock), so no two writers ever compete for a record;
a worker's records appear in seq order, since it commits one shard after the
other. The shard is in the store iff its record exists.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from f1.datasets.create_only import child_names, create_only
from f1.datasets.s3 import S3Path
from f1.datasets.schema import LOG_DIR, RECORDS_PER_CHUNK, StoreError, parse_shard_name

RECORD_SUFFIX = ".json"


def record_path(store: Path | S3Path, worker: str, seq: int) -> Path | S3Path:
    return store / LOG_DIR / worker / f"{seq // RECORDS_PER_CHUNK:04d}" / f"{seq:09d}{RECORD_SUFFIX}"


def encode(entry: dict[str, Any]) -> bytes:
    """One canonical byte string per entry, so a retried commit of the same shard finds identical bytes."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()


def commit(store: Path | S3Path, entry: dict[str, Any], fsync: bool = True) -> bool:
    """Enter the shard in the store: create its record. True when created, False when it was already there
    with the same content (a retried commit); CreateConflict when there with other content."""
    worker, seq, _, _ = parse_shard_name(entry["name"])
    return create_only(record_path(store, worker, seq), encode(entry), fsync=fsync)


def writers(store: Path | S3Path) -> list[str]:
    """Every worker that has a folder in the log."""
    return child_names(store / LOG_DIR)


def _seqs(folder: Path | S3Path) -> list[int]:
    return sorted(int(n[: -len(RECORD_SUFFIX)]) for n in child_names(folder) if n.endswith(RECORD_SUFFIX))


def _chunks(store: Path | S3Path, worker: str) -> list[int]:
    return sorted(int(n) for n in child_names(store / LOG_DIR / worker) if n.isdigit())


def records_after(store: Path | S3Path, worker: str, after: int) -> list[tuple[int, dict[str, Any]]]:
    """(seq, entry) of the worker's records with seq > `after`, in seq order; only chunk folders that can hold them are listed."""
    out = []
    for chunk in _chunks(store, worker):
        if (chunk + 1) * RECORDS_PER_CHUNK - 1 <= after:
            continue
        folder = store / LOG_DIR / worker / f"{chunk:04d}"
        for seq in _seqs(folder):
            if seq > after:
                out.append((seq, read_record(store, worker, seq)))
    return out


def read_record(store: Path | S3Path, worker: str, seq: int) -> dict[str, Any]:
    path = record_path(store, worker, seq)
    try:
        return json.loads(path.read_bytes())
    except ValueError as exc:
        raise StoreError(f"{path} is not a valid commit record ({exc}); restore it from a backup or delete it and its shard") from None


def highest_seq(store: Path | S3Path, worker: str) -> int:
    """The worker's highest record seq still in the log, -1 when it has none."""
    for chunk in reversed(_chunks(store, worker)):
        seqs = _seqs(store / LOG_DIR / worker / f"{chunk:04d}")
        if seqs:
            return seqs[-1]
    return -1
