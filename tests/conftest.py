"""Shared test helpers. Tests run the real components at tiny sizes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The installed console script, not `python -m f1`: `-m` would put the working
# directory on sys.path, where the repo's top-level folders are not packages.
F1 = [str(Path(sys.executable).parent / "f1")]


def run_f1(*args: str, cwd: Path | None = None, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real `f1` CLI in a subprocess and capture its output."""
    return subprocess.run(
        [*F1, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def f1_cli():
    return run_f1
