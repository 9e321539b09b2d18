"""What every bench prints and appends to bench/RESULTS.md: the machine line and a dated markdown table.

The benches run as scripts from the repo root (`.venv/bin/python bench/bench_x.py`), so this
folder is on sys.path and they import it as `from results import machine, report`.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
REPO = Path(__file__).resolve().parents[1]
F1 = [str(REPO / ".venv" / "bin" / "f1")]
MEASUREMENT = ("measurement", "figure", "ratio")  # the columns of most benches


def machine() -> str:
    """Host, architecture, processor (or OS where Linux reports none) and CPU count."""
    return f"{platform.node()} {platform.machine()} {platform.processor() or platform.system()} {os.cpu_count()} CPUs"


def load_average() -> float:
    """The 1-minute load average: the machine is shared, so figures say how busy it was."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def report(name: str, setup: str, rows: Sequence[Sequence[str]], columns: Sequence[str] = MEASUREMENT, append: bool = True) -> str:
    """Print `## name — date`, the setup paragraph and the table; append the same text to RESULTS.md if `append`.

    The first column is left-aligned, the others (figures) right-aligned. Returns the text.
    """
    for row in rows:
        assert len(row) == len(columns), f"row {row!r} has {len(row)} cells, columns {columns!r} {len(columns)}"
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    table = ["| " + " | ".join(columns) + " |", "|---|" + "---:|" * (len(columns) - 1)]
    table += ["| " + " | ".join(row) + " |" for row in rows]
    text = f"## {name} — {stamp}\n\n{setup}\n\n" + "\n".join(table) + "\n\n"
    print(text)
    if append:
        with RESULTS.open("a") as f:
            f.write(text)
        print(f"appended to {RESULTS}")
    return text


def run_f1(bench: str, args: list, stage: str, timings: dict) -> None:
    """Run `f1 *args` from / (no repo-relative paths), print it under `bench`, and time it into timings[stage]."""
    start = time.perf_counter()
    print(f"[{bench}] {stage}: f1 {' '.join(map(str, args))}", flush=True)
    subprocess.run(F1 + [str(a) for a in args], check=True, cwd="/")
    timings[stage] = time.perf_counter() - start


def fresh_work_dir(work: Path) -> Path:
    """The resolved --work directory; a non-empty one stops the bench (its stages would resume, not start over)."""
    work = work.resolve()
    if work.exists() and any(work.iterdir()):
        sys.exit(f"error: --work {work} is not empty; pass an empty or new directory")
    return work
