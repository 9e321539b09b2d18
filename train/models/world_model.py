"""The world model: wrist-frame history + actions + state + GRU memory -> next wrist frame's tokens.

Two stages, as a video codec predicts a frame: motion compensation in pixels, then a correction in codes.

1. `MotionWarp` (f1.train.models.motion) resamples frame t along a flow it predicts from frame t,
   the state and action t: the wrist camera rides on the arm, so most of frame t+1 is frame t
   moved by the arm's motion, which codes cannot express (a one-pixel shift changes most codes).
   The tokenizer encodes the warped frame: the proposal's codes.
2. The backbone reads one step's sequence (DESIGN §2; h history slots, n tokens a frame, g x g grid):

    [memory m_t]                 1 token, absent when model.memory_enabled is false
    [state_t]                    1 token
    [action t-(h-1)s] .. [a_t]   h tokens, oldest first
    [frame t-(h-1)s] .. [t]      h frames, each pooled to (g/p)^2 tokens, oldest first
    [head frame t]               (g/p)^2 tokens, only when a head frame is given (teacher)
    [proposal]                   n tokens at full resolution (frame t's codes when no proposal is
                                 given: the online phases keep no pixels), mixed by 3x3 convolutions
                                 over the grid (`GridMixer`) first: the outputs are read here

Attention is bidirectional (a full 4D mask handed to the transformers backbone): every
proposal position sees the whole step, so content can move in from any side.
Position i's output predicts token i of frame t+1, a correction of the proposal. Action a_t
and the state are also added to every proposal token, so no position has to find them by
attention first.

Tokens are FSQ codes (f1.train.models.tokenizer): each is D digits, digit i one of
levels[i] ordered values. A code is embedded as the sum of one embedding per digit
(`CodeEmbedding`), so neighbouring codes share what they learn, and the output is
one distribution per digit (`FactorizedCodes`): D small heads instead of one over prod(levels)
codes (65536 in the tiny preset). Each digit's distribution mixes a pointer and a
generator (`_pointer_generator`): each cell of frame t+1 predicts a local flow, which of
the 5 x 5 cells of the proposal around it its content comes from, and copies their digits, so
moved content keeps its exact codes in scenes never seen; a small softmax head covers the
rest. The flow starts on the cell itself: at initialisation the model predicts the proposal
(frame t, as the motion starts at zero) and learns where to depart from it.

The prediction (`CodePrediction`) carries the digits' distributions (the loss, the entropy) and the
most likely codes. These are the mode of the mixture itself (`mixture_mode`), not each digit's most
likely value: where the pointer splits its mass between two neighbouring codes, taking each digit
from whichever holds more of it assembles a code neither holds. Measured on held-out episodes
(bench/RESULTS.md, "world model: the mixture's mode"): token accuracy 0.336 -> 0.341, PSNR +0.10 dB.

Memory (DESIGN §4): m has shape (num_layers, B, hidden). Step t uses m_t, then
m_{t+1} = GRU(x_t, m_t), x_t a projection of [mean current-frame embedding,
action t, state t]. m is zeroed for a lane where is_first, before it is used.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from f1.shared.config import F1Config, ModelConfig
from f1.train.models.backbone import build_backbone
from f1.train.models.motion import MotionWarp
from f1.train.models.tokenizer import FSQTokenizer, digits_to_tokens, tokens_to_digits

MODALITIES = ("memory", "state", "wrist", "action", "head", "query")
POOLED_FACTOR = 4  # past and head frames: a p x p block of the token grid becomes one token
FLOW_WINDOW = 5  # a cell of frame t+1 copies from the 5 x 5 cells of frame t around it (+-2 cells = +-8 px at 64x64)
FLOW_STAY_INIT = 5.0  # logit of "stay" at init: e^5 / (e^5 + 24) ~ 0.86 of the copy mass on the cell itself
COPY_GATE_INIT = 2.0  # sigmoid(2) ~ 0.88: at init the prediction is mostly the pointer's copy


class FactorizedCodes:
    """A distribution over FSQ codes as independent per-digit softmaxes: logits (..., sum(levels))."""

    def __init__(self, levels: tuple[int, ...] | list[int]):
        self.levels = tuple(int(x) for x in levels)
        self.log_k = math.log(math.prod(self.levels))

    @property
    def width(self) -> int:
        return sum(self.levels)

    def digits(self, tokens: Tensor) -> Tensor:
        """tokens (...) -> digits (..., D) long."""
        return tokens_to_digits(tokens, self.levels)

    def tokens(self, digits: Tensor) -> Tensor:
        """digits (..., D) -> tokens (...) long."""
        return digits_to_tokens(digits, self.levels)

    def split(self, logits: Tensor) -> list[Tensor]:
        """(..., sum(levels)) -> [(..., levels[i])]."""
        assert logits.shape[-1] == self.width, (tuple(logits.shape), self.levels)
        return list(logits.split(self.levels, dim=-1))

    def nll(self, logits: Tensor, tokens: Tensor) -> Tensor:
        """-log p(token) in nats: logits (..., sum(levels)), tokens (...) -> (...); the joint code's cross-entropy."""
        digits = self.digits(tokens)  # (...,D)
        parts = [
            -F.log_softmax(part.float(), -1).gather(-1, digits[..., i : i + 1]).squeeze(-1)
            for i, part in enumerate(self.split(logits))
        ]
        return torch.stack(parts, -1).sum(-1)

    def entropy(self, logits: Tensor) -> Tensor:
        """Entropy (nats) of the code distribution: the sum of the digits' entropies; (..., sum(levels)) -> (...)."""
        total = 0
        for part in self.split(logits):
            log_p = F.log_softmax(part.float(), -1)
            total = total - (log_p.exp() * log_p).sum(-1)
        return total

    def argmax(self, logits: Tensor) -> Tensor:
        """The most likely code (each digit's most likely value): (..., sum(levels)) -> tokens (...)."""
        return self.tokens(torch.stack([part.argmax(-1) for part in self.split(logits)], -1))

    def bins(self, tokens: Tensor) -> Tensor:
        """tokens (...) -> (..., D) long: each digit's place among the sum(levels) concatenated digit values
        (the layout of the logits and of CodeEmbedding's rows): digit i's value + sum(levels[:i])."""
        offsets = torch.tensor([sum(self.levels[:i]) for i in range(len(self.levels))], device=tokens.device)
        return self.digits(tokens) + offsets


