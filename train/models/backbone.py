"""The transformer backbone shared by the world model and the explorer.

A transformers `LlamaModel` built from `cfg.model` sizes with random weights
(nothing is downloaded), fed with `inputs_embeds`; its attention projections
are named `q_proj`/`k_proj`/`v_proj`/`o_proj`, which is what LoRA targets.
`model.backbone_path` swaps in a pretrained backbone from a local directory.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from f1.shared.config import ModelConfig
from f1.shared.errors import UserError

# Positions the backbone can take: far more than any f1 sequence (tiny ~200, base ~900 tokens).
MAX_POSITIONS = 4096


class BackboneLoadError(UserError):
    """`model.backbone_path` does not hold a loadable transformers model."""


def build_backbone(model_cfg: ModelConfig) -> tuple[nn.Module, int]:
    """-> (backbone taking `inputs_embeds` (B,T,hidden) and returning `.last_hidden_state`, its hidden size)."""
    if model_cfg.backbone_path:
        return _load_local(Path(model_cfg.backbone_path))
    from transformers import LlamaConfig, LlamaModel

    config = LlamaConfig(
        hidden_size=model_cfg.hidden_size,
        num_hidden_layers=model_cfg.num_layers,
        num_attention_heads=model_cfg.num_heads,
        num_key_value_heads=model_cfg.num_heads,
        intermediate_size=model_cfg.intermediate_size,
        # the inputs are embeddings we build; the backbone's own token table is never used
        vocab_size=1,
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=None,
        max_position_embeddings=MAX_POSITIONS,
        use_cache=False,
        attn_implementation="sdpa",
    )
    return LlamaModel(config), config.hidden_size


def _load_local(path: Path) -> tuple[nn.Module, int]:
    fix = "point model.backbone_path at a local transformers model directory (config.json + weights) or set it to null"
    if not (path / "config.json").is_file():
        raise BackboneLoadError(f"model.backbone_path {path} has no config.json; {fix}")
    from transformers import AutoModel

    try:
        model = AutoModel.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # any failure here means the directory is not a usable model
        raise BackboneLoadError(f"model.backbone_path {path} could not be loaded ({type(exc).__name__}); {fix}") from None
    model.config.use_cache = False
    return model, int(model.config.hidden_size)
