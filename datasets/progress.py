"""The one progress bar of the `f1 dataset` commands: a rich bar on stderr counting items (episodes, shards)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Optional


@contextmanager
def count_bar(label: str, total: int, unit: str = "episodes", show: Optional[bool] = None, remaining: bool = False) -> Iterator[Callable[[], None]]:
    """Yield `advance()`, one call per item done; the bar shows only where `show` (default: stderr is a terminal)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = [TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn(unit), TimeElapsedColumn()]
    if remaining:
        columns.append(TimeRemainingColumn())
    show = sys.stderr.isatty() if show is None else show
    with Progress(*columns, console=Console(stderr=True), disable=not show) as bar:
        task = bar.add_task(label, total=total)
        yield lambda: bar.advance(task)
