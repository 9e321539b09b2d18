"""Files that are created once and never rewritten: the commit protocol's one primitive (format 3).

`create_only(path, data)` makes `path` hold `data` if nothing is there yet.
Locally the bytes go to a temporary name in the same folder, are fsynced, and
are hard-linked to the final name (link fails when the name exists, so of two
writers exactly one wins; a reader never sees a half-written file), then the
folder is fsynced so the new name survives a power loss. On object storage it
is one PUT with If-None-Match: *. When the name exists with the same bytes
the call succeeds (a retried commit); with other bytes it raises
CreateConflict.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from f1.datasets.s3 import S3Path
from f1.datasets.schema import StoreError


class CreateConflict(StoreError):
    """The name exists with other content: two writers claimed one name (a bug or a misconfigured worker name)."""


def create_only(path: Path | S3Path, data: bytes, fsync: bool = True) -> bool:
    """Create `path` holding `data`; True when this call created it, False when it was there with the same bytes."""
    if isinstance(path, S3Path):
        try:
            path.put(data, mode="create")
            return True
        except FileExistsError:
            return _same_or_conflict(path, data)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return _same_or_conflict(path, data)
        if fsync:
            fsync_dir(path.parent)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _same_or_conflict(path: Path | S3Path, data: bytes) -> bool:
    if path.read_bytes() == data:
        return False
    raise CreateConflict(f"{path} exists with other content; two writers used one name: give each worker its own name")


def replace_file(path: Path | S3Path, data: bytes) -> None:
    """Write `path` whole, replacing what is there (only for hints that no reader depends on)."""
    if isinstance(path, S3Path):
        path.put(data)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def child_names(folder: Path | S3Path) -> list[str]:
    """The names directly under `folder` (files and folders), [] when it does not exist; temporary names skipped."""
    try:
        return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []


def modified_times(folder: Path | S3Path) -> dict[str, float]:
    """Name -> last-modified time (seconds since the epoch) of each file directly in `folder`: one listing."""
    if isinstance(folder, S3Path):
        return {rel: t for rel, t in folder.list_times() if "/" not in rel and not rel.startswith(".")}
    out = {}
    try:
        for entry in os.scandir(folder):
            if entry.is_file() and not entry.name.startswith("."):
                try:
                    out[entry.name] = entry.stat().st_mtime
                except FileNotFoundError:  # deleted while listed
                    pass
    except FileNotFoundError:
        pass
    return out
