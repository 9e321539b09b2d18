"""Does the memory remember what left the view? `f1 evaluate`'s memory-pixel figures.

Wrist-only, as the online phases run (the head frame dropped, whatever the teacher was fed). For
frame t+1, its *memory pixels* (f1.train.memory_pixels) are those no history frame t-(h-1)s .. t
shows but an earlier frame of the episode did: the short context cannot supply them, a memory
could. They are found at the store's resolution by reprojection (the store's wrist depth, poses and
intrinsics: a store collected with `--set environment.depth=true`), then taken to the tokenizer's
S x S where at least half of a pixel's footprint is memory pixels.

The model's one-step frame is predicted three times, each as `PredictionEvaluator` predicts it:
- carried: the memory as the replay carries it (zeros at the episode's start);
- zeroed: the memory zeroed at every step (the model without a memory);
- other episode: at step t, the memory another held-out episode had at its step t (what is left
  when the memory's presence, its scale and its timing are kept but its content is not this scene's);
beside the geometric oracle: the memory pixels coloured as the latest frame before the history saw
them (reprojected, f1.train.memory_pixels.last_seen), the rest of the frame the truth.

Figures (pixels in [0, 1]):
- psnr_carried, psnr_zeroed, psnr_other_episode, psnr_oracle: PSNR of the squared error pooled over
  every memory pixel of every evaluated frame (masked PSNR; frames with many memory pixels weigh more);
- steps_fraction: the share of evaluated steps whose frame t+1 has memory pixels, and frames: counts;
- full_frame_qualifying / full_frame_none: mean full-frame PSNR {carried, zeroed, frames} over steps whose
  memory pixels cover at least QUALIFYING_SHARE of the frame / cover none of it;
- open_loop: [{k, psnr_carried, psnr_zeroed, frames}]: open loop from every OPEN_LOOP_START_EVERY-th step
  (the carried memory, or zeroed at every step), masked PSNR on the memory pixels of frame t0+k.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from f1.train.image_metrics import psnr_per_frame
from f1.train.memory_pixels import episode_memory_pixels, last_seen
from f1.train.prediction_eval import OPEN_LOOP_START_EVERY, PredictionEvaluator, to_frames

MEMORY_KEYS = ("wrist_depth", "wrist_pose", "wrist_intrinsics")
QUALIFYING_SHARE = 0.10  # "steps where memory pixels cover at least 10 % of the frame"
MEMORY_HORIZON = 8  # open loop k = 1..8
PICTURE_ROWS = 6


def masked_psnr(squared_error_sum: float, pixels: int) -> float:
    """PSNR (dB) of a pooled squared error: the sum over pixels of the channel-mean squared error, and their count."""
    return float(10 * np.log10(1.0 / max(squared_error_sum / max(pixels, 1), 1e-10))) if pixels else float("nan")


def squared_error(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(N,S,S,3) x 2 -> (N,S,S): the channel-mean squared error of each pixel."""
    return ((predicted.astype(np.float64) - truth.astype(np.float64)) ** 2).mean(-1)