class CodePrediction(NamedTuple):
    """The world model's prediction of frame t+1's codes, for any leading shape (...)."""

    logits: Tensor  # (...,n,sum(levels)) each digit's log-probabilities (the mixture's marginals): loss, entropy
    codes: Tensor  # (...,n) long: the most likely code at each position (`mixture_mode`)


def mixture_mode(
    codes: FactorizedCodes, neighbours: Tensor, flow: Tensor, gate: Tensor, generator: list[Tensor]
) -> Tensor:
    """The most likely code of the pointer-generator mixture at each position -> (B,n) long.

    neighbours (B,n,W) the codes the pointer copies from, flow (B,n,W) its weights, gate (B,n) its share,
    generator [(B,n,levels[i])] the generator's digit log-probabilities. p(c) = gate * (flow mass on
    neighbours equal to c) + (1 - gate) * prod_i generator_i(c_i). The mode is among the neighbours
    and the generator's own mode (any other code has no pointer mass and at most the generator's
    mode's probability), so those W + 1 candidates are scored.
    """
    generator_mode = codes.tokens(torch.stack([part.argmax(-1) for part in generator], -1))  # (B,n)
    candidates = torch.cat([neighbours, generator_mode.unsqueeze(-1)], -1)  # (B,n,W+1)
    pointer = ((candidates.unsqueeze(-1) == neighbours.unsqueeze(-2)) * flow.unsqueeze(-2)).sum(-1)  # (B,n,W+1)
    digits = codes.digits(candidates)  # (B,n,W+1,D)
    log_generated = sum(
        part.unsqueeze(-2).expand(*digits.shape[:-1], -1).gather(-1, digits[..., i : i + 1]).squeeze(-1)
        for i, part in enumerate(generator)
    )  # (B,n,W+1)
    probability = gate.unsqueeze(-1) * pointer + (1 - gate.unsqueeze(-1)) * log_generated.exp()
    return candidates.gather(-1, probability.argmax(-1, keepdim=True)).squeeze(-1)


class CodeEmbedding(nn.Module):
    """An FSQ code -> the sum of its digits' embeddings: tokens (...) long -> (..., d)."""

    def __init__(self, levels: tuple[int, ...] | list[int], width: int):
        super().__init__()
        self.codes = FactorizedCodes(levels)
        self.digit_embed = nn.Embedding(self.codes.width, width)  # one row per (digit, value)
        nn.init.normal_(self.digit_embed.weight, std=0.02)

    def forward(self, tokens: Tensor) -> Tensor:
        rows = self.codes.bins(tokens).reshape(-1, len(self.codes.levels))  # (N,D)
        # one bag of D rows per code, summed: faster forward and backward than gathering (N,D,d) and summing
        return F.embedding_bag(rows, self.digit_embed.weight, mode="sum").view(*tokens.shape, -1)  # (...,d)


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


