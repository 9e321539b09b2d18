"""The explorer: the current wrist frame's tokens + the world model's memory -> a Gaussian over actions, and a value.

Sequence to the backbone: [memory m_t] [frame t: n/4 tokens] [policy query] [value query].
The frame's token embeddings (position included) are averaged over 2 x 2 cells (`FRAME_POOL`):
an 8 x 8 grid at the tiny preset's 16 x 16, 67 tokens instead of 259, which makes a PPO update
and an action ~3x cheaper on a CPU (bench/RESULTS.md, "explorer: a pooled frame").
The backbone is built like the world model's (`build_backbone`), so an
explorer can start from a trained world model's backbone and embeddings
(`Explorer.from_world_model`) and then train LoRA adapters plus its own heads
only (`f1.train.models.lora.apply_lora`), leaving the world model untouched.

The Gaussian covers the Panda's 8 real action dims (7 joint deltas + gripper)
with a state-independent learned log-std and no tanh: the environment clips.
Actions leave padded with zeros to `training.action_dim` (DESIGN §2).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributions import Normal

from f1.shared.config import F1Config
from f1.train.models.backbone import build_backbone
from f1.train.models.lora import base_backbone_state_dict
from f1.train.models.world_model import CodeEmbedding, backbone_projections, grid_side, memory_projection, pool_grid

REAL_ACTION_DIMS = 8
INIT_LOG_STD = -0.5  # exp(-0.5) ~ 0.61: the spread of uniform [-1, 1] draws (0.58), not a unit Gaussian's
FRAME_POOL = 2  # the frame's grid is averaged over FRAME_POOL x FRAME_POOL cells (kept where the side allows)
MODALITIES = ("memory", "wrist", "query")


class Explorer(nn.Module):
    # Parameters that stay trainable next to the LoRA adapters (see f1.train.models.lora.apply_lora).
    LORA_TRAINABLE = ("policy_query", "value_query", "out_norm", "mean_head", "value_head", "log_std")
    # What `f1.train.optim.set_policy_requires_grad` freezes or trains, by parameter-name prefix.
    PARAMETER_GROUPS = {
        "vision": ("token_embed", "grid_pos_embed"),
        "action": LORA_TRAINABLE,
        "memory": ("memory_proj",),
        "backbone": ("backbone", "in_proj", "out_proj"),
        "context": ("modality_embed",),
    }
    # Modules copied from a world model by `from_world_model` (same names, same shapes).
    SHARED_WITH_WORLD_MODEL = ("token_embed", "grid_pos_embed", "memory_proj", "in_proj", "out_proj")

    def __init__(self, cfg: F1Config, n_tokens: int, levels: tuple[int, ...] | list[int]):
        super().__init__()
        m = cfg.model
        self.n_tokens = n_tokens
        self.levels = tuple(levels)
        grid_side(n_tokens)
        self.action_dim = cfg.training.action_dim
        self.memory_layers = m.memory_num_layers
        self.memory_hidden = m.memory_hidden
        d = self.width = m.hidden_size

        self.backbone, backbone_hidden = build_backbone(m)
        self.in_proj, self.out_proj = backbone_projections(d, backbone_hidden)
        self.token_embed = CodeEmbedding(self.levels, d)
        self.grid_pos_embed = nn.Parameter(torch.randn(n_tokens, d) * 0.02)  # (n,d)
        self.modality_embed = nn.Embedding(len(MODALITIES), d)
        # the memory enters always; with memory disabled it is zeros and the token is a constant
        self.memory_proj = memory_projection(m, d)
        self.policy_query = nn.Parameter(torch.randn(d) * 0.02)  # (d,)
        self.value_query = nn.Parameter(torch.randn(d) * 0.02)  # (d,)
        self.out_norm = nn.LayerNorm(d)
        self.mean_head = nn.Linear(d, REAL_ACTION_DIMS)
        self.value_head = nn.Linear(d, 1)
        self.log_std = nn.Parameter(torch.full((REAL_ACTION_DIMS,), INIT_LOG_STD))  # (8,)
        nn.init.normal_(self.modality_embed.weight, std=0.02)
        # cleanrl's PPO init: a near-zero policy mean at first, a unit-scale value head
        nn.init.orthogonal_(self.mean_head.weight, gain=0.01)
        nn.init.zeros_(self.mean_head.bias)
        nn.init.orthogonal_(self.value_head.weight, gain=1.0)
        nn.init.zeros_(self.value_head.bias)

    @classmethod
    def from_world_model(cls, world_model: nn.Module, cfg: F1Config) -> "Explorer":
        """A new explorer whose backbone (base weights, never adapters) and input embeddings copy the world model's.

        Copies, never shares: training the explorer leaves the world model untouched.
        """
        explorer = cls(cfg, world_model.n_tokens, world_model.levels)
        explorer.backbone.load_state_dict(base_backbone_state_dict(world_model.backbone))
        for name in cls.SHARED_WITH_WORLD_MODEL:
            source = getattr(world_model, name, None)
            if source is None:  # a world model without memory has no memory_proj: keep the fresh one
                continue
            target = getattr(explorer, name)
            if isinstance(target, nn.Parameter):
                target.data.copy_(source.detach())
            else:
                target.load_state_dict(source.state_dict())
        return explorer

    def _modality(self, name: str) -> Tensor:
        return self.modality_embed.weight[MODALITIES.index(name)]  # (d,)

    def forward(self, tokens: Tensor, memory: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """tokens (B,n) long, memory (L_m,B,Hm) -> (mean (B,8), log_std (8,), value (B,))."""
        b, n = tokens.shape
        assert n == self.n_tokens, ("tokens (B,n)", tuple(tokens.shape), self.n_tokens)
        assert memory.shape == (self.memory_layers, b, self.memory_hidden), (
            "memory (num_layers,B,hidden)", tuple(memory.shape), (self.memory_layers, b, self.memory_hidden),
        )
        mem = (self.memory_proj(memory[-1]) + self._modality("memory")).unsqueeze(1)  # (B,1,d)
        frame = self.token_embed(tokens) + self.grid_pos_embed  # (B,n,d)
        frame = pool_grid(frame, grid_side(n), (FRAME_POOL,)) + self._modality("wrist")  # (B,n',d)
        queries = torch.stack([self.policy_query, self.value_query]) + self._modality("query")  # (2,d)
        x = torch.cat([mem, frame, queries.expand(b, -1, -1)], dim=1)  # (B,1+n'+2,d)
        out = self.out_proj(self.backbone(inputs_embeds=self.in_proj(x)).last_hidden_state[:, -2:])  # (B,2,d)
        out = self.out_norm(out)
        mean = self.mean_head(out[:, 0])  # (B,8)
        value = self.value_head(out[:, 1]).squeeze(-1)  # (B,)
        return mean, self.log_std, value

    def _distribution(self, tokens: Tensor, memory: Tensor) -> tuple[Normal, Tensor]:
        mean, log_std, value = self(tokens, memory)
        return Normal(mean, log_std.exp().expand_as(mean)), value

    def act(self, tokens: Tensor, memory: Tensor, deterministic: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """-> (action padded with zeros (B,A), log-prob of its 8 real dims (B,), value (B,))."""
        dist, value = self._distribution(tokens, memory)
        action = dist.mean if deterministic else dist.sample()  # (B,8)
        log_prob = dist.log_prob(action).sum(-1)  # (B,)
        padded = torch.nn.functional.pad(action, (0, self.action_dim - REAL_ACTION_DIMS))  # (B,A)
        return padded, log_prob, value

    def evaluate_actions(self, tokens: Tensor, memory: Tensor, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """actions (B,A) padded -> (log-prob (B,), entropy (B,), value (B,)) under the current policy."""
        assert actions.shape[-1] == self.action_dim, ("actions (B,A)", tuple(actions.shape), self.action_dim)
        dist, value = self._distribution(tokens, memory)
        real = actions[:, :REAL_ACTION_DIMS]  # (B,8)
        return dist.log_prob(real).sum(-1), dist.entropy().sum(-1), value
