"""Intrinsic rewards of the online phases: what the explorer is paid for a step (docs/online.md, `## Rewards`).

At step t the world model has seen frames [t-(h-1)s .. t], the actions at those
steps (a_t, the explorer's choice, is the last), state s_t and memory m_t; its
step returns the next-frame code logits (B, n, sum(levels)): one softmax per FSQ digit,
f1.train.models.world_model.FactorizedCodes, a distribution over K = prod(levels) codes,
and m_{t+1}. Every term
below is a per-env tensor (B,) for action a_t, computed from that one step:

- memory divergence  d_t = ||m_{t+1} - m_t||_2 / sqrt(numel of one env's memory)
  The root-mean-square change of the GRU memory, no running normalisation:
  GRU units live in (-1, 1), so d_t lies in [0, 2] and is comparable across
  runs and model sizes. A step that tells the memory something new moves it.
- world-model uncertainty  u_t = mean over the n tokens of H(p(code)) / log K
  The entropy of the predicted next-frame code distribution, in nats,
  divided by log K (the entropy of a uniform guess), so u_t lies in [0, 1].
  It is known before the next frame arrives: the model's own doubt.
- prediction error (adversarial phase; in the student when weighted)  e_t = mean over the n tokens of
  -log p(actual next-frame token) / log K
  The world model's cross-entropy on the frame the action led to, divided by
  log K: 1 is as bad as a uniform guess; it is unbounded above.
- unexplained change  c_t = mean over pixels and channels |x_{t+1} - W_t(x_t)|
  The part of the frame change that the world model's motion stage (f1.train.models.motion),
  its guess of how the camera's own motion moves the view, does not explain: clutter the
  robot pushes, an object coming close (its parallax), the gripper's shadow on an object.
  Frames in [0, 1] at the tokenizer's size, so c_t lies in [0, 1]; 0 where the view only
  slid as the arm's motion says. Measured on random-policy episodes it singles out the
  steps with contact better than the terms above (bench/RESULTS.md, "explorer: which signal").
- clutter motion (privileged: the simulator's object poses, not the world model)
  o_t = sum over the clutter objects on the table at t and t+1 of min(||p_{t+1} - p_t||, 2 cm) / 2 cm
  How many objects action a_t moved, each counted up to once (at the 2 cm that
  `objects_moved` counts as moved); 0 where the robot touched nothing. The one term that
  pays for interaction itself: the world-model terms above, measured, pay as much for
  odd views as for the clutter (bench/RESULTS.md, "explorer: which signal").
- surprise  s_t = e_t - u_t
  How much worse the world model predicted the frame than it expected to (its
  cross-entropy minus its entropy, both / log K): near 0 where it knows what it
  does not know (a fast camera sweep), positive where it was confidently wrong
  (what its training data never showed, e.g. an object that moves); may be negative.

Student reward  r_t = student.memory_divergence_weight x d_t + student.wm_uncertainty_weight x u_t
                      + student.prediction_error_weight x e_t + student.surprise_weight x s_t
                      + student.unexplained_change_weight x c_t + student.clutter_motion_weight x o_t
                      + the proprioceptive ensemble's normalised terms, added after the rollout
                        (f1.train.online.curiosity: the default reward, the others 0)
Every term is logged, weighted or not; clutter motion only where the env exposes the objects' poses.
Adversarial reward  r_t = adversarial.prediction_error_weight x e_t.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from torch import Tensor

from f1.datasets.exploration import MOVED_M
from f1.shared.config import StudentConfig
from f1.train.models.world_model import FactorizedCodes


@dataclass
class StepSignals:
    """What a reward term may read of one step t, M envs (filled by f1.train.online.rollout.collect_rollout)."""

    memory_before: Tensor  # (L_m,M,Hm) m_t
    memory_after: Tensor  # (L_m,M,Hm) m_{t+1}
    logits: Optional[Tensor]  # (M,n,sum(levels)) the world model's next-frame code logits; None: not predicted (below)
    next_tokens: Tensor  # (M,n) tokens of the frame a_t led to
    warped: Optional[Tensor]  # (M,3,S,S) frame t warped by the motion stage: the world model's ego-motion guess of frame t+1
    # logits and warped are None where the rollout skipped the world model's prediction: the student's rollouts
    # in which no paid term needs it and none is logged (f1.train.online.student)
    next_frame: Tensor  # (M,3,S,S) frame t+1 at the tokenizer's size, in [0, 1]
    # The simulator's privileged state, None when the env does not expose it (environment.privileged_info off):
    object_pos: Optional[Tensor]  # (M,slots,3) clutter positions (m) at step t (the simulator's, zeros in empty slots)
    next_object_pos: Optional[Tensor]  # (M,slots,3) at step t+1
    object_valid: Optional[Tensor]  # (M,slots) bool: the slot holds an object on the table at t and at t+1


def memory_divergence(memory_before: Tensor, memory_after: Tensor) -> Tensor:
    """(num_layers, B, hidden) x 2 -> (B,): ||m_{t+1} - m_t||_2 / sqrt(num_layers * hidden)."""
    assert memory_before.shape == memory_after.shape and memory_before.ndim == 3, (
        memory_before.shape, memory_after.shape,
    )
    change = (memory_after - memory_before).float().permute(1, 0, 2).flatten(1)  # (B, num_layers*hidden)
    return change.norm(dim=1) / math.sqrt(change.shape[1])


def wm_uncertainty(codes: FactorizedCodes, logits: Tensor) -> Tensor:
    """Next-frame code logits (B, n, sum(levels)) -> (B,): mean per-token entropy / log K, in [0, 1]."""
    assert logits.ndim == 3, logits.shape
    return codes.entropy(logits).mean(1) / codes.log_k  # (B,n) nats -> (B,)


def prediction_error(codes: FactorizedCodes, logits: Tensor, next_tokens: Tensor) -> Tensor:
    """Logits (B, n, sum(levels)) and the actual next frame's tokens (B, n) -> (B,): mean cross-entropy / log K."""
    assert logits.shape[:2] == next_tokens.shape, (logits.shape, next_tokens.shape)
    return codes.nll(logits, next_tokens).mean(1) / codes.log_k  # (B,n) nats -> (B,)


