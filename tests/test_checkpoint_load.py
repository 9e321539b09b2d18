"""Checkpoints are input: a file that needs more than tensors and plain data is refused before anything in it runs."""

from __future__ import annotations

import os

import pytest
import torch

from f1.train.checkpoint import METRICS_FILE, MODEL_FILE, TRAINING_STATE_FILE, CheckpointError, load_checkpoint

from conftest import run_f1


class Payload:
    """Unpickling this calls os.makedirs(marker): what a crafted checkpoint would do with something worse."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def crafted_checkpoint(root, poisoned: str, marker) -> "os.PathLike":
    ckpt = root / "checkpoint-1"
    ckpt.mkdir()
    files = {
        MODEL_FILE: {"model": {"w": torch.zeros(2)}, "model_config": {"phase": "teacher"}},
        TRAINING_STATE_FILE: {"step": 1, "world_size": 1, "batch_size": 1, "ranks": []},
        METRICS_FILE: {},
    }
    files[poisoned] = {**files[poisoned], "extra": Payload(marker)}
    for name, obj in files.items():
        torch.save(obj, ckpt / name)
    return ckpt


def test_a_checkpoint_that_pickles_a_callable_is_refused_without_calling_it(tmp_path):
    marker = tmp_path / "the-payload-ran"
    ckpt = crafted_checkpoint(tmp_path, MODEL_FILE, marker)
    result = run_f1("evaluate", "--checkpoint", ckpt, "--output-dir", tmp_path / "eval")
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {ckpt / MODEL_FILE} asks to load") and "makedirs" in line and "refused" in line
    assert not marker.exists(), "unpickling ran the payload"

    # The training state goes through the same door (resume).
    other = tmp_path / "other"
    other.mkdir()
    ckpt = crafted_checkpoint(other, TRAINING_STATE_FILE, marker)
    with pytest.raises(CheckpointError, match="asks to load .*makedirs"):
        load_checkpoint(ckpt)
    assert not marker.exists()
