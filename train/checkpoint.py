"""Checkpoints (DESIGN §7), shared by every training phase.

```
<output_dir>/checkpoint-<step>/
    model.pt            {"model": state dict, "model_config": dict}
    peft_adapter/       only when LoRA is used (written by the phase's `write_adapter`)
    training_state.pt   {"optimizer", "scheduler", "step", "epoch", "chunk", "config", "world_size",
                         "batch_size", ..., "ranks": [per rank {"rank", "rng", "memory", "lane_cursors", ...}]}
    metrics.pt          the last logged metrics
```
One dict per file, nanoGPT style. A checkpoint is written under
`.checkpoint-<step>.tmp` and renamed when every file is on disk, so a crash
never leaves a `checkpoint-<step>` that resume would pick; `latest_checkpoint`
also skips any directory missing a file. Only rank 0 writes: the per-rank
part (RNG, memory, lane cursors) is gathered to it first by `gather_rank_states`,
which every rank must call.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from f1.shared.errors import UserError

CHECKPOINT_PREFIX = "checkpoint-"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
MODEL_FILE = "model.pt"
TRAINING_STATE_FILE = "training_state.pt"
METRICS_FILE = "metrics.pt"
PEFT_ADAPTER_DIR = "peft_adapter"
REQUIRED_FILES = (MODEL_FILE, TRAINING_STATE_FILE, METRICS_FILE)


class CheckpointError(UserError):
    """A checkpoint is missing, incomplete or does not fit this run."""


# Checkpoints are shared, and unpickling may call anything the file names: every file is read with
# weights_only=True (tensors and plain data), plus the one other type f1 writes: numpy's RNG state,
# a uint32 array.
_numpy_core = getattr(np, "_core", None) or np.core  # numpy 2 renamed np.core
SAFE_GLOBALS = [_numpy_core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
# torch names what it refused in one of these phrasings
_UNSUPPORTED = re.compile(r"[Uu]nsupported (?:global: )?GLOBAL ([\w.]+)|but got (<class '[^']+'>)")


def load_file(path: Path) -> Any:
    """One checkpoint file onto the CPU; CheckpointError, before anything in it runs, if it needs more than
    tensors, plain data and SAFE_GLOBALS (e.g. a pickled function)."""
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _UNSUPPORTED.search(str(exc))
        what = next(g for g in found.groups() if g) if found else "an object f1 never writes"
        raise CheckpointError(
            f"{path} asks to load {what}, which could run code; refused (f1 loads only tensors and plain data): "
            "use a checkpoint written by f1"
        ) from None


@dataclass
class Checkpoint:
    """A loaded checkpoint: the three dicts and where they came from."""

    path: Path
    model: dict[str, Any]
    training_state: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.training_state["step"])

    def rank_state(self, rank: int) -> dict[str, Any]:
        ranks = self.training_state["ranks"]
        assert ranks[rank]["rank"] == rank, ("per-rank states out of order", rank, [r["rank"] for r in ranks])
        return ranks[rank]


# --------------------------------------------------------------------------- RNG


def capture_rng_state() -> dict[str, Any]:
    """Every RNG a training step may draw from: python, numpy, torch CPU and (if in use) CUDA."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- per-rank state


def to_cpu(value: Any) -> Any:
    """Tensors (nested in dicts, lists, tuples) moved to the CPU and detached, for pickling and gathering."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_cpu(v) for v in value)
    return value


def gather_rank_states(local_state: dict[str, Any], rank: int, world_size: int) -> list[dict[str, Any]]:
    """All ranks' states, in rank order, on every rank (a collective: every rank must call it)."""
    local_state = {**to_cpu(local_state), "rank": rank}
    if world_size == 1:
        return [local_state]
    import torch.distributed as dist

    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, local_state)  # gloo on the CPU, nccl on GPUs (tensors are on the CPU)
    assert [s["rank"] for s in gathered] == list(range(world_size)), [s["rank"] for s in gathered]
    return gathered