def pool_factor(side: int, factors: tuple[int, ...] = (POOLED_FACTOR, 2)) -> int:
    """The largest of `factors` (else 1) that divides the grid side and leaves at least 2 x 2 tokens."""
    for factor in factors:
        if side % factor == 0 and side // factor >= 2:
            return factor
    return 1


def pool_grid(x: Tensor, side: int, factors: tuple[int, ...] = (POOLED_FACTOR, 2)) -> Tensor:
    """(N, side*side, d) -> (N, (side/p)^2, d) by p x p average pooling, p = pool_factor(side, factors)."""
    factor = pool_factor(side, factors)
    if factor == 1:
        return x
    n, _, d = x.shape
    grid = x.transpose(1, 2).reshape(n, d, side, side)  # (N,d,g,g)
    return F.avg_pool2d(grid, factor).flatten(2).transpose(1, 2)  # (N,(g/p)^2,d)


class GridMixer(nn.Module):
    """Residual 3x3 convolutions over the current frame's token grid: (B, g*g, d) -> (B, g*g, d).

    Frame t+1 is frame t moved by the action: what lands on a grid cell comes from its
    neighbours, a local, translation-equivariant rule that convolutions learn from few
    episodes, before attention adds what is far away (the head frame, the history, the memory).
    """

    def __init__(self, width: int, side: int, layers: int = 2):
        super().__init__()
        self.side = side
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.GELU(), nn.Conv2d(width, width, 3, padding=1))
            for _ in range(layers)
        )

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        grid = x.transpose(1, 2).reshape(b, d, self.side, self.side)  # (B,d,g,g)
        for block in self.blocks:
            grid = grid + block(grid)
        return grid.flatten(2).transpose(1, 2)  # (B,n,d)


