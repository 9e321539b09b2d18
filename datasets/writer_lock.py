"""One writer per (store, node rank) at a time (DESIGN.md section 3): a lock file naming its holder.

`<store>/writer-n<rank>.lock` holds {"host", "pid", "pid_started", "since"}.
It is checked and written under the manifest's flock, so two runs starting
at once cannot both take it. A holder on this host is alive when its pid runs
and started when the lock says (after a reboot the pid may be reused by
another process, which started later); a dead holder's lock (kill -9, a
reboot) is taken over. A holder on another host cannot be checked from here,
so its lock stands until it ends or the user removes the file. Other node
ranks have their own lock files and write the store alongside.

On object storage (an S3Path store) the lock object is created with
If-None-Match: * and taken over from a dead holder with If-Match on its
ETag, so of two runs starting at once only one gets it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import psutil

from f1.datasets.manifest import manifest_lock
from f1.datasets.s3 import ConflictError, S3Path
from f1.shared.errors import UserError

START_TOLERANCE_S = 1.0  # create_time is rounded differently by /proc readers


class StoreBusy(UserError):
    """Another live run writes this store with the same node rank."""


def lock_path(store_dir: Path | S3Path, node_rank: int) -> Path | S3Path:
    name = f"writer-n{node_rank}.lock"
    return store_dir / name if isinstance(store_dir, S3Path) else Path(store_dir) / name


def _me() -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "pid_started": psutil.Process().create_time(),
        "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _read(path: Path) -> Optional[dict[str, Any]]:
    try:
        holder = json.loads(path.read_text())
        return holder if {"host", "pid", "pid_started", "since"} <= set(holder) else None
    except (FileNotFoundError, ValueError):
        return None  # gone, or half-written by a writer that died mid-write: nobody holds it


def _alive(holder: dict[str, Any]) -> bool:
    if holder["host"] != socket.gethostname():
        return True  # cannot be checked from here
    try:
        return abs(psutil.Process(int(holder["pid"])).create_time() - float(holder["pid_started"])) < START_TOLERANCE_S
    except psutil.NoSuchProcess:
        return False


def _busy(store_dir: Any, node_rank: int, holder: dict[str, Any], path: Any) -> StoreBusy:
    remote = "" if holder["host"] == socket.gethostname() else f"; if that run is dead, remove {path}"
    return StoreBusy(
        f"{store_dir} is being written for node rank {node_rank} by pid {holder['pid']} on {holder['host']} "
        f"since {holder['since']}; wait for it to finish, stop it, or give this run another --out{remote}"
    )


def _parse(data: bytes) -> Optional[dict[str, Any]]:
    try:
        holder = json.loads(data)
        return holder if {"host", "pid", "pid_started", "since"} <= set(holder) else None
    except ValueError:
        return None


@contextlib.contextmanager
def _s3_writer_lock(store_dir: S3Path, node_rank: int) -> Iterator[None]:
    path = lock_path(store_dir, node_rank)
    me = _me()
    mine = json.dumps(me).encode()
    try:
        path.put(mine, mode="create")
    except FileExistsError:
        found = path.read_with_etag()
        holder = _parse(found[0]) if found is not None else None
        if holder is not None and _alive(holder):
            raise _busy(store_dir, node_rank, holder, path) from None
        try:  # a dead holder's lock (or one deleted meanwhile): take it over, unless another run just did
            path.put(mine, mode={"e_tag": found[1]}) if found is not None else path.put(mine, mode="create")
        except (ConflictError, FileExistsError):
            holder = _parse(path.read_bytes()) or {"pid": "?", "host": "?", "since": "just now"}
            raise _busy(store_dir, node_rank, holder, path) from None
    try:
        yield
    finally:
        found = path.read_with_etag()
        if found is not None and _parse(found[0]) == me:
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def writer_lock(store_dir: Path | S3Path, node_rank: int) -> Iterator[None]:
    """Hold the store's lock for `node_rank` for the block; StoreBusy (one line, exit 2) if a live run holds it."""
    if isinstance(store_dir, S3Path):
        with _s3_writer_lock(store_dir, node_rank):
            yield
        return
    path = lock_path(store_dir, node_rank)
    me = _me()
    with manifest_lock(Path(store_dir)):
        holder = _read(path)
        if holder is not None and _alive(holder):
            raise _busy(store_dir, node_rank, holder, path)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(me))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)  # only left when the write failed (a full disk)
    try:
        yield
    finally:
        with manifest_lock(Path(store_dir)):
            if _read(path) == me:
                path.unlink()
