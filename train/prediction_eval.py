"""How well a world model predicts held-out episodes, against baselines computed on the same frames.

The model's frame. The world model first proposes frame t+1 in pixels, frame t warped by the
motion it predicts (w_t = W(x_t, state_t, a_t), f1.train.models.motion), then predicts the codes
of frame t+1 as a correction of the proposal's codes p_t = E(w_t). Decoded alone, codes can be no
better than the tokenizer, which loses detail the warped pixels keep; so the predicted frame is
the proposal plus the correction the model predicts, decoded (a residual in pixels):

    x^_{t+1} = clip(w_t + D(z^_{t+1}) - D(p_t)),   z^ the most likely codes, D the tokenizer's decoder

Where the codes keep the proposal's, x^_{t+1} = w_t exactly; where they depart from it, the
tokenizer's decoding of that change is added. Open loop the model warps its own last frame:
x^_{t0} = x_{t0}, w = W(x^_{t0+k-1}, ...), x^_{t0+k} = clip(w + D(z^_{t0+k}) - D(E(w))).

For each episode (N steps, frames at the tokenizer's S x S, pixels in [0, 1]):

One step (teacher forcing: true history, memory carried from zeros), every step t < N-1 predicts frame t+1:
- psnr_model / ssim_model: the model's frame (above)
- psnr_motion: the proposal w_t alone (the motion compensation without the codes' correction)
- psnr_model_codes: its most likely codes decoded alone (comparable with the ceiling)
- token_accuracy: most likely codes (the mixture's mode, f1.train.models.world_model) equal to the
  tokenizer's codes of the true frame t+1
- token_accuracy_motion: the proposal's codes p_t equal to them (the motion alone)
- psnr_copy_current / ssim_copy_current / token_accuracy_copy_current: frame t (its codes) as the prediction
- psnr_copy_current_tokens: frame t's codes decoded (what the codes of a copying model decode to)
- psnr_tokenizer: the tokenizer's reconstruction of frame t+1 (the ceiling of psnr_model_codes)
- psnr_shuffled_actions: the model again (motion and codes), the episode's actions permuted in time (same frames)
- psnr_memory_zeroed: the model again, its memory zeroed at every step (the memory ablation)
- psnr_model_without_head: the model again without the head frame (only when it is fed one): what the
  wrist-only online phases get from the same teacher

Open loop, k = 1..horizon: from each start t0 (every OPEN_LOOP_START_EVERY steps) the model sees the
true frames up to t0 and its memory there (from the teacher-forced pass), then is fed its own most
likely codes and warps its own frames; true actions and states all along. At k it predicts frame t0+k:
- psnr_model, ssim_model, psnr_copy_last (frame t0 as the prediction), psnr_shuffled_actions, psnr_tokenizer.

Every figure is a mean over per-frame values, pooled over episodes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping, Optional

import numpy as np
import torch
from torch import Tensor

from f1.shared.normalizers import Normalizer
from f1.train.image_metrics import psnr_per_frame, ssim_per_frame
from f1.train.models.tokenizer import FSQTokenizer
from f1.train.models.world_model import WorldModel
from f1.train.offline.teacher_batch import FrameTokens, chunk_inputs, episode_chunk, own_frames, tokenize_frames
from f1.train.offline.token_cache import preprocess_frames

OPEN_LOOP_HORIZON = 16
OPEN_LOOP_START_EVERY = 4
DECODE_BATCH = 64


def to_frames(images: Tensor) -> np.ndarray:
    """float (N,3,S,S) -> numpy (N,S,S,3) in [0,1]."""
    return images.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()


def shuffle_actions(actions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The episode's actions permuted in time: the same actions, the same frames, the wrong order.

    (N,A): steps 0..N-2 are permuted among themselves; the last step's padding action stays last.
    """
    order = np.concatenate([rng.permutation(len(actions) - 1), [len(actions) - 1]])
    return actions[order]


@dataclass
class EpisodeTensors:
    """One episode's frames and codes at the tokenizer's resolution."""

    frames: Tensor  # (N,3,S,S) the true frames in [0,1] (8-bit, as the teacher trained on them)
    truth: np.ndarray  # (N,S,S,3) the same frames as numpy
    tokens: Tensor  # (N,n) the tokenizer's codes
    recon: np.ndarray  # (N,S,S,3) the codes decoded
    head: Optional[Tensor]  # (N,n) the head camera's codes, when the model is fed them


