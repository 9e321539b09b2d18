"""Checkpoints (format 3): `checkpoints/<n>.json`, what compaction n folded, created once under a new name.

    {"n": 7, "parts": [{"name": ..., "shards": 125, "episodes": 1000}, ...],
     "folded": {"n0w0": 41, "n0w1": 40, ...}, "retired": [{"name": ..., "since": 1764756000.0}],
     "created": "2026-12-03T10:00:00+0000"}

`parts` are the episode index parts (f1.datasets.episode_index) that hold
every shard the checkpoint folded; `folded` is, per worker, the highest
record seq folded (it never decreases from one checkpoint to the next);
`retired`, the parts that recent compactions merged away, with when, which
older checkpoints may still list (the cleanup keeps them for the retention
period). A checkpoint is complete once its JSON exists (its parts
are written before it). `_last_checkpoint` names the newest n as a hint
that spares a listing; a reader that finds it missing, stale or unreadable
lists the folder instead, and a store without any checkpoint is read from its
records alone.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

from f1.datasets.create_only import child_names, create_only, replace_file
from f1.datasets.s3 import S3Path
from f1.datasets.schema import CHECKPOINT_DIR, LAST_CHECKPOINT, StoreError


def checkpoint_path(store: Path | S3Path, n: int) -> Path | S3Path:
    return store / CHECKPOINT_DIR / f"{n:010d}.json"


def load_checkpoint(store: Path | S3Path, n: int) -> Optional[dict[str, Any]]:
    path = checkpoint_path(store, n)
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise StoreError(f"{path} is not a valid checkpoint ({exc}); delete it, readers fall back to the one before") from None


def checkpoint_numbers(store: Path | S3Path) -> list[int]:
    return sorted(int(n.split(".")[0]) for n in child_names(store / CHECKPOINT_DIR) if n.endswith(".json") and n[:-5].isdigit())


def newest_checkpoint(store: Path | S3Path) -> Optional[dict[str, Any]]:
    """The newest complete checkpoint, None when compaction never ran."""
    try:
        hint = int((store / LAST_CHECKPOINT).read_bytes())
    except (FileNotFoundError, ValueError):
        hint = None
    found = load_checkpoint(store, hint) if hint is not None else None
    if found is None:  # no hint, or it names a checkpoint that is gone: list
        numbers = checkpoint_numbers(store)
        return load_checkpoint(store, numbers[-1]) if numbers else None
    while (later := load_checkpoint(store, found["n"] + 1)) is not None:  # a hint lags while compactions run
        found = later
    return found


def write_checkpoint(
    store: Path | S3Path, n: int, parts: list[dict[str, Any]], folded: dict[str, int], retired: list[dict[str, Any]] = ()
) -> bool:
    """Create checkpoint n; False when another compactor created n first (the caller starts again from it)."""
    body = {"n": n, "parts": parts, "folded": dict(sorted(folded.items())), "retired": list(retired),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip
    try:
        create_only(checkpoint_path(store, n), json.dumps(body, indent=1).encode())
    except StoreError:  # CreateConflict: n was taken with other content
        return False
    try:
        replace_file(store / LAST_CHECKPOINT, str(n).encode())
    except OSError:
        pass  # only a hint
    return True
