"""The models the online phases start from: a teacher checkpoint's world model + tokenizer, and the explorer.

Checkpoint kinds, told apart by `model.pt["model_config"]["phase"]`:
- teacher (f1.train.offline.teacher) and adversarial: `model.pt["model"]` is a world model's state
  dict and `model_config` holds tokenizer_path, normalizers and the run's config,
  so an adversarial checkpoint loads wherever a teacher's does.
- student: `model.pt["model"]` is the explorer without its backbone (heads, queries,
  embeddings); the backbone's base weights are the teacher's (`model_config["teacher_path"]`,
  the base ref) and its LoRA adapter is in `peft_adapter/`.
- adversarial also holds its explorer: `explorer.pt` (the same heads dict) + `peft_adapter/`,
  and the base ref in `model_config["explorer_base_path"]`.

A world model is rebuilt with the sizes of the run that trained it, never the
current config's: `architecture_config` copies the keys that shape it.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import nn

from f1.shared.config import F1Config, config_from_dict
from f1.shared.errors import UserError
from f1.shared.normalizers import Normalizer
from f1.train.checkpoint import MODEL_FILE, PEFT_ADAPTER_DIR, CheckpointError, is_complete, load_file

log = logging.getLogger("f1.online")

EXPLORER_FILE = "explorer.pt"  # adversarial checkpoints: the explorer's heads next to the world model in model.pt
WORLD_MODEL_PHASES = ("teacher", "adversarial")
EXPLORER_PHASES = ("student", "adversarial")
# training keys that shape the world model's inputs: they must be the teacher's
ARCHITECTURE_TRAINING_KEYS = ("n_obs_img_steps", "obs_img_stride", "action_dim", "state_dim", "memory_backprop")


@dataclass
class WorldModelBundle:
    """A loaded world model with what it needs to run: its tokenizer, normalizers and the config it was built with."""

    path: Path
    phase: str
    world_model: nn.Module
    tokenizer: nn.Module
    normalizers: dict[str, Normalizer]
    config: F1Config
    model_config: dict[str, Any]


def read_model_file(path: Path, flag: str) -> dict[str, Any]:
    """model.pt of a complete checkpoint directory; CheckpointError naming the flag when it is not one."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{flag} {path} is not a directory; pass a checkpoint-<step> directory")
    if not is_complete(path):
        raise CheckpointError(f"{flag} {path} is not a complete checkpoint (model.pt, training_state.pt, metrics.pt); pass a checkpoint-<step> directory")
    try:
        return load_file(path / MODEL_FILE)
    except CheckpointError:
        raise
    except Exception as exc:  # a zip or read error means the same to the user: a broken file
        raise CheckpointError(f"{flag} {path / MODEL_FILE} is unreadable ({type(exc).__name__}); pass an intact checkpoint") from None


def checkpoint_phase(model_file: Mapping[str, Any]) -> str:
    return str(model_file.get("model_config", {}).get("phase", "unknown"))


def architecture_config(cfg: F1Config, trained: F1Config) -> F1Config:
    """`cfg` with the model sizes and input shapes of `trained` (the run that built the world model); LoRA stays cfg's."""
    merged = copy.deepcopy(cfg)
    lora = merged.model.lora
    merged.model = copy.deepcopy(trained.model)
    merged.model.lora = lora
    changed = []
    for key in ARCHITECTURE_TRAINING_KEYS:
        if getattr(cfg.training, key) != getattr(trained.training, key):
            changed.append(f"training.{key}={getattr(trained.training, key)}")
        setattr(merged.training, key, getattr(trained.training, key))
    if changed:
        log.warning("using the world model's own %s (the config asked otherwise)", ", ".join(changed))
    return merged


