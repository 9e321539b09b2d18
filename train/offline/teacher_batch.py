"""A replay chunk (numpy, DESIGN §4) -> the world model's inputs, next-frame targets and loss mask.

Window arrays span C + L + 1 positions per lane (C = (h-1)s): chunk position
p sits at window position C+p, its history slots at `history_index[:, p]`,
its next wrist frame (the target) at C+p+1. Tokens (and the wrist frames t and
t+1 at the tokenizer's size, which the motion compensation warps and is scored
on) come either from the token store or the in-memory token cache, by each
position's (episode, step) (`cached_tokens`, the default), or from the window's
frames (`window_tokens`); all give the same (tested).
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Optional

import numpy as np
import torch
from torch import Tensor, nn

from f1.shared.normalizers import Normalizer
from f1.train.offline.token_cache import TokenCache, preprocess_frames
from f1.train.offline.token_store import TokenStore
from f1.train.models.tokenizer import FSQTokenizer
from f1.train.models.world_model import CodePrediction, WorldModel


class ChunkModel(nn.Module):
    """The world model with `forward` = its motion proposal (when inputs hold frames) + `forward_chunk`.

    DistributedDataParallel syncs gradients only for work done through
    `forward`, and WorldModel has none, so this is what `accelerate.prepare` wraps.
    The frozen tokenizer encodes the proposals; it is kept outside the module's
    parameters (a plain attribute), so DDP neither syncs nor checkpoints it.
    """

    def __init__(self, world_model: WorldModel, tokenizer: Optional[FSQTokenizer] = None, pred_steps: int = 1) -> None:
        super().__init__()
        self.world_model = world_model
        self.pred_steps = pred_steps  # training.n_pred_img_steps: frames t+1..t+n
        self.__dict__["tokenizer"] = tokenizer  # not a submodule: frozen, never saved with the world model
        # DDP wants a gradient for every trainable parameter; the backbone's own token table never
        # gets one (the world model feeds it inputs_embeds), so it is frozen rather than paying for
        # find_unused_parameters' graph walk every step.
        world_model.backbone.get_input_embeddings().requires_grad_(False)

    def forward(self, inputs: dict[str, Tensor], memory: Tensor) -> tuple[CodePrediction, Tensor, Tensor, Optional[Tensor], list]:
        """-> (the prediction (B,L,n,...), memory, memory trace, warped frames (B,L,3,S,S) or None without frames,
        the frames further ahead: [(prediction, warped)] for k = 2..pred_steps (`ahead`))."""
        if "frame" not in inputs:
            return (*self.world_model.forward_chunk(inputs, memory), None, [])
        assert self.tokenizer is not None, "ChunkModel needs the tokenizer to encode motion proposals"
        warped, proposal = self.world_model.propose_from(self.tokenizer, inputs)  # (B,L,3,S,S), (B,L,n)
        chunk = {key: value for key, value in inputs.items() if key != "frame"}
        chunk["proposal"] = proposal
        prediction, memory, trace = self.world_model.forward_chunk(chunk, memory)
        further = self.ahead(chunk, prediction, warped, chunk["proposal"], trace) if self.pred_steps > 1 else []
        return prediction, memory, trace, warped, further

    def ahead(
        self, inputs: dict[str, Tensor], prediction: CodePrediction, warped: Tensor, proposal: Tensor, trace: Tensor
    ) -> list[tuple[CodePrediction, Tensor]]:
        """Frames t+2 .. t+n (n = pred_steps), each predicted from the model's own frame one step before.

        Pass k predicts, at chunk position p (0 <= p <= L-k), frame p+k from step q = p+k-1: q's state,
        actions, head frame and memory (the teacher-forced trace), but in place of the true frame q
        (pixels and the history's last codes) the model's own prediction of it from pass k-1, detached:
        what open loop feeds it. -> [(prediction (B,L-k+1,n,...), warped (B,L-k+1,3,S,S))] for k = 2..n;
        their targets are the chunk's targets from position k-1 on (`ahead_mask` says which count).
        """
        wm, tokenizer = self.world_model, self.tokenizer
        b, length = prediction.codes.shape[:2]
        out = []
        codes = prediction.codes  # (B,L,n) the model's frame p+1, as codes
        own = own_frames(tokenizer, warped.detach(), codes, proposal)  # (B,L,3,S,S) ... and as pixels
        for k in range(2, min(self.pred_steps, length) + 1):
            span = length - k + 1  # positions p = 0 .. L-k

            def at_q(x: Tensor) -> Tensor:
                return x[:, k - 1 :].flatten(0, 1)  # step q = p+k-1 of every position: (B*span, ...)

            history = inputs["wrist_hist"][:, k - 1 :].clone()  # (B,span,h,n)
            history[:, :, -1] = codes[:, :span]  # frame q: the model's own
            state, action_hist = at_q(inputs["state"]), at_q(inputs["action_hist"])
            warped_k, proposal_k = wm.propose(tokenizer, own[:, :span].flatten(0, 1), state, action_hist[:, -1])
            logits_k, codes_k = wm._predict(
                history.flatten(0, 1), at_q(inputs["head"]) if "head" in inputs else None, action_hist, state,
                at_q(inputs["pad_mask"]), at_q(trace), proposal_k,
            )  # fmt: skip
            codes = codes_k.view(b, span, -1)  # (B,span,n)
            warped_k = warped_k.view(b, span, *warped.shape[2:])
            out.append((CodePrediction(logits_k.view(b, span, *prediction.logits.shape[2:]), codes), warped_k))
            own = own_frames(tokenizer, warped_k.detach(), codes, proposal_k.view(b, span, -1))
        return out


def own_frames(tokenizer: FSQTokenizer, warped: Tensor, codes: Tensor, proposal: Tensor) -> Tensor:
    """The model's frames: the proposal plus the codes' correction, decoded (f1.train.prediction_eval).

    warped (...,3,S,S), codes and proposal (...,n) -> (...,3,S,S) in [0,1], without gradient.
    """
    with torch.no_grad():
        n = codes.shape[-1]
        change = tokenizer.decode(codes.reshape(-1, n)) - tokenizer.decode(proposal.reshape(-1, n))  # (F,3,S,S)
        return (warped + change.view_as(warped)).clamp(0, 1)


def ahead_mask(mask: Tensor, is_first: Tensor, k: int) -> Tensor:
    """Which positions p of pass k count: frame p+k has a target (mask at q = p+k-1) in the same episode as p.

    mask, is_first (B,L) bool -> (B,L-k+1) bool.
    """
    episode = is_first.long().cumsum(1)  # (B,L): which episode of the lane each position is in
    return mask[:, k - 1 :] & (episode[:, k - 1 :] == episode[:, : mask.shape[1] - k + 1])


def to_device(array: np.ndarray, device: torch.device) -> Tensor:
    """numpy -> tensor on `device`; pinned and non-blocking for a GPU."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor


@torch.no_grad()
def tokenize_frames(tokenizer: FSQTokenizer, frames: Tensor, batch: int = 256) -> Tensor:
    """uint8 (..., H, W, 3) -> tokens (..., n), encoded `batch` frames at a time."""
    lead = frames.shape[:-3]
    flat = frames.reshape(-1, *frames.shape[-3:])  # (F,H,W,3)
    tokens = torch.cat([tokenizer.encode(flat[i : i + batch]) for i in range(0, flat.shape[0], batch)])  # (F,n)
    return tokens.view(*lead, -1)


def gather_positions(window: Tensor, index: Tensor) -> Tensor:
    """window (B, W, ...) gathered at index (B, L, h) -> (B, L, h, ...)."""
    b = window.shape[0]
    lanes = torch.arange(b, device=window.device).view(b, 1, 1)  # (B,1,1)
    return window[lanes, index]


class FrameTokens(NamedTuple):
    """A chunk's codes and the wrist frames the motion compensation needs."""

    wrist_hist: Tensor  # (B,L,h,n) long
    head: Optional[Tensor]  # (B,L,n) long, or None
    target: Tensor  # (B,L,n) long: the next wrist frame's codes
    frame: Tensor  # (B,L,3,S,S) float in [0,1]: wrist frame t at the tokenizer's size (zeros on padding)
    next_frame: Tensor  # (B,L,3,S,S): wrist frame t+1, the motion's target


def window_tokens(chunk: Mapping[str, Any], tokenizer: FSQTokenizer, device: torch.device, use_head: bool) -> FrameTokens:
    """Tokenise the chunk's window frames (C + L + 1 per lane), then pick each position's."""
    length = chunk["history_index"].shape[1]
    context = chunk["wrist_rgb"].shape[1] - length - 1  # C: the window has C + L + 1 positions
    wrist_rgb = to_device(chunk["wrist_rgb"], device)
    wrist = tokenize_frames(tokenizer, wrist_rgb)  # (B,C+L+1,n)
    frames = preprocess_frames(tokenizer, wrist_rgb[:, context : context + length + 1])  # (B,L+1,3,S,S)
    head = None
    if use_head:
        head = tokenize_frames(tokenizer, to_device(chunk["head_rgb"][:, context : context + length], device))  # (B,L,n)
    history = gather_positions(wrist, to_device(chunk["history_index"], device))  # (B,L,h,n)
    return FrameTokens(history, head, wrist[:, context + 1 : context + length + 1], frames[:, :-1], frames[:, 1:])


def cached_tokens(chunk: Mapping[str, Any], cache: TokenCache | TokenStore, history: int, stride: int, device: torch.device, use_head: bool) -> FrameTokens:
    """The same tokens from the cache, by each position's (episode, step): no frame is read or encoded.

    History slots follow the replay's rule (DESIGN §2): steps k-(h-1)s .. k of the
    position's own episode, steps before 0 repeating step 0.
    """
    episode, step = chunk["episode_index"], chunk["step"]  # (B,L), -1 on padding
    offsets = (np.arange(history) - (history - 1)) * stride  # (h,)
    history_step = np.maximum(step[..., None] + offsets, 0)  # (B,L,h)
    history_episode = np.broadcast_to(episode[..., None], history_step.shape)  # (B,L,h)
    next_step = np.where(chunk["target_valid"], step + 1, 0)  # (B,L)
    wrist_history = cache.gather("wrist", history_episode, history_step).to(device)  # (B,L,h,n)
    head = cache.gather("head", episode, np.maximum(step, 0)).to(device) if use_head else None  # (B,L,n)
    next_episode = np.where(chunk["target_valid"], episode, -1)  # (B,L)
    targets = cache.gather("wrist", next_episode, next_step).to(device)  # (B,L,n)
    frame = cache.gather_frames(episode, np.maximum(step, 0)).to(device)  # (B,L,3,S,S)
    next_frame = cache.gather_frames(next_episode, next_step).to(device)  # (B,L,3,S,S)
    return FrameTokens(wrist_history, head, targets, frame, next_frame)


def chunk_inputs(
    chunk: Mapping[str, Any],
    tokens: FrameTokens,
    normalizers: Mapping[str, Normalizer],
    device: torch.device,
) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """-> (ChunkModel inputs: forward_chunk's + "frame", target tokens (B,L,n), loss mask (B,L))."""
    history_index = to_device(chunk["history_index"], device)  # (B,L,h)
    length = history_index.shape[1]
    context = chunk["action"].shape[1] - length - 1  # C: the window has C + L + 1 positions
    action = normalizers["action"].normalize(to_device(chunk["action"], device).float())  # (B,C+L+1,A)
    state = normalizers["state"].normalize(to_device(chunk["state"], device).float())  # (B,C+L+1,S)
    inputs = {
        "wrist_hist": tokens.wrist_hist,  # (B,L,h,n)
        "action_hist": gather_positions(action, history_index),  # (B,L,h,A)
        "state": state[:, context : context + length],  # (B,L,S)
        "pad_mask": to_device(chunk["history_pad"], device),  # (B,L,h)
        "is_first": to_device(chunk["is_first"], device),  # (B,L)
        "frame": tokens.frame,  # (B,L,3,S,S)
    }
    if tokens.head is not None:
        inputs["head"] = tokens.head  # (B,L,n)
    return inputs, tokens.target, to_device(chunk["target_valid"], device)


def episode_chunk(arrays: Mapping[str, np.ndarray], history: int, stride: int) -> dict[str, np.ndarray]:
    """A whole episode of N steps as one lane-1 chunk of length N - 1 (every step that has a next frame).

    Same layout as the replay's chunks, so `chunk_inputs` serves samples too:
    window position C+k is step k, history slots before step 0 repeat it.
    """
    n = len(arrays["wrist_rgb"])
    assert n >= 2, ("an episode needs two steps to predict a frame", n)
    context = (history - 1) * stride
    pad_front = lambda a: np.concatenate([np.repeat(a[:1], context, 0), a])[None]  # noqa: E731 (1,C+N,...)
    steps = np.arange(n - 1)  # (L,) positions 0..N-2
    offsets = (np.arange(history) - (history - 1)) * stride  # (h,)
    history_step = steps[:, None] + offsets  # (L,h)
    chunk = {key: pad_front(arrays[key]) for key in ("wrist_rgb", "head_rgb", "action", "state") if key in arrays}
    chunk.update(
        history_index=(context + np.maximum(history_step, 0))[None],  # (1,L,h)
        history_pad=(history_step < 0)[None],
        is_first=(steps == 0)[None],
        target_valid=np.ones((1, n - 1), bool),
    )
    return chunk


def memory_norm(memory: Tensor) -> float:
    """Mean L2 norm of the top layer's per-lane memory: memory (L_m, B, Hm)."""
    return float(memory[-1].detach().float().norm(dim=-1).mean())
