"""Which parameters train, the optimizer and the learning-rate schedule, shared by every phase.

`set_policy_requires_grad` keeps the seed's name and flags (F1-VLA's RL module)
and maps them onto our models' parameter groups (`PARAMETER_GROUPS` on
`WorldModel` and `Explorer`, by parameter-name prefix):

| flag | freezes in f1 |
|---|---|
| freeze_vision_encoder | `vision`: the frame-token embedding table and grid positions (the FSQ tokenizer itself is always frozen after its phase) |
| freeze_gen_expert | `generator`: the world model's output head (norm, per-digit logits, copy bonus) |
| train_act_expert_only | everything but `action`: the explorer's policy/value queries and heads (world model: its action projection) |
| train_gen_expert_only | everything but `generator` |

LoRA adapters (`lora_` in the name) count as their own group: trainable unless
an `*_only` flag is set; a LoRA-wrapped backbone's base weights never train.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional

import torch
from torch import nn

from f1.shared.config import TrainingConfig

NO_DECAY_MODULES = (nn.Embedding, nn.LayerNorm, nn.GroupNorm)


def _group_of(name: str, groups: dict[str, tuple[str, ...]]) -> str:
    for group, prefixes in groups.items():
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return group
    raise AssertionError(f"parameter {name!r} is in none of the model's PARAMETER_GROUPS {sorted(groups)}")


def set_policy_requires_grad(
    model: nn.Module,
    freeze_vision_encoder: bool = True,
    freeze_gen_expert: bool = False,
    train_act_expert_only: bool = False,
    train_gen_expert_only: bool = False,
) -> dict[str, bool]:
    """Set requires_grad per parameter group (table above); returns {group: trains}."""
    assert not (train_act_expert_only and train_gen_expert_only), "train_act_expert_only and train_gen_expert_only exclude each other"
    groups: dict[str, tuple[str, ...]] = model.PARAMETER_GROUPS
    if train_act_expert_only:
        trains = {g: g == "action" for g in groups}
    elif train_gen_expert_only:
        trains = {g: g == "generator" for g in groups}
    else:
        trains = {g: True for g in groups}
        if freeze_vision_encoder and "vision" in trains:
            trains["vision"] = False
        if freeze_gen_expert and "generator" in trains:
            trains["generator"] = False
    trains["adapter"] = not (train_act_expert_only or train_gen_expert_only)
    for name, param in model.named_parameters():
        if "lora_" in name:
            param.requires_grad_(trains["adapter"])
        elif ".base_model.model." in name:  # a LoRA-wrapped backbone's base weight
            param.requires_grad_(False)
        else:
            param.requires_grad_(trains[_group_of(name, groups)])
    return trains


def _decays(module: nn.Module, param_name: str, param: torch.Tensor) -> bool:
    """Weight decay only on matrices of linear/conv layers: never norms, biases, embeddings or learned vectors."""
    if param.ndim < 2 or isinstance(module, NO_DECAY_MODULES) or "norm" in type(module).__name__.lower():
        return False
    return not param_name.endswith("embed")  # grid/slot/query embedding tables registered as parameters


def make_optimizer(
    model: nn.Module, training_cfg: TrainingConfig, learning_rate: Optional[float] = None
) -> torch.optim.AdamW:
    """AdamW over the parameters that require grad, two groups: with and without weight decay."""
    decay, no_decay = [], []
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if param.requires_grad:
                (decay if _decays(module, param_name, param) else no_decay).append(param)
    assert decay or no_decay, "make_optimizer: no parameter requires grad"
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": training_cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=learning_rate if learning_rate is not None else training_cfg.learning_rate,
        betas=(0.9, 0.95),
    )


def make_scheduler(
    optimizer: torch.optim.Optimizer, warmup: int, total: Optional[int], min_ratio: float = 0.1
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup` steps, then cosine down to `min_ratio` x the peak at `total`.

    total None (no step limit): constant after the warm-up.
    """

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if total is None or total <= warmup:
            return 1.0
        progress = min(1.0, (step - warmup) / (total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def count_parameters(model: nn.Module | Iterable[torch.Tensor]) -> dict[str, int]:
    """{'total': all parameters, 'trainable': those requiring grad}."""
    params = list(model.parameters() if isinstance(model, nn.Module) else model)
    return {"total": sum(p.numel() for p in params), "trainable": sum(p.numel() for p in params if p.requires_grad)}