def load_world_model(path: Path, flag: str, device: torch.device | str = "cpu") -> WorldModelBundle:
    """The world model of a teacher or adversarial checkpoint, with its tokenizer and normalizers, on `device`."""
    from f1.train.models.tokenizer import FSQTokenizer
    from f1.train.models.world_model import WorldModel

    path = Path(path)
    model_file = read_model_file(path, flag)
    phase = checkpoint_phase(model_file)
    if phase not in WORLD_MODEL_PHASES:
        raise CheckpointError(
            f"{flag} {path} is a {phase} checkpoint, not a world model; pass a checkpoint of `f1 train teacher` "
            "(or `f1 train adversarial`)"
        )
    model_config = model_file["model_config"]
    trained = config_from_dict(model_config["config"])
    tokenizer_path = Path(model_config["tokenizer_path"])
    if not tokenizer_path.is_dir():
        raise UserError(
            f"{flag} {path} names tokenizer {tokenizer_path}, which does not exist; restore it (the world model "
            "predicts that tokenizer's codes)"
        )
    tokenizer = FSQTokenizer.load(tokenizer_path).to(device)  # load on the CPU: a CPU rank's device is "cpu:0", which torch.load rejects
    world_model = WorldModel(trained, int(model_config["n_tokens"]), model_config["levels"])
    world_model.load_state_dict(model_file["model"])
    normalizers = {k: Normalizer(**v) for k, v in model_config["normalizers"].items()}
    return WorldModelBundle(path, phase, world_model.to(device), tokenizer, normalizers, trained, model_config)


def freeze(module: nn.Module) -> nn.Module:
    """eval mode and requires_grad off: the module only ever runs forward."""
    module.eval()
    module.requires_grad_(False)
    return module


# --------------------------------------------------------------------------- the explorer


def new_explorer(world_model: nn.Module, cfg: F1Config) -> nn.Module:
    """An explorer copying the world model's backbone and embeddings, LoRA on its backbone: only adapters + heads train."""
    from f1.train.models.explorer import Explorer
    from f1.train.models.lora import apply_lora

    explorer = Explorer.from_world_model(world_model, cfg)
    return apply_lora(explorer, cfg.model.lora)


def explorer_heads_state(explorer: nn.Module) -> dict[str, torch.Tensor]:
    """Everything of the explorer but its backbone: the backbone is the base ref's weights + the saved adapter."""
    return {k: v for k, v in explorer.state_dict().items() if not k.startswith("backbone.")}


def load_explorer_parts(explorer: nn.Module, heads: Mapping[str, torch.Tensor], checkpoint_dir: Path) -> nn.Module:
    """Heads from `heads`, the LoRA adapter from <checkpoint_dir>/peft_adapter/; the backbone's base stays as built."""
    from f1.train.models.lora import load_adapter

    missing, unexpected = explorer.load_state_dict(dict(heads), strict=False)
    missing = [k for k in missing if not k.startswith("backbone.")]
    assert not missing and not unexpected, ("explorer heads do not fit", missing[:5], unexpected[:5])
    load_adapter(explorer, checkpoint_dir)
    return explorer


def explorer_base_path(path: Path, model_file: Mapping[str, Any]) -> Path:
    """The world-model checkpoint whose backbone the explorer of `path` was built on (its base ref)."""
    config = model_file["model_config"]
    key = "teacher_path" if checkpoint_phase(model_file) == "student" else "explorer_base_path"
    base = Path(config[key])
    if not is_complete(base):
        raise CheckpointError(
            f"{path} builds its explorer on {base} (its base ref), which is missing or incomplete; restore that checkpoint"
        )
    return base


def load_explorer(
    path: Path, flag: str, cfg: F1Config, device: torch.device | str, base: Optional[WorldModelBundle] = None
) -> tuple[nn.Module, Path]:
    """The explorer of a student or adversarial checkpoint -> (explorer on `device`, its base ref path).

    `base`: the base ref's world model when the caller has it loaded already (else it is loaded here).
    """
    path = Path(path)
    model_file = read_model_file(path, flag)
    phase = checkpoint_phase(model_file)
    if phase not in EXPLORER_PHASES:
        raise CheckpointError(
            f"{flag} {path} is a {phase} checkpoint without an explorer; pass a checkpoint of `f1 train student`"
        )
    if not (path / PEFT_ADAPTER_DIR).is_dir():
        raise CheckpointError(f"{flag} {path} lacks {PEFT_ADAPTER_DIR}/; pass a complete student checkpoint")
    base_path = explorer_base_path(path, model_file)
    if base is None or base.path.resolve() != base_path.resolve():
        base = load_world_model(base_path, f"the base ref of {flag}", "cpu")
    heads = model_file["model"] if phase == "student" else load_file(path / EXPLORER_FILE)
    explorer = new_explorer(base.world_model, architecture_config(cfg, base.config))  # copies: any device
    return load_explorer_parts(explorer, heads, path).to(device), base_path


def trainable_names(module: nn.Module) -> list[str]:
    return [name for name, p in module.named_parameters() if p.requires_grad]
