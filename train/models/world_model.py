"""The world model: wrist-frame history + actions + state + GRU memory -> next wrist frame's tokens.

One step's input sequence to the backbone (DESIGN §2; h history slots, n tokens a frame):

    [memory m_t]                       1 token, absent when model.memory_enabled is false
    [state_t]                          1 token
    [frame t-(h-1)s] [action]          n' + 1 tokens  \\
    ...                                                 > h-1 past slots, oldest first
    [frame t-s]      [action]          n' + 1 tokens  /
    [frame t]        [action t]        n + 1 tokens      the current frame at full resolution
    [head frame t]                     n' tokens, only when a head frame is given (teacher)
    [query 0 .. n-1]                   n tokens -> logits over the codebook for frame t+1

Past frames and the head frame are average-pooled 2x2 on the token grid
(n' = n / 4) to keep the sequence short (tiny preset: 198 tokens instead of
390); the current frame keeps full resolution since frame t+1 is mostly frame
t moved a little. For the same reason each query starts from the embedding
of the current frame's token at its grid position, a direct copy path.
Every token gets a modality embedding, frame tokens a grid-position
embedding, history tokens a slot embedding. Slots before the episode's start
(the pad mask) repeat step 0's frame (the replay's rule) and carry a learned
pad embedding instead of being masked out of attention: a query row with every
key masked would give NaNs in the causal backbone.

Memory (DESIGN §4): m has shape (num_layers, B, hidden). Step t uses m_t, then
m_{t+1} = GRU(x_t, m_t), x_t a projection of [mean current-frame embedding,
action t, state t]. m is zeroed for a lane where is_first, before it is used.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from f1.shared.config import F1Config, ModelConfig
from f1.train.models.backbone import build_backbone

MODALITIES = ("memory", "state", "wrist", "action", "head", "query")


def memory_projection(model_cfg: ModelConfig, width: int) -> nn.Module:
    """Memory (B,Hm) -> (B,width): through a code_dim bottleneck (`memory_project_to_vae_dim`) or directly."""
    if model_cfg.memory_project_to_vae_dim:
        return nn.Sequential(nn.Linear(model_cfg.memory_hidden, model_cfg.code_dim), nn.Linear(model_cfg.code_dim, width))
    return nn.Linear(model_cfg.memory_hidden, width)


def backbone_projections(width: int, backbone_hidden: int) -> tuple[nn.Module, nn.Module]:
    """In/out projections between our token width and a (pretrained) backbone of another width."""
    if width == backbone_hidden:
        return nn.Identity(), nn.Identity()
    return nn.Linear(width, backbone_hidden), nn.Linear(backbone_hidden, width)


def grid_side(n_tokens: int) -> int:
    side = math.isqrt(n_tokens)
    assert side * side == n_tokens, ("tokens per frame must form a square grid", n_tokens)
    return side


def pool_grid(x: Tensor, side: int) -> Tensor:
    """(N, side*side, d) -> (N, (side/2)^2, d) by 2x2 average pooling; unchanged when the side is odd or < 4."""
    if side % 2 or side < 4:
        return x
    n, _, d = x.shape
    grid = x.transpose(1, 2).reshape(n, d, side, side)  # (N,d,g,g)
    return F.avg_pool2d(grid, 2).flatten(2).transpose(1, 2)  # (N,(g/2)^2,d)


class WorldModel(nn.Module):
    # What `f1.train.optim.set_policy_requires_grad` freezes or trains, by parameter-name prefix.
    PARAMETER_GROUPS = {
        "vision": ("token_embed", "grid_pos_embed"),
        "generator": ("query_embed", "out_norm", "logits_head"),
        "action": ("action_proj",),
        "state": ("state_proj",),
        "memory": ("gru", "summary_proj", "memory_proj"),
        "backbone": ("backbone", "in_proj", "out_proj"),
        "context": ("slot_embed", "modality_embed", "pad_embed"),
    }

    def __init__(self, cfg: F1Config, n_tokens: int, codebook_size: int):
        super().__init__()
        m, t = cfg.model, cfg.training
        self.n_tokens = n_tokens
        self.codebook_size = codebook_size
        self.grid = grid_side(n_tokens)
        self.history = t.n_obs_img_steps
        self.action_dim = t.action_dim
        self.state_dim = t.state_dim
        self.memory_enabled = m.memory_enabled
        self.memory_layers = m.memory_num_layers
        self.memory_hidden = m.memory_hidden
        self.memory_backprop = t.memory_backprop
        d = self.width = m.hidden_size

        self.backbone, backbone_hidden = build_backbone(m)
        self.in_proj, self.out_proj = backbone_projections(d, backbone_hidden)
        self.token_embed = nn.Embedding(codebook_size, d)
        self.grid_pos_embed = nn.Parameter(torch.randn(n_tokens, d) * 0.02)  # (n,d)
        self.slot_embed = nn.Parameter(torch.randn(self.history, d) * 0.02)  # (h,d)
        self.modality_embed = nn.Embedding(len(MODALITIES), d)
        self.pad_embed = nn.Parameter(torch.randn(d) * 0.02)  # (d,)
        self.query_embed = nn.Parameter(torch.randn(n_tokens, d) * 0.02)  # (n,d)
        self.action_proj = nn.Linear(self.action_dim, d)
        self.state_proj = nn.Linear(self.state_dim, d)
        if self.memory_enabled:
            self.memory_proj = memory_projection(m, d)
            self.summary_proj = nn.Linear(d + self.action_dim + self.state_dim, d)
            self.gru = nn.GRU(d, self.memory_hidden, self.memory_layers)
        self.out_norm = nn.LayerNorm(d)
        self.logits_head = nn.Linear(d, codebook_size)
        nn.init.normal_(self.token_embed.weight, std=0.02)
        nn.init.normal_(self.modality_embed.weight, std=0.02)

    # ------------------------------------------------------------------ memory

    def initial_memory(self, batch_size: int, device: torch.device | str | None = None) -> Tensor:
        """Zeros (num_layers, B, hidden): the memory at an episode's first step."""
        return torch.zeros(self.memory_layers, batch_size, self.memory_hidden, device=device)

    # ------------------------------------------------------------------ one step

    def _modality(self, name: str) -> Tensor:
        return self.modality_embed.weight[MODALITIES.index(name)]  # (d,)

    def _reset(self, memory: Optional[Tensor], is_first: Tensor, step_index: Optional[int]) -> Tensor:
        """Check the memory and zero it for the lanes where is_first: (L_m,B,Hm) -> (L_m,B,Hm)."""
        if memory is None:
            where = f"step {step_index}" if step_index is not None else "this step"
            raise ValueError(
                f"WorldModel got memory=None at {where}; memory is never None: start from initial_memory(batch_size)"
            )
        b = is_first.shape[0]
        assert memory.shape == (self.memory_layers, b, self.memory_hidden), (
            "memory (num_layers,B,hidden)", tuple(memory.shape), (self.memory_layers, b, self.memory_hidden),
        )
        # DESIGN §4: zero the lane's memory at its episode's first step, before anything uses it.
        return torch.where(is_first.view(1, b, 1), torch.zeros_like(memory), memory)

    def _next_memory(self, current_tokens: Tensor, action: Tensor, state: Tensor, memory: Tensor) -> Tensor:
        """m_{t+1} = GRU(x_t, m_t); current_tokens (B,n), action (B,A), state (B,S), memory (L_m,B,Hm)."""
        if not self.memory_enabled:
            return memory  # stays zeros
        current = self.token_embed(current_tokens) + self.grid_pos_embed  # (B,n,d)
        summary = torch.cat([current.mean(1), action, state], dim=-1)  # (B,d+A+S)
        _, new_memory = self.gru(self.summary_proj(summary).unsqueeze(0), memory)  # (1,B,d) -> (L_m,B,Hm)
        return new_memory

    def _predict(
        self, wrist_hist: Tensor, head: Optional[Tensor], action_hist: Tensor, state: Tensor, pad_mask: Tensor, memory_top: Tensor
    ) -> Tensor:
        """One backbone pass over N independent steps -> logits (N,n,K); memory_top (N,Hm) is m_t's top layer."""
        b, h, n = wrist_hist.shape
        assert (h, n) == (self.history, self.n_tokens), ("wrist_hist (B,h,n)", tuple(wrist_hist.shape), self.history, self.n_tokens)
        assert action_hist.shape[:2] == (b, h), (
            "image and action histories differ in length", tuple(wrist_hist.shape), tuple(action_hist.shape),
        )
        d = self.width
        pad = pad_mask.unsqueeze(-1).to(self.pad_embed.dtype) * self.pad_embed  # (B,h,d)

        frames = self.token_embed(wrist_hist) + self.grid_pos_embed  # (B,h,n,d)
        current = frames[:, -1]  # (B,n,d)
        actions = self.action_proj(action_hist) + self.slot_embed + self._modality("action") + pad  # (B,h,d)
        wrist_extra = self._modality("wrist") + self.slot_embed.unsqueeze(1) + pad.unsqueeze(2)  # (B,h,1,d)

        parts = []
        if self.memory_enabled:
            parts.append((self.memory_proj(memory_top) + self._modality("memory")).unsqueeze(1))  # (B,1,d)
        parts.append((self.state_proj(state) + self._modality("state")).unsqueeze(1))  # (B,1,d)
        if h > 1:
            past = pool_grid(frames[:, :-1].reshape(b * (h - 1), n, d), self.grid)  # (B*(h-1),n',d)
            past = past.view(b, h - 1, -1, d) + wrist_extra[:, :-1]  # (B,h-1,n',d)
            past = torch.cat([past, actions[:, :-1].unsqueeze(2)], dim=2)  # (B,h-1,n'+1,d)
            parts.append(past.flatten(1, 2))  # (B,(h-1)(n'+1),d)
        parts.append(current + wrist_extra[:, -1])  # (B,n,d)
        parts.append(actions[:, -1:])  # (B,1,d)
        if head is not None:
            head_tokens = pool_grid(self.token_embed(head) + self.grid_pos_embed, self.grid)  # (B,n',d)
            parts.append(head_tokens + self._modality("head"))
        queries = self.query_embed + self.grid_pos_embed + self._modality("query") + current  # (B,n,d) copy path
        parts.append(queries)

        x = self.in_proj(torch.cat(parts, dim=1))  # (B,T,hidden)
        out = self.out_proj(self.backbone(inputs_embeds=x).last_hidden_state[:, -n:])  # (B,n,d)
        return self.logits_head(self.out_norm(out))  # (B,n,K)

    def step(
        self,
        wrist_hist: Tensor,
        head: Optional[Tensor],
        action_hist: Tensor,
        state: Tensor,
        pad_mask: Tensor,
        memory: Optional[Tensor],
        is_first: Tensor,
        step_index: Optional[int] = None,
    ) -> tuple[Tensor, Tensor]:
        """One step t -> (logits over the codebook for each token of wrist frame t+1 (B,n,K), m_{t+1}).

        wrist_hist (B,h,n) long, head (B,n) long or None, action_hist (B,h,A) (the last slot holds
        action t), state (B,S) normalized, pad_mask (B,h) bool, memory (L_m,B,Hm), is_first (B,) bool.
        """
        memory = self._reset(memory, is_first, step_index)  # (L_m,B,Hm) m_t
        logits = self._predict(wrist_hist, head, action_hist, state, pad_mask, memory[-1])
        return logits, self._next_memory(wrist_hist[:, -1], action_hist[:, -1], state, memory)

    # ------------------------------------------------------------------ a TBPTT chunk

    def forward_chunk(self, inputs: dict[str, Tensor], memory: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Run L steps -> (logits (B,L,n,K), memory after the chunk, memory_trace (B,L,Hm)).

        inputs: wrist_hist (B,L,h,n), head (B,L,n) (optional), action_hist (B,L,h,A), state (B,L,S),
        pad_mask (B,L,h), is_first (B,L). memory_trace[:, k] is the top layer of the memory step k
        used (after its is_first reset). Gradients cross steps through the memory unless
        training.memory_backprop is false; the caller detaches between chunks.

        Same result as L calls of `step`, but faster: the memory's inputs are the step's own
        inputs (never the backbone's outputs), so the GRU runs first, step by step (resets
        inside the loop), and the backbone then sees all B x L steps in one batch.
        """
        wrist_hist, head = inputs["wrist_hist"], inputs.get("head")
        b, length = wrist_hist.shape[:2]
        used = []
        for k in range(length):
            if memory is not None and not self.memory_backprop:
                memory = memory.detach()
            memory = self._reset(memory, inputs["is_first"][:, k], k)  # (L_m,B,Hm) m_k
            used.append(memory[-1])
            memory = self._next_memory(wrist_hist[:, k, -1], inputs["action_hist"][:, k, -1], inputs["state"][:, k], memory)
        trace = torch.stack(used, 1)  # (B,L,Hm)
        logits = self._predict(
            wrist_hist.flatten(0, 1),  # (B*L,h,n)
            head.flatten(0, 1) if head is not None else None,
            inputs["action_hist"].flatten(0, 1),
            inputs["state"].flatten(0, 1),
            inputs["pad_mask"].flatten(0, 1),
            trace.flatten(0, 1),  # (B*L,Hm)
        )
        return logits.view(b, length, self.n_tokens, -1), memory, trace  # (B,L,n,K), (L_m,B,Hm), (B,L,Hm)

    # ------------------------------------------------------------------ losses and rewards

    @staticmethod
    def loss(logits: Tensor, target_tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-entropy over valid positions: logits (B,L,n,K), targets (B,L,n), mask (B,L) -> (loss, token accuracy)."""
        assert logits.shape[:3] == target_tokens.shape and mask.shape == logits.shape[:2], (
            tuple(logits.shape), tuple(target_tokens.shape), tuple(mask.shape),
        )
        valid_logits = logits[mask]  # (V,n,K)
        valid_targets = target_tokens[mask].long()  # (V,n)
        if valid_targets.numel() == 0:  # a chunk of padding only: no signal, but keep the graph
            return logits.sum() * 0.0, logits.new_zeros(())
        loss = F.cross_entropy(valid_logits.flatten(0, 1), valid_targets.flatten())
        accuracy = (valid_logits.argmax(-1) == valid_targets).float().mean()
        return loss, accuracy.detach()

    @staticmethod
    def uncertainty(logits: Tensor) -> Tensor:
        """Mean per-token entropy (nats) of the predicted next frame: logits (B,n,K) -> (B,)."""
        log_probs = F.log_softmax(logits.float(), dim=-1)  # (...,n,K)
        return -(log_probs.exp() * log_probs).sum(-1).mean(-1)  # (...,n) -> (...)