class PredictionEvaluator:
    """A frozen world model + tokenizer, evaluated episode by episode; `summary()` pools the figures."""

    def __init__(
        self,
        model: WorldModel,
        tokenizer: FSQTokenizer,
        normalizers: Mapping[str, Normalizer],
        history: int,
        stride: int,
        use_head: bool,
        seed: int = 0,
        horizon: int = OPEN_LOOP_HORIZON,
    ):
        self.model, self.tokenizer, self.normalizers = model, tokenizer, normalizers
        self.history, self.stride, self.use_head, self.horizon = history, stride, use_head, horizon
        self.device = next(model.parameters()).device
        self.rng = np.random.default_rng(seed)
        self.one_step: dict[str, list[np.ndarray]] = {}
        self.open_loop: dict[str, list[list[np.ndarray]]] = {}
        self.first_rollout: Optional[dict[str, np.ndarray]] = None

    # ------------------------------------------------------------------ pieces

    def _decode(self, tokens: Tensor) -> np.ndarray:
        return to_frames(torch.cat([self.tokenizer.decode(tokens[i : i + DECODE_BATCH]) for i in range(0, len(tokens), DECODE_BATCH)]))

    def _residual(self, tokens: Tensor, reference: np.ndarray, reference_decoded: np.ndarray) -> np.ndarray:
        """Predicted codes (N,n) -> the model's frames: reference (N,S,S,3) + (D(codes) - D(reference codes)), clipped.

        reference_decoded = self._decode(reference codes) of the same shape: both decoded alike, so an
        unchanged code adds exactly zero.
        """
        return np.clip(reference + (self._decode(tokens) - reference_decoded), 0.0, 1.0)

    def _episode_tensors(self, arrays: Mapping[str, np.ndarray]) -> EpisodeTensors:
        wrist = torch.from_numpy(arrays["wrist_rgb"]).to(self.device)
        tokens = tokenize_frames(self.tokenizer, wrist, DECODE_BATCH)  # (N,n)
        frames = preprocess_frames(self.tokenizer, wrist, DECODE_BATCH)  # (N,3,S,S)
        head = tokenize_frames(self.tokenizer, torch.from_numpy(arrays["head_rgb"]).to(self.device), DECODE_BATCH) if self.use_head else None
        return EpisodeTensors(frames, to_frames(frames), tokens, self._decode(tokens), head)

    def _teacher_forced(
        self, arrays: Mapping[str, np.ndarray], ep: EpisodeTensors, zero_memory: bool = False, memories: Optional[list[Tensor]] = None
    ) -> tuple[Tensor, list[Tensor], Tensor, Tensor]:
        """-> (the most likely codes of frames 1..N-1 (N-1,n), the memory m_t used at each step t = 0..N-2,
        the proposals: warped frames (N-1,3,S,S) and their codes (N-1,n)).

        memories: the memory to use at each step instead of the episode's own (another episode's: the
        memory's content, not its presence, is what it gives); the last one repeats past its end."""
        chunk = episode_chunk(arrays, self.history, self.stride)
        if zero_memory:
            chunk["is_first"] = np.ones_like(chunk["is_first"])  # the memory is zeroed wherever is_first
        index = torch.from_numpy(chunk["history_index"][0] - (self.history - 1) * self.stride).clamp(min=0)  # (L,h) steps
        wrist_hist = ep.tokens[index.to(self.device)].unsqueeze(0)  # (1,L,h,n)
        head = ep.head[:-1].unsqueeze(0) if ep.head is not None else None
        tokens = FrameTokens(wrist_hist, head, ep.tokens[1:].unsqueeze(0), ep.frames[:-1].unsqueeze(0), ep.frames[1:].unsqueeze(0))
        inputs, _, _ = chunk_inputs(chunk, tokens, self.normalizers, self.device)
        # the proposals of all steps at once: the motion sees only step t's own frame, state and action
        warped, proposal = (x[0] for x in self.model.propose_from(self.tokenizer, inputs))  # (L,3,S,S), (L,n)
        memory = self.model.initial_memory(1, self.device)
        predicted, used = [], []
        for k in range(inputs["is_first"].shape[1]):
            step_inputs = {key: value[:, k] for key, value in inputs.items()}
            memory = self.model._reset(memory, step_inputs["is_first"], k)
            if memories is not None:
                memory = memories[min(k, len(memories) - 1)]
            used.append(memory)
            prediction, memory = self.model.step(
                step_inputs["wrist_hist"], step_inputs.get("head"), step_inputs["action_hist"], step_inputs["state"],
                step_inputs["pad_mask"], memory, step_inputs["is_first"], step_index=k, proposal=proposal[k : k + 1],
            )  # fmt: skip
            predicted.append(prediction.codes[0])
        return torch.stack(predicted), used, warped, proposal

    def _open_loop(
        self, arrays: Mapping[str, np.ndarray], ep: EpisodeTensors, memories: list[Tensor], starts: list[int], horizon: int,
        zero_memory: bool = False,
    ) -> list[tuple[Tensor, Tensor, np.ndarray]]:
        """-> per k = 1..horizon, (alive lanes, their most likely codes (B',n), their frames (B',S,S,3)):
        lanes (starts) whose t0+k exists; fed those codes and their own frames. zero_memory: the memory is
        zeroed at every step (the ablation), not carried from `memories`."""
        n_steps = len(ep.tokens)
        lanes = len(starts)
        buffer = ep.tokens.unsqueeze(0).repeat(lanes, 1, 1)  # (B,N,n): true codes, overwritten by predictions
        start = torch.tensor(starts, device=self.device)  # (B,)
        memory = torch.cat([memories[t0] for t0 in starts], dim=1)  # (L_m,B,Hm)
        action = self.normalizers["action"].normalize(torch.from_numpy(arrays["action"]).float().to(self.device))  # (N,A)
        state = self.normalizers["state"].normalize(torch.from_numpy(arrays["state"]).float().to(self.device))  # (N,S)
        head = ep.head
        frame = ep.frames[start]  # (B,3,S,S): each lane's last frame, true at t0, then its own
        offsets = torch.arange(self.history, device=self.device) - (self.history - 1)  # (h,)
        per_k = []
        for k in range(1, horizon + 1):
            t = start + k - 1  # (B,) the step each lane predicts from
            alive = (t + 1 < n_steps).nonzero().flatten()
            if len(alive) == 0:
                break
            t_safe = t.clamp(max=n_steps - 2)
            slots = t_safe[:, None] + offsets * self.stride  # (B,h)
            pad = slots < 0
            slots = slots.clamp(min=0)
            lane = torch.arange(lanes, device=self.device)[:, None]
            warped, proposal = self.model.propose(self.tokenizer, frame, state[t_safe], action[t_safe])
            prediction, memory = self.model.step(
                buffer[lane, slots], head[t_safe] if head is not None else None, action[slots], state[t_safe], pad, memory,
                torch.full((lanes,), zero_memory, dtype=torch.bool, device=self.device), proposal=proposal,
            )  # fmt: skip
            codes = prediction.codes  # (B,n)
            buffer[torch.arange(lanes, device=self.device), t_safe + 1] = codes
            frame = own_frames(self.tokenizer, warped, codes, proposal)  # (B,3,S,S)
            per_k.append((alive, codes[alive], to_frames(frame[alive])))
        return per_k

    # ------------------------------------------------------------------ one episode

    @torch.no_grad()
    def episode_rollout(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray | float]:
        """The whole episode predicted from step 0 (what teacher samples show): frames in [0,1] at S x S.

        -> {"truth" (N,...), "one_step" (N-1,...) frames 1..N-1 by teacher forcing,
            "open_loop" (N-1,...) frames 1..N-1 fed its own codes from frame 0, "token_accuracy" one step}
        """
        ep = self._episode_tensors(arrays)
        argmax, memories, warped, proposal = self._teacher_forced(arrays, ep)  # (N-1,n) the most likely codes
        rolled = self._open_loop(arrays, ep, memories, [0], horizon=len(ep.tokens) - 1)
        return {
            "truth": ep.truth,
            "one_step": self._residual(argmax, to_frames(warped), self._decode(proposal)),
            "open_loop": np.concatenate([frames for _, _, frames in rolled]),  # (N-1,S,S,3) frames 1..N-1
            "token_accuracy": float((argmax == ep.tokens[1:]).float().mean()),
        }


    @torch.no_grad()
    def add_episode(self, arrays: Mapping[str, np.ndarray]) -> None:
        ep = self._episode_tensors(arrays)
        truth_next, current = ep.truth[1:], ep.truth[:-1]
        argmax_tokens, memories, warped, proposal = self._teacher_forced(arrays, ep)  # (N-1,n) the most likely codes
        shuffled = {**arrays, "action": shuffle_actions(arrays["action"], self.rng)}
        codes_shuffled, _, warped_shuffled, proposal_shuffled = self._teacher_forced(shuffled, ep)
        codes_zeroed, _, _, _ = self._teacher_forced(arrays, ep, zero_memory=True)
        reference, reference_decoded = to_frames(warped), self._decode(proposal)  # the proposal: what the codes correct
        predicted = self._residual(argmax_tokens, reference, reference_decoded)
        shuffled_frames = self._residual(codes_shuffled, to_frames(warped_shuffled), self._decode(proposal_shuffled))
        figures = {
            "psnr_model": psnr_per_frame(predicted, truth_next),
            "psnr_motion": psnr_per_frame(reference, truth_next),
            "psnr_model_codes": psnr_per_frame(self._decode(argmax_tokens), truth_next),
            "psnr_copy_current": psnr_per_frame(current, truth_next),
            "psnr_copy_current_tokens": psnr_per_frame(ep.recon[:-1], truth_next),
            "psnr_tokenizer": psnr_per_frame(ep.recon[1:], truth_next),
            "psnr_shuffled_actions": psnr_per_frame(shuffled_frames, truth_next),
            "psnr_memory_zeroed": psnr_per_frame(self._residual(codes_zeroed, reference, reference_decoded), truth_next),
            "ssim_model": ssim_per_frame(predicted, truth_next),
            "ssim_copy_current": ssim_per_frame(current, truth_next),
            "token_accuracy": (argmax_tokens == ep.tokens[1:]).float().mean(1).cpu().numpy(),
            "token_accuracy_copy_current": (ep.tokens[:-1] == ep.tokens[1:]).float().mean(1).cpu().numpy(),
            "token_accuracy_motion": (proposal == ep.tokens[1:]).float().mean(1).cpu().numpy(),
            "token_accuracy_shuffled_actions": (codes_shuffled == ep.tokens[1:]).float().mean(1).cpu().numpy(),
        }
        if ep.head is not None:
            codes_wrist, _, warped_wrist, proposal_wrist = self._teacher_forced(arrays, replace(ep, head=None))
            wrist_only = self._residual(codes_wrist, to_frames(warped_wrist), self._decode(proposal_wrist))
            figures["psnr_model_without_head"] = psnr_per_frame(wrist_only, truth_next)
        for key, values in figures.items():
            self.one_step.setdefault(key, []).append(values)

        starts = list(range(0, len(ep.tokens) - 1, OPEN_LOOP_START_EVERY))
        rolled = self._open_loop(arrays, ep, memories, starts, self.horizon)
        rolled_shuffled = self._open_loop(shuffled, ep, memories, starts, self.horizon)
        start = np.array(starts)
        # rollout.png: the first episode's rollout from step 0, truth above prediction
        capture = None if self.first_rollout is not None else {"truth": ep.truth[: self.horizon + 1], "predicted": []}
        for k, ((alive, _, frames), (_, _, frames_shuffled)) in enumerate(zip(rolled, rolled_shuffled), start=1):
            alive_np = alive.cpu().numpy()
            t0 = start[alive_np]
            target = ep.truth[t0 + k]
            row = {
                "psnr_model": psnr_per_frame(frames, target),
                "ssim_model": ssim_per_frame(frames, target),
                "psnr_copy_last": psnr_per_frame(ep.truth[t0], target),
                "psnr_shuffled_actions": psnr_per_frame(frames_shuffled, target),
                "psnr_tokenizer": psnr_per_frame(ep.recon[t0 + k], target),
            }
            for key, values in row.items():
                self.open_loop.setdefault(key, [[] for _ in range(self.horizon)])[k - 1].append(values)
            if capture is not None and alive_np[0] == 0:
                capture["predicted"].append(frames[0])
        if capture is not None:
            self.first_rollout = capture

    # ------------------------------------------------------------------ results

    def summary(self) -> dict:
        """{"one_step": {figure: mean}, "open_loop": [{k, figure: mean}], "memory": {...}, "frames": counts}."""
        one_step = {key: float(np.concatenate(values).mean()) for key, values in self.one_step.items()}
        open_loop = []
        for k in range(self.horizon):
            if not self.open_loop or not self.open_loop["psnr_model"][k]:
                break
            row = {"k": k + 1, "frames": int(sum(len(v) for v in self.open_loop["psnr_model"][k]))}
            row.update({key: float(np.concatenate(values[k]).mean()) for key, values in self.open_loop.items()})
            open_loop.append(row)
        memory = {
            "psnr_memory_carried": one_step["psnr_model"],
            "psnr_memory_zeroed": one_step.pop("psnr_memory_zeroed"),
        }
        memory["gain_db"] = memory["psnr_memory_carried"] - memory["psnr_memory_zeroed"]
        return {
            "one_step": one_step,
            "open_loop": open_loop,
            "memory": memory,
            "frames": int(sum(len(v) for v in self.one_step["psnr_model"])),
        }