def state_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over a state dict's names and bytes: equal on every rank while data-parallel ranks stay in step."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        h.update(name.encode())
        h.update(state_dict[name].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- writing


def checkpoint_path(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / f"{CHECKPOINT_PREFIX}{step}"


def _save(obj: Any, path: Path) -> None:
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())  # the rename below must not publish a file still in the page cache only


def save_checkpoint(
    output_dir: str | Path,
    step: int,
    *,
    model_state: dict[str, Any],
    model_config: dict[str, Any],
    training_state: dict[str, Any],
    metrics: dict[str, Any],
    write_adapter: Optional[Callable[[Path], None]] = None,
) -> Path:
    """Write checkpoint-<step> atomically (rank 0 only); returns its path.

    `training_state` must hold at least step, world_size, batch_size and the
    gathered `ranks` list. `write_adapter(dir)` writes the PEFT adapter, when LoRA is used.
    """
    for key in ("step", "world_size", "batch_size", "ranks"):
        assert key in training_state, ("training_state lacks a required key", key, sorted(training_state))
    assert training_state["step"] == step, ("step mismatch", training_state["step"], step)
    assert len(training_state["ranks"]) == training_state["world_size"], (
        len(training_state["ranks"]), training_state["world_size"],
    )
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoint_path(output_dir, step)
    tmp = output_dir / f".{final.name}.tmp"
    if tmp.exists():  # left by a crash during an earlier save of this step
        shutil.rmtree(tmp)
    tmp.mkdir()
    _save({"model": to_cpu(model_state), "model_config": model_config}, tmp / MODEL_FILE)
    if write_adapter is not None:
        write_adapter(tmp / PEFT_ADAPTER_DIR)
    _save(to_cpu(metrics), tmp / METRICS_FILE)
    # training_state.pt last: its presence is what marks a complete checkpoint.
    _save(to_cpu(training_state), tmp / TRAINING_STATE_FILE)
    if final.exists():  # the same step saved again (a resumed run ending where it resumed): replace it
        old = output_dir / f".{final.name}.old"
        if old.exists():
            shutil.rmtree(old)
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)
    _fsync_dir(output_dir)
    return final


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- finding and reading


def is_complete(path: Path) -> bool:
    return path.is_dir() and all((path / name).is_file() for name in REQUIRED_FILES)


def latest_checkpoint(output_dir: str | Path) -> Optional[Path]:
    """The complete checkpoint-<step> with the highest step in output_dir, or None.

    Temporary `.checkpoint-*.tmp` dirs never match the name; a checkpoint-<step>
    missing any required file is skipped.
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    found = []
    for child in output_dir.iterdir():
        match = CHECKPOINT_PATTERN.match(child.name)
        if match and is_complete(child):
            found.append((int(match.group(1)), child))
    return max(found)[1] if found else None


def resolve_resume(output_dir: str | Path, resume: Optional[str | Path], auto_resume: bool) -> Optional[Path]:
    """The checkpoint to resume from: `resume` if given (must be complete), else the newest with auto_resume."""
    if resume is not None:
        path = Path(resume)
        if not path.is_dir():
            raise CheckpointError(f"--resume {path} is not a directory; pass a checkpoint-<step> directory")
        missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
        if missing:
            raise CheckpointError(
                f"--resume {path} is incomplete (missing {', '.join(missing)}); pass a complete checkpoint-<step> "
                "directory or use --auto_resume"
            )
        return path
    if auto_resume:
        return latest_checkpoint(output_dir)
    return None


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a complete checkpoint onto the CPU."""
    path = Path(path)
    if not is_complete(path):
        raise CheckpointError(f"checkpoint {path} is incomplete; pass a complete checkpoint-<step> directory")
    return Checkpoint(path, load_file(path / MODEL_FILE), load_file(path / TRAINING_STATE_FILE), load_file(path / METRICS_FILE))


def check_resume_compatible(path: Path, training_state: dict[str, Any], world_size: int, batch_size: int) -> None:
    """A resume must keep the world size and batch size: the lane plan and the saved memories depend on both."""
    saved_world, saved_batch = training_state["world_size"], training_state["batch_size"]
    if saved_world != world_size:
        raise CheckpointError(
            f"checkpoint {path} was written by {saved_world} processes, this run has {world_size}; "
            f"resume with {saved_world} processes or start a new output dir"
        )
    if saved_batch != batch_size:
        raise CheckpointError(
            f"checkpoint {path} has training.batch_size={saved_batch}, this run has {batch_size}; "
            f"resume with --set training.batch_size={saved_batch} or start a new output dir"
        )