class MemoryPixelEvaluator:
    """Memory-pixel figures over held-out episodes with depth and poses; `summary()` pools them."""

    def __init__(self, evaluator: PredictionEvaluator):
        self.evaluator = evaluator
        self.span = (evaluator.history - 1) * evaluator.stride + 1  # the frames the history reaches back over
        self.sums: dict[str, float] = {"carried": 0.0, "zeroed": 0.0, "other_episode": 0.0, "oracle": 0.0}
        self.pixels = 0
        self.steps = self.steps_with = 0
        self.full: dict[str, dict[str, list[np.ndarray]]] = {"qualifying": {"carried": [], "zeroed": []}, "none": {"carried": [], "zeroed": []}}
        self.loop = {k: {"carried": 0.0, "zeroed": 0.0, "pixels": 0, "frames": 0} for k in range(1, MEMORY_HORIZON + 1)}
        self.picture: list[tuple[float, list[np.ndarray], np.ndarray]] = []  # (share, [truth, carried, zeroed, oracle], mask)

    def masks_and_oracle(self, arrays: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """-> (memory pixels of frames 1..N-1 at S x S (N-1,S,S) bool, the oracle's frames 1..N-1 (N-1,S,S,3) in [0,1])."""
        depth, pose, k = (arrays[key] for key in MEMORY_KEYS)
        frames = arrays["wrist_rgb"]  # (N,H,W,3) uint8 at the store's size
        full = episode_memory_pixels(depth, pose, k, history=self.span)  # (N,H,W), frame 0 all False
        oracle = np.stack([last_seen(frames, depth, pose, k, t, self.span, full[t]) for t in range(1, len(frames))])
        tokenizer = self.evaluator.tokenizer
        size = tokenizer.image_size
        share = F.adaptive_avg_pool2d(torch.from_numpy(full[1:, None].astype(np.float32)), size)[:, 0]  # (N-1,S,S)
        # the oracle goes through the tokenizer's own resize, as the true frames do: off the mask it is the truth
        oracle_small = to_frames(tokenizer.preprocess(torch.from_numpy(oracle).to(self.evaluator.device)))
        return (share >= 0.5).numpy(), oracle_small

    @torch.no_grad()
    def carried_memories(self, arrays: Mapping[str, np.ndarray]) -> list[Tensor]:
        """The memory an episode (wrist_rgb, action, state) carries at each step, wrist only: what `add_episode`
        returns for it, for an episode that is not evaluated itself."""
        ev = self.evaluator
        return ev._teacher_forced(arrays, replace(ev._episode_tensors(arrays), head=None))[1]

    @torch.no_grad()
    def add_episode(self, arrays: Mapping[str, np.ndarray], other_memories: list[Tensor]) -> list[Tensor]:
        """One held-out episode (wrist_rgb, action, state and MEMORY_KEYS) and another episode's memories at each step
        (`carried_memories`, or what `add_episode` returned for it) -> this episode's own memories, for the next call."""
        ev = self.evaluator
        ep = replace(ev._episode_tensors(arrays), head=None)  # wrist-only
        mask, oracle = self.masks_and_oracle(arrays)  # (N-1,S,S), (N-1,S,S,3)
        truth = ep.truth[1:]  # (N-1,S,S,3)

        predicted = {}
        # each pass decoded from its own proposals: a memory that moved the warped frame would be counted too
        codes, memories, warped, proposal = ev._teacher_forced(arrays, ep)
        predicted["carried"] = ev._residual(codes, to_frames(warped), ev._decode(proposal))
        codes, _, warped, proposal = ev._teacher_forced(arrays, ep, zero_memory=True)
        predicted["zeroed"] = ev._residual(codes, to_frames(warped), ev._decode(proposal))
        codes, _, warped, proposal = ev._teacher_forced(arrays, ep, memories=other_memories)
        predicted["other_episode"] = ev._residual(codes, to_frames(warped), ev._decode(proposal))
        predicted["oracle"] = oracle

        for name, frames in predicted.items():
            self.sums[name] += float(squared_error(frames, truth)[mask].sum())
        self.pixels += int(mask.sum())
        share = mask.mean(axis=(1, 2))  # (N-1,)
        self.steps += len(share)
        self.steps_with += int((share > 0).sum())
        for group, steps in (("qualifying", share >= QUALIFYING_SHARE), ("none", share == 0)):
            for name in ("carried", "zeroed"):
                if steps.any():
                    self.full[group][name].append(psnr_per_frame(predicted[name][steps], truth[steps]))
        for t in np.argsort(-share)[:PICTURE_ROWS]:
            if share[t] > 0:
                frames = [truth[t], predicted["carried"][t], predicted["zeroed"][t], oracle[t]]
                self.picture.append((float(share[t]), frames, mask[t]))
        self.picture = sorted(self.picture, key=lambda row: -row[0])[:PICTURE_ROWS]

        starts = list(range(0, len(ep.tokens) - 1, OPEN_LOOP_START_EVERY))
        start = np.array(starts)
        for name, zero in (("carried", False), ("zeroed", True)):
            rolled = ev._open_loop(arrays, ep, memories, starts, MEMORY_HORIZON, zero_memory=zero)
            for k, (alive, _, frames) in enumerate(rolled, start=1):
                target = start[alive.cpu().numpy()] + k  # frames t0+k
                where = mask[target - 1]  # (B',S,S): mask[i] is frame i+1's
                self.loop[k][name] += float(squared_error(frames, ep.truth[target])[where].sum())
                if name == "carried":
                    self.loop[k]["pixels"] += int(where.sum())
                    self.loop[k]["frames"] += int(where.any(axis=(1, 2)).sum())
        return memories

    def summary(self) -> dict:
        pooled = lambda parts: float(np.concatenate(parts).mean()) if sum(len(p) for p in parts) else float("nan")  # noqa: E731
        return {
            **{f"psnr_{name}": masked_psnr(total, self.pixels) for name, total in self.sums.items()},
            "steps_fraction": self.steps_with / max(self.steps, 1),
            "frames": {"evaluated": self.steps, "with_memory_pixels": self.steps_with, "memory_pixels": self.pixels},
            **{
                f"full_frame_{group}": {
                    "carried": pooled(parts["carried"]), "zeroed": pooled(parts["zeroed"]),
                    "frames": int(sum(len(p) for p in parts["carried"])),
                }
                for group, parts in self.full.items()
            },
            "open_loop": [
                {"k": k, "psnr_carried": masked_psnr(row["carried"], row["pixels"]), "psnr_zeroed": masked_psnr(row["zeroed"], row["pixels"]),
                 "frames": row["frames"]}
                for k, row in self.loop.items() if row["pixels"]
            ],  # fmt: skip
        }

    def picture_rows(self) -> list[tuple[str, list[np.ndarray]]]:
        """The steps with the most memory pixels: truth | carried | zeroed | oracle | memory pixels (magenta over the truth)."""
        rows = []
        for share, frames, mask in self.picture:
            marked = frames[0].copy()
            marked[mask] = 0.5 * marked[mask] + 0.5 * np.array([1.0, 0.0, 1.0])
            rows.append((f"{share:.0%} memory pixels", [*frames, marked]))
        return rows
