"""Exploration policies for collection: actions that ignore observations, drawn from a seeded generator.

Both give (action_dim,) float32 actions in [-1, 1] on the first
REAL_ACTION_DIMS dims and exactly 0 on the padding. `reset(seed)` starts an
episode's action stream: the same seed gives the same actions.
- `RandomPolicy`: independent uniform draws each step (jittery; the arm
  random-walks).
- `OUPolicy`: Ornstein-Uhlenbeck noise, x <- x + theta (0 - x) + sigma N(0, 1),
  clipped to [-1, 1]: actions persist for ~1/theta steps, so the arm sweeps
  across the table and the wrist view travels (what a world model learns
  most from).
- `LookAwayPolicy`: scripted look-away-and-back: the base joint turns one way for L steps and
  back for L steps (L drawn per leg), the other joints OU noise at a third of the amplitude, so
  the wrist view leaves what it saw and returns to it beyond the world model's short history:
  the episodes on which a memory can show what it keeps (`f1 evaluate`'s memory pixels).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from f1.collect.env_spec import REAL_ACTION_DIMS
from f1.shared.errors import UserError

POLICIES = ("random", "ou", "lookaway")


class SeededPolicy:
    """An observation-free policy: `act()` draws the next (action_dim,) float32 action from a stream `reset(seed)`
    starts; subclasses give the real dims (`padded`), the padding stays 0."""

    def __init__(self, action_dim: int, seed: Optional[int] = None):
        assert action_dim >= REAL_ACTION_DIMS, (action_dim, REAL_ACTION_DIMS)
        self.action_dim = action_dim
        self.reset(seed)

    def reset(self, seed: Optional[int] = None) -> None:
        self.rng = np.random.default_rng(seed)

    def padded(self, real: np.ndarray) -> np.ndarray:
        """(REAL_ACTION_DIMS,) -> (action_dim,) float32, zeros past the real dims."""
        action = np.zeros(self.action_dim, np.float32)
        action[:REAL_ACTION_DIMS] = real
        return action


class RandomPolicy(SeededPolicy):
    def act(self) -> np.ndarray:
        return self.padded(self.rng.uniform(-1.0, 1.0, REAL_ACTION_DIMS))


class OUPolicy(SeededPolicy):
    def __init__(self, action_dim: int, seed: Optional[int] = None, theta: float = 0.15, sigma: float = 0.2):
        assert 0 < theta < 1 and sigma > 0, (theta, sigma)
        self.theta, self.sigma = theta, sigma
        super().__init__(action_dim, seed)

    def reset(self, seed: Optional[int] = None) -> None:
        super().reset(seed)
        # Start from the process's stationary spread, so the arm moves from the first step.
        stationary_std = self.sigma / np.sqrt(2 * self.theta - self.theta**2)
        self.x = np.clip(self.rng.normal(0.0, stationary_std, REAL_ACTION_DIMS), -1.0, 1.0)

    def act(self) -> np.ndarray:
        self.x = np.clip(self.x - self.theta * self.x + self.sigma * self.rng.normal(size=REAL_ACTION_DIMS), -1.0, 1.0)
        return self.padded(self.x)


class LookAwayPolicy(SeededPolicy):
    """Base joint away for L steps at speed v, back for L steps at -v, repeated with fresh (L, v, side)."""

    NOISE = 1 / 3  # the other joints' OU amplitude: the view drifts a little, it does not wander off
    LEG_STEPS = (5, 12)  # L, inclusive: 0.4-1.2 rad at speed 1 (environment.action_scale 0.1)
    SPEED = (0.7, 1.0)

    def reset(self, seed: Optional[int] = None) -> None:
        super().reset(seed)
        self.noise = OUPolicy(REAL_ACTION_DIMS, seed=int(self.rng.integers(2**31)))
        self.legs: list[float] = []  # base-joint actions still to play

    def act(self) -> np.ndarray:
        if not self.legs:
            steps = int(self.rng.integers(self.LEG_STEPS[0], self.LEG_STEPS[1] + 1))
            speed = float(self.rng.uniform(*self.SPEED)) * float(self.rng.choice([-1.0, 1.0]))
            self.legs = [speed] * steps + [-speed] * steps
        real = self.noise.act() * self.NOISE  # (REAL_ACTION_DIMS,) float32
        real[0] = self.legs.pop(0)
        return self.padded(real)


def make_policy(name: str, action_dim: int, seed: Optional[int] = None) -> SeededPolicy:
    if name == "random":
        return RandomPolicy(action_dim, seed)
    if name == "ou":
        return OUPolicy(action_dim, seed)
    if name == "lookaway":
        return LookAwayPolicy(action_dim, seed)
    raise UserError(f"unknown exploration policy {name!r}; choose one of {list(POLICIES)} (collect.policy)")
