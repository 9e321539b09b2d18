"""Intrinsic rewards of the online phases: what the explorer is paid for a step (README, `## Rewards`).

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
- surprise  s_t = e_t - u_t
  How much worse the world model predicted the frame than it expected to (its
  cross-entropy minus its entropy, both / log K): near 0 where it knows what it
  does not know (a fast camera sweep), positive where it was confidently wrong
  (what its training data never showed, e.g. an object that moves); may be negative.

Student reward  r_t = student.memory_divergence_weight x d_t + student.wm_uncertainty_weight x u_t
                      + student.prediction_error_weight x e_t + student.surprise_weight x s_t
(the last two weights default to 0: the seed's reward). Every term is logged, weighted or not.
Adversarial reward  r_t = adversarial.prediction_error_weight x e_t.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from f1.train.models.world_model import FactorizedCodes


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


@dataclass
class StudentReward:
    """r = memory_divergence_weight x d + wm_uncertainty_weight x u + prediction_error_weight x e + surprise_weight x s."""

    codes: FactorizedCodes
    memory_divergence_weight: float
    wm_uncertainty_weight: float
    prediction_error_weight: float = 0.0
    surprise_weight: float = 0.0

    def __call__(
        self, memory_before: Tensor, memory_after: Tensor, logits: Tensor, next_tokens: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Each term (B,) under its metric name; `reward/total` is what PPO maximises.

        next_tokens (B, n), the frame the action led to: needed for e and s (when None, only d and u, and
        their weights must be 0).
        """
        divergence = memory_divergence(memory_before, memory_after)
        uncertainty = wm_uncertainty(self.codes, logits)
        terms = {"reward/memory_divergence": divergence, "reward/wm_uncertainty": uncertainty}
        total = self.memory_divergence_weight * divergence + self.wm_uncertainty_weight * uncertainty
        if next_tokens is not None:
            error = prediction_error(self.codes, logits, next_tokens)
            terms.update({"reward/prediction_error": error, "reward/surprise": error - uncertainty})
            total = total + self.prediction_error_weight * error + self.surprise_weight * (error - uncertainty)
        else:
            assert self.prediction_error_weight == 0 and self.surprise_weight == 0, "e and s need the next frame's tokens"
        return {**terms, "reward/total": total}


@dataclass
class AdversarialReward:
    """r = prediction_error_weight x e: the explorer is paid where the world model predicts badly."""

    codes: FactorizedCodes
    prediction_error_weight: float

    def __call__(self, logits: Tensor, next_tokens: Tensor) -> dict[str, Tensor]:
        error = prediction_error(self.codes, logits, next_tokens)
        return {"reward/prediction_error": error, "reward/total": self.prediction_error_weight * error}