class WorldModel(nn.Module):
    # What `f1.train.optim.set_policy_requires_grad` freezes or trains, by parameter-name prefix.
    PARAMETER_GROUPS = {
        "vision": ("token_embed", "grid_pos_embed", "pooled_pos_embed", "grid_mixer", "motion"),
        "generator": ("out_norm", "logits_head", "flow_head", "copy_gate"),
        "action": ("action_proj", "action_bias_proj"),
        "state": ("state_proj",),
        "memory": ("gru", "summary_proj", "memory_proj"),
        "backbone": ("backbone", "in_proj", "out_proj"),
        "context": ("slot_embed", "modality_embed", "pad_embed"),
    }

    def __init__(self, cfg: F1Config, n_tokens: int, levels: tuple[int, ...] | list[int]):
        """n_tokens and levels are the tokenizer's (FSQTokenizer.n_tokens, .levels): the codes it predicts."""
        super().__init__()
        m, t = cfg.model, cfg.training
        self.codes = FactorizedCodes(levels)
        self.levels = self.codes.levels
        self.n_tokens = n_tokens
        self.codebook_size = math.prod(self.levels)
        self.grid = grid_side(n_tokens)
        self.pooled = (self.grid // pool_factor(self.grid)) ** 2
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
        self.token_embed = CodeEmbedding(self.codes.levels, d)
        self.grid_pos_embed = nn.Parameter(torch.randn(n_tokens, d) * 0.02)  # (n,d)
        self.pooled_pos_embed = nn.Parameter(torch.randn(self.pooled, d) * 0.02)  # (n',d)
        self.slot_embed = nn.Parameter(torch.randn(self.history, d) * 0.02)  # (h,d)
        self.modality_embed = nn.Embedding(len(MODALITIES), d)
        self.pad_embed = nn.Parameter(torch.randn(d) * 0.02)  # (d,)
        self.action_proj = nn.Linear(self.action_dim, d)
        self.action_bias_proj = nn.Linear(self.action_dim + self.state_dim, d)
        self.grid_mixer = GridMixer(d, self.grid)
        self.motion = MotionWarp(self.state_dim, self.action_dim, m.tokenizer_image_size)  # pixels: the proposal the codes correct
        self.state_proj = nn.Linear(self.state_dim, d)
        if self.memory_enabled:
            self.memory_proj = memory_projection(m, d)
            self.summary_proj = nn.Linear(d + self.action_dim + self.state_dim, d)
            self.gru = nn.GRU(d, self.memory_hidden, self.memory_layers)
        self.out_norm = nn.LayerNorm(d)
        self.logits_head = nn.Linear(d, self.codes.width)
        # the flow: each cell of frame t+1 says which nearby cell of frame t its content comes from
        self.flow_head = nn.Linear(d, FLOW_WINDOW**2)
        nn.init.zeros_(self.flow_head.weight)
        with torch.no_grad():
            self.flow_head.bias.zero_()
            self.flow_head.bias[FLOW_WINDOW**2 // 2] = FLOW_STAY_INIT  # the centre of the window: stay
        self.copy_gate = nn.Linear(d, 1)
        nn.init.zeros_(self.copy_gate.weight)
        nn.init.constant_(self.copy_gate.bias, COPY_GATE_INIT)
        nn.init.normal_(self.modality_embed.weight, std=0.02)
        nn.init.zeros_(self.logits_head.weight)
        nn.init.zeros_(self.logits_head.bias)

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

    def propose(self, tokenizer: FSQTokenizer, frames: Tensor, state: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        """The motion-compensated proposal for frame t+1: frames t (B,3,S,S) in [0,1], state (B,S) and action t (B,A)
        normalized -> (warped frames (B,3,S,S), their codes (B,n)). The codes are the tokenizer's, without gradient:
        the motion learns from its pixel loss (`motion_loss`), the codes' corrections from the cross-entropy."""
        warped = self.motion(frames, state, action)
        return warped, tokenizer.encode_frames(warped.detach())

    def propose_from(self, tokenizer: FSQTokenizer, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """`propose` for a step dict of any leading shape (...): its "frame" (...,3,S,S), "state" (...,S) and action t,
        the last slot of "action_hist" (...,h,A) -> (warped frames (...,3,S,S), their codes (...,n))."""
        frame = inputs["frame"]
        lead = frame.shape[:-3]
        warped, codes = self.propose(
            tokenizer, frame.reshape(-1, *frame.shape[-3:]), inputs["state"].reshape(-1, self.state_dim),
            inputs["action_hist"][..., -1, :].reshape(-1, self.action_dim),
        )  # fmt: skip
        return warped.view(*lead, *warped.shape[1:]), codes.view(*lead, -1)

    def _predict(
        self,
        wrist_hist: Tensor,
        head: Optional[Tensor],
        action_hist: Tensor,
        state: Tensor,
        pad_mask: Tensor,
        memory_top: Tensor,
        proposal: Optional[Tensor] = None,
    ) -> CodePrediction:
        """One backbone pass over N independent steps -> codes (N,n), digit logits (N,n,sum(levels)); memory_top (N,Hm) is m_t's top layer.

        proposal (N,n): the codes of the motion-compensated frame t+1 (`propose`), the grid the output
        corrects and copies from; None (the online phases, which keep no pixels) uses frame t's codes.
        """
        b, h, n = wrist_hist.shape
        assert (h, n) == (self.history, self.n_tokens), ("wrist_hist (B,h,n)", tuple(wrist_hist.shape), self.history, self.n_tokens)
        assert action_hist.shape[:2] == (b, h), (
            "image and action histories differ in length", tuple(wrist_hist.shape), tuple(action_hist.shape),
        )
        d = self.width
        pad = pad_mask.unsqueeze(-1).to(self.pad_embed.dtype) * self.pad_embed  # (B,h,d)
        query_tokens = wrist_hist[:, -1] if proposal is None else proposal  # (B,n)

        parts = []
        if self.memory_enabled:
            parts.append((self.memory_proj(memory_top) + self._modality("memory")).unsqueeze(1))  # (B,1,d)
        parts.append((self.state_proj(state) + self._modality("state")).unsqueeze(1))  # (B,1,d)
        parts.append(self.action_proj(action_hist) + self.slot_embed + self._modality("action") + pad)  # (B,h,d)
        # the history, frame t included (the query grid is the proposal's), pooled
        past = self.token_embed(wrist_hist).reshape(b * h, n, d)  # (B*h,n,d)
        past = pool_grid(past, self.grid).view(b, h, self.pooled, d) + self.pooled_pos_embed  # (B,h,n',d)
        past = past + (self._modality("wrist") + self.slot_embed + pad).unsqueeze(2)
        parts.append(past.flatten(1, 2))  # (B,h*n',d)
        if head is not None:
            head_tokens = pool_grid(self.token_embed(head), self.grid) + self.pooled_pos_embed  # (B,n',d)
            parts.append(head_tokens + self._modality("head"))
        conditioning = self.action_bias_proj(torch.cat([action_hist[:, -1], state], -1)).unsqueeze(1)  # (B,1,d)
        current = self.grid_mixer(self.token_embed(query_tokens) + self.grid_pos_embed + conditioning)  # (B,n,d) moved locally
        current = current + self._modality("query")
        parts.append(current)

        x = self.in_proj(torch.cat(parts, dim=1))  # (B,T,hidden)
        everything = torch.ones(1, 1, x.shape[1], x.shape[1], dtype=torch.bool, device=x.device)  # bidirectional
        out = self.out_proj(self.backbone(inputs_embeds=x, attention_mask=everything).last_hidden_state[:, -n:])  # (B,n,d)
        return self._pointer_generator(self.out_norm(out), query_tokens)  # (B,n,sum(levels)), (B,n)

    def _pointer_generator(self, out: Tensor, source_tokens: Tensor) -> CodePrediction:
        """Frame t+1's codes: out (B,n,d), source_tokens (B,n) -> per-digit log-probabilities (B,n,sum(levels)) and
        the mixture's most likely codes (B,n).

        source_tokens: the proposal's codes (or frame t's), called frame t below.
        p(digit) = g * sum_o flow_o * (the digit at offset o in frame t) + (1 - g) * softmax(generator):
        a local flow over the grid copies moved content code for code, whatever the scene's colours
        (a pointer-generator, See et al. 2017, over the FLOW_WINDOW x FLOW_WINDOW cells around each
        cell; frame borders repeat); the generator covers what no nearby cell of frame t holds.
        """
        b, n, _ = out.shape
        g, r, window = self.grid, FLOW_WINDOW // 2, FLOW_WINDOW**2
        source = F.pad(source_tokens.view(b, 1, g, g).float(), (r, r, r, r), mode="replicate")  # codes < 2^24: exact
        neighbours = F.unfold(source, FLOW_WINDOW).view(b, window, n).transpose(1, 2).long()  # (B,n,W^2) their codes
        flow = torch.softmax(self.flow_head(out).float(), -1)  # (B,n,W^2)
        # each neighbour's flow weight added to its digits' bins: (B,n,sum(levels)), each digit sums to 1
        bins = self.codes.bins(neighbours).flatten(2)  # (B,n,W^2*D)
        weights = flow.unsqueeze(-1).expand(b, n, window, len(self.levels)).flatten(2)  # (B,n,W^2*D)
        pointer = flow.new_zeros(b, n, self.codes.width).scatter_add(-1, bins, weights)
        gate = torch.sigmoid(self.copy_gate(out).float())  # (B,n,1)
        generator = [torch.log_softmax(part.float(), -1) for part in self.codes.split(self.logits_head(out))]
        logits = torch.log((gate * pointer + (1 - gate) * torch.cat(generator, -1).exp()).clamp_min(1e-9))
        with torch.no_grad():
            codes = mixture_mode(self.codes, neighbours, flow, gate.squeeze(-1), [part.detach() for part in generator])
        return CodePrediction(logits, codes)

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
        proposal: Optional[Tensor] = None,
    ) -> tuple[CodePrediction, Tensor]:
        """One step t -> (the prediction of wrist frame t+1's codes: (B,n) and digit logits (B,n,sum(levels)), m_{t+1}).

        wrist_hist (B,h,n) long, head (B,n) long or None, action_hist (B,h,A) (the last slot holds
        action t), state (B,S) normalized, pad_mask (B,h) bool, memory (L_m,B,Hm), is_first (B,) bool,
        proposal (B,n) long or None (`propose`).
        """
        memory = self._reset(memory, is_first, step_index)  # (L_m,B,Hm) m_t
        prediction = self._predict(wrist_hist, head, action_hist, state, pad_mask, memory[-1], proposal)
        return prediction, self._next_memory(wrist_hist[:, -1], action_hist[:, -1], state, memory)

    def advance_memory(
        self, current_tokens: Tensor, action: Tensor, state: Tensor, memory: Tensor, is_first: Tensor, step_index: Optional[int] = None
    ) -> Tensor:
        """m_{t+1} alone, as `step` returns it, without the prediction: current_tokens (B,n) frame t's codes,
        action (B,A) a_t, state (B,S) normalized, memory (L_m,B,Hm) m_t, is_first (B,) -> (L_m,B,Hm)."""
        return self._next_memory(current_tokens, action, state, self._reset(memory, is_first, step_index))

    # ------------------------------------------------------------------ a TBPTT chunk

    def forward_chunk(self, inputs: dict[str, Tensor], memory: Optional[Tensor]) -> tuple[CodePrediction, Tensor, Tensor]:
        """Run L steps -> (the prediction: codes (B,L,n), digit logits (B,L,n,sum(levels)); memory after the chunk, memory_trace (B,L,Hm)).

        inputs: wrist_hist (B,L,h,n), head (B,L,n) (optional), action_hist (B,L,h,A), state (B,L,S),
        pad_mask (B,L,h), is_first (B,L), proposal (B,L,n) (optional, `propose`). memory_trace[:, k] is the top layer of the memory step k
        used (after its is_first reset). Gradients cross steps through the memory unless
        training.memory_backprop is false; the caller detaches between chunks.

        Same result as L calls of `step`, but faster: the memory's inputs are the step's own
        inputs (never the backbone's outputs), so the GRU runs first, step by step (resets
        inside the loop), and the backbone then sees all B x L steps in one batch.
        """
        wrist_hist, head, proposal = inputs["wrist_hist"], inputs.get("head"), inputs.get("proposal")
        b, length = wrist_hist.shape[:2]
        used = []
        for k in range(length):
            if memory is not None and not self.memory_backprop:
                memory = memory.detach()
            memory = self._reset(memory, inputs["is_first"][:, k], k)  # (L_m,B,Hm) m_k
            used.append(memory[-1])
            memory = self._next_memory(wrist_hist[:, k, -1], inputs["action_hist"][:, k, -1], inputs["state"][:, k], memory)
        trace = torch.stack(used, 1)  # (B,L,Hm)
        logits, codes = self._predict(
            wrist_hist.flatten(0, 1),  # (B*L,h,n)
            head.flatten(0, 1) if head is not None else None,
            inputs["action_hist"].flatten(0, 1),
            inputs["state"].flatten(0, 1),
            inputs["pad_mask"].flatten(0, 1),
            trace.flatten(0, 1),  # (B*L,Hm)
            proposal.flatten(0, 1) if proposal is not None else None,  # (B*L,n)
        )
        prediction = CodePrediction(logits.view(b, length, self.n_tokens, -1), codes.view(b, length, self.n_tokens))
        return prediction, memory, trace  # (B,L,n,sum(levels)) and (B,L,n), (L_m,B,Hm), (B,L,Hm)

    # ------------------------------------------------------------------ losses and rewards

    def loss(self, prediction: CodePrediction, target_tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Code cross-entropy over valid positions: prediction (B,L,n,...), targets (B,L,n), mask (B,L) -> (loss, token accuracy)."""
        logits = prediction.logits.float()
        assert logits.shape[:3] == target_tokens.shape and mask.shape == logits.shape[:2], (
            tuple(logits.shape), tuple(target_tokens.shape), tuple(mask.shape),
        )
        valid_logits = logits[mask]  # (V,n,sum(levels))
        valid_targets = target_tokens[mask].long()  # (V,n)
        if valid_targets.numel() == 0:  # a chunk of padding only: no signal, but keep the graph
            return logits.sum() * 0.0, logits.new_zeros(())
        loss = self.codes.nll(valid_logits, valid_targets).mean()
        accuracy = (prediction.codes[mask] == valid_targets).float().mean()
        return loss, accuracy

    def motion_loss(self, warped: Tensor, next_frames: Tensor, mask: Tensor) -> Tensor:
        """Mean L1 of the proposal against frame t+1 over valid positions: warped, next_frames (B,L,3,S,S), mask (B,L)."""
        assert warped.shape == next_frames.shape and mask.shape == warped.shape[:2], (
            tuple(warped.shape), tuple(next_frames.shape), tuple(mask.shape),
        )
        if not bool(mask.any()):
            return warped.sum() * 0.0
        return (warped[mask].float() - next_frames[mask].float()).abs().mean()

    def uncertainty(self, logits: Tensor) -> Tensor:
        """Mean per-token entropy (nats) of the predicted next frame: logits (B,n,sum(levels)) -> (B,)."""
        return self.codes.entropy(logits).mean(-1)
