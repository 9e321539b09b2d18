"""LoRA on a model's `.backbone` with peft: apply, save to `peft_adapter/`, load back.

After `apply_lora(model, cfg.model.lora)` only the adapters (peft's `lora_A`/`lora_B`)
and the heads the model names in `LORA_TRAINABLE` require grad; the base
backbone weights and everything else stay frozen and bit-identical.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

from torch import Tensor, nn

from f1.shared.config import LoraConfig
from f1.shared.errors import UserError
from f1.train.checkpoint import PEFT_ADAPTER_DIR

ADAPTER_CONFIG_FILE = "adapter_config.json"


class AdapterError(UserError):
    """LoRA target modules or a saved adapter do not fit the model."""


def is_lora(backbone: nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(backbone, PeftModel)


def _mark_trainable(model: nn.Module, trainable: Sequence[str]) -> None:
    """requires_grad on adapter parameters and on parameters under the named prefixes; off elsewhere."""
    for name, param in model.named_parameters():
        in_head = any(name == t or name.startswith(t + ".") for t in trainable)
        param.requires_grad_("lora_" in name or in_head)


def apply_lora(model: nn.Module, lora_cfg: LoraConfig, trainable: Optional[Sequence[str]] = None) -> nn.Module:
    """Wrap `model.backbone` with LoRA adapters on `lora_cfg.target_modules`; freeze all but adapters + heads.

    trainable: parameter-name prefixes outside the backbone that keep training
    (default: the model's `LORA_TRAINABLE`, e.g. the explorer's heads).
    """
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    if is_lora(model.backbone):
        raise ValueError("apply_lora: the backbone already has LoRA adapters")
    leaf_names = {name.rsplit(".", 1)[-1] for name, mod in model.backbone.named_modules() if isinstance(mod, nn.Linear)}
    missing = sorted(set(lora_cfg.target_modules) - leaf_names)
    if missing:
        raise AdapterError(
            f"model.lora.target_modules {missing} name no linear layer of the backbone; choose from {sorted(leaf_names)}"
        )
    config = PeftLoraConfig(
        r=lora_cfg.r, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout, target_modules=list(lora_cfg.target_modules)
    )
    model.backbone = get_peft_model(model.backbone, config)
    _mark_trainable(model, trainable if trainable is not None else getattr(model, "LORA_TRAINABLE", ()))
    return model


def save_adapter(model: nn.Module, directory: str | Path) -> Path:
    """Write the backbone's adapter (weights + adapter_config.json) to <directory>/peft_adapter/."""
    if not is_lora(model.backbone):
        raise ValueError("save_adapter: the backbone has no LoRA adapters; call apply_lora first")
    target = Path(directory) / PEFT_ADAPTER_DIR
    model.backbone.save_pretrained(str(target))
    return target


def load_adapter(model: nn.Module, directory: str | Path, trainable: Optional[Sequence[str]] = None) -> nn.Module:
    """Load <directory>/peft_adapter/ into `model.backbone`, wrapping it first if it has no adapters yet.

    Leaves requires_grad as `apply_lora` does, so training can go on.
    """
    from peft import PeftModel, set_peft_model_state_dict
    from peft.utils import load_peft_weights

    source = Path(directory) / PEFT_ADAPTER_DIR
    if not (source / ADAPTER_CONFIG_FILE).is_file():
        raise AdapterError(f"no LoRA adapter in {source} ({ADAPTER_CONFIG_FILE} missing); pass a checkpoint written with LoRA")
    try:
        if is_lora(model.backbone):
            device = next(model.backbone.parameters()).device
            result = set_peft_model_state_dict(model.backbone, load_peft_weights(str(source), device=str(device)))
            if result.unexpected_keys:
                raise ValueError(f"unexpected keys {result.unexpected_keys[:3]}")
        else:
            model.backbone = PeftModel.from_pretrained(model.backbone, str(source), is_trainable=True)
    except (ValueError, KeyError, RuntimeError, OSError, json.JSONDecodeError) as exc:
        raise AdapterError(
            f"LoRA adapter in {source} does not fit this model ({type(exc).__name__}: {str(exc)[:120]}); "
            "check model.lora and the model size preset"
        ) from None
    _mark_trainable(model, trainable if trainable is not None else getattr(model, "LORA_TRAINABLE", ()))
    return model


def base_backbone_state_dict(backbone: nn.Module) -> dict[str, Tensor]:
    """The backbone's base weights under their plain names, without adapters (LoRA wrapped or not)."""
    if not is_lora(backbone):
        return backbone.state_dict()
    state = {}
    for name, tensor in backbone.get_base_model().state_dict().items():
        if "lora_" in name:
            continue
        # peft moves a wrapped layer's own weight under `.base_layer`
        state[name.replace(".base_layer.", ".")] = tensor
    return state
