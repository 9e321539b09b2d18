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


def save_fresh_teacher(directory: Path, cfg) -> Path:
    """A freshly initialised world model + tokenizer (torch seed 0) in the teacher's checkpoint layout
    (f1.train.offline.teacher): the tokenizer in <directory>/tokenizer, the checkpoint in <directory>/teacher.
    For the phases that start from a teacher; training one is the teacher tests' job."""
    from dataclasses import asdict

    import torch

    from f1.shared.normalizers import Normalizer
    from f1.train.checkpoint import save_checkpoint
    from f1.train.models.tokenizer import FSQTokenizer
    from f1.train.models.world_model import WorldModel

    torch.manual_seed(0)
    tokenizer = FSQTokenizer.from_config(cfg)
    tokenizer.save(directory / "tokenizer")
    world_model = WorldModel(cfg, tokenizer.n_tokens, tokenizer.levels)
    normalizers = {"action": Normalizer([0.0] * 8, [0.5] * 8, 8), "state": Normalizer([0.0] * 15, [0.3] * 15, 15)}
    model_config = {
        "phase": "teacher",
        "n_tokens": tokenizer.n_tokens,
        "levels": list(tokenizer.levels),
        "tokenizer_path": str(directory / "tokenizer"),
        "normalizers": {k: asdict(v) for k, v in normalizers.items()},
        "config": cfg.to_dict(),
    }
    state = {"step": 1, "world_size": 1, "batch_size": 1, "ranks": [{"rank": 0}]}
    return save_checkpoint(directory / "teacher", 1, model_state=world_model.state_dict(), model_config=model_config, training_state=state, metrics={})


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
def ray_cluster():
    """One Ray cluster for the whole session, shared by the tests that need it: a head node and a worker node
    on this machine, 1 CPU and no GPU each (so that two CPU actors land one on each node), on 127.0.0.1 only, no
    dashboard. Tests run `f1 collect --backend ray --ray-address <its address>`; a driver started there
    connects to the head node's raylet (Ray prefers the head among nodes on one host). A test that removes
    the worker node adds one back (`ray_worker_node`). This process starts and stops the nodes; it is no driver."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # Ray's single-machine mode: 127.0.0.1, read at import
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=1, num_gpus=0, include_dashboard=False))
    try:
        cluster.add_node(num_cpus=1, num_gpus=0)
        yield cluster
    finally:
        cluster.shutdown()


@pytest.fixture
def ray_address(ray_cluster):
    """The session cluster's address, with its worker node there (added back if a test removed it)."""
    ray_worker_node(ray_cluster)
    return ray_cluster.address


def ray_worker_node(cluster):
    """The cluster's worker node: the one it has, or a new one of 1 CPU."""
    return next(iter(cluster.worker_nodes), None) or cluster.add_node(num_cpus=1, num_gpus=0)