def unexplained_change(warped: Tensor, next_frame: Tensor) -> Tensor:
    """(B,3,S,S) x 2 in [0,1] -> (B,): mean |next frame - motion-warped frame|, the change the arm's own motion does not explain."""
    assert warped.shape == next_frame.shape and warped.ndim == 4, (warped.shape, next_frame.shape)
    return (next_frame - warped).abs().flatten(1).mean(1)


def clutter_motion(object_pos: Tensor, next_object_pos: Tensor, object_valid: Tensor, moved_m: float = MOVED_M) -> Tensor:
    """(B,slots,3) x 2 positions, (B,slots) valid -> (B,): objects moved this step, each up to once (at `moved_m`)."""
    assert object_pos.shape == next_object_pos.shape and object_pos.shape[:2] == object_valid.shape, (
        object_pos.shape, next_object_pos.shape, object_valid.shape,
    )  # fmt: skip
    moved = (next_object_pos - object_pos).norm(dim=-1).clamp(max=moved_m) / moved_m  # (B,slots) in [0,1]
    return (moved * object_valid).sum(-1)


@dataclass
class StudentReward:
    """r = memory_divergence_weight x d + wm_uncertainty_weight x u + prediction_error_weight x e
    + surprise_weight x s + unexplained_change_weight x c + clutter_motion_weight x o."""

    codes: FactorizedCodes
    memory_divergence_weight: float
    wm_uncertainty_weight: float
    prediction_error_weight: float = 0.0
    surprise_weight: float = 0.0
    unexplained_change_weight: float = 0.0
    clutter_motion_weight: float = 0.0

    @classmethod
    def from_config(cls, codes: FactorizedCodes, student: StudentConfig) -> "StudentReward":
        """The weights of a StudentConfig (`student.*_weight`)."""
        return cls(
            codes, student.memory_divergence_weight, student.wm_uncertainty_weight, student.prediction_error_weight,
            student.surprise_weight, student.unexplained_change_weight, student.clutter_motion_weight,
        )  # fmt: skip

    @property
    def needs_prediction(self) -> bool:
        """Whether a paid term reads the world model's prediction (logits or the warped frame)."""
        weights = (self.wm_uncertainty_weight, self.prediction_error_weight, self.surprise_weight, self.unexplained_change_weight)
        return any(w != 0 for w in weights)

    def __call__(self, step: StepSignals) -> dict[str, Tensor]:
        """Each term (B,) under its metric name; `reward/total` is what PPO maximises. Without a prediction
        (step.logits None) only memory divergence and clutter motion are computed, and only they may be paid;
        without the objects' poses (step.object_pos None) clutter motion is neither computed nor paid."""
        divergence = memory_divergence(step.memory_before, step.memory_after)
        privileged: dict[str, Tensor] = {}
        if step.object_pos is not None:
            privileged["reward/clutter_motion"] = clutter_motion(step.object_pos, step.next_object_pos, step.object_valid)
        else:
            assert self.clutter_motion_weight == 0, "clutter motion is paid but the env hides the objects' poses"
        motion = privileged.get("reward/clutter_motion", 0.0)
        if step.logits is None:
            assert not self.needs_prediction, "a paid reward term needs the world model's prediction"
            total = self.memory_divergence_weight * divergence + self.clutter_motion_weight * motion
            return {"reward/memory_divergence": divergence, **privileged, "reward/total": total}
        uncertainty = wm_uncertainty(self.codes, step.logits)
        error = prediction_error(self.codes, step.logits, step.next_tokens)
        change = unexplained_change(step.warped, step.next_frame)
        terms = {
            "reward/memory_divergence": divergence,
            "reward/wm_uncertainty": uncertainty,
            "reward/prediction_error": error,
            "reward/surprise": error - uncertainty,
            "reward/unexplained_change": change,
            **privileged,
        }
        total = (
            self.memory_divergence_weight * divergence
            + self.wm_uncertainty_weight * uncertainty
            + self.prediction_error_weight * error
            + self.surprise_weight * (error - uncertainty)
            + self.unexplained_change_weight * change
            + self.clutter_motion_weight * motion
        )
        return {**terms, "reward/total": total}


@dataclass
class AdversarialReward:
    """r = prediction_error_weight x e: the explorer is paid where the world model predicts badly."""

    codes: FactorizedCodes
    prediction_error_weight: float

    def __call__(self, step: StepSignals) -> dict[str, Tensor]:
        error = prediction_error(self.codes, step.logits, step.next_tokens)
        return {"reward/prediction_error": error, "reward/total": self.prediction_error_weight * error}
