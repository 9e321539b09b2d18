"""A worker's failure as the one console line a user reads: the root cause, and what to do about a full disk;
a whole run's loss (`RunLost`) likewise.

The full traceback goes to a log file (the collect parent writes it and names
it on the same line); the console never shows one.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import Optional

from f1.shared.errors import UserError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class RunLost(Exception):
    """The run as a whole cannot go on (a Ray run's own node lost): `line` says why in one line, without the
    rerun command (the CLI adds it); `trace` goes to the log file."""

    def __init__(self, line: str, trace: str):
        super().__init__(line)
        self.line, self.trace = line, trace


def free_mb(path: Path) -> float:
    """Free space on the filesystem holding `path` (or its nearest existing parent), in MB."""
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free / 1e6


def disk_full_error(exc: BaseException) -> Optional[OSError]:
    """The 'no space' OSError in `exc`'s chain (zarr and threads may wrap it), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def disk_full_line(store: Path) -> str:
    return (
        f"No space left on device: {store} has {free_mb(store):.1f} MB free; finished shards are kept: "
        "free some space, then rerun the same command to resume"
    )


def root_cause(exc: BaseException, store: Path) -> str:
    """One line: a full disk with the store's free space, a UserError's own message, else the type and message."""
    if disk_full_error(exc) is not None:
        return disk_full_line(store)
    if isinstance(exc, UserError):
        return str(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
