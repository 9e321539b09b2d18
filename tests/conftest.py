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


@pytest.fixture(scope="session", autouse=True)
def token_cache(tmp_path_factory):
    """Token stores of s3:// stores go to $F1_TOKEN_CACHE (default ~/.cache/f1/tokens): a session folder, not the home."""
    folder = tmp_path_factory.mktemp("token-cache")
    os.environ["F1_TOKEN_CACHE"] = str(folder)
    return folder


@pytest.fixture
def f1_cli():
    return run_f1


@pytest.fixture(scope="session")
def ray_address():
    """One local Ray instance for the whole session, shared by the tests that need it: sized for this
    2-core machine (2 CPUs, no GPU), on 127.0.0.1 only, no dashboard. Tests run
    `f1 collect --backend ray --ray-address <it>`; this process is its first driver and stops it at the end."""
    import logging

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # Ray's single-machine mode: 127.0.0.1, read at import
    import ray

    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
