"""Ensemble curiosity on proprioception: a non-privileged intrinsic reward (docs/online.md, "Ensemble curiosity").

Pathak, Gandhi and Gupta (ICML 2019): K forward models, each trained on its own
bootstrap of the data, predict the outcome of an action; where they disagree the
data is thin, and where the outcome is random their disagreement still falls (each
learns the mean). A free arm's motion under its PD drives is near-deterministic;
touching something perturbs it. So the heads predict the next proprioceptive
outcome, from what a real Panda reports, never from the simulator's object poses:

    input  x_t = [q_t (7 arm joints, rad), w_t (gripper width, m), qd_t (9 joint velocities),
                  a_t (8, as applied), a_{t-1} (8)]                                              (33,)
    target y_t = [q_{t+1} - q_t - scale * a_t[:7]   the achieved minus the commanded joint change,
                  w_{t+1} - width commanded by a_t,
                  qd_{t+1}]                                                                      (17,)

Both are standardised by running means and variances over the data the ensemble
trained on. Per transition (T, M rollouts):

    disagreement  d_t = mean over target dims of the variance over the K heads' predictions
    error         e_t = mean over target dims of (mean prediction - y_t)^2
    residual      j_t = mean over the arm joints of |achieved - commanded change| (rad; not learned)

The paid intrinsic reward is i_t = ensemble_disagreement_weight x d_t + ensemble_error_weight x e_t,
divided by a running estimate of the standard deviation of its discounted return (as RND does),
so its scale stays put while the heads learn. Per PPO iteration: score the rollout with the heads as
they were (novelty is what they have not trained on), pay, then add the rollout to a FIFO replay and
train the heads on it. The joint velocities come from the live env (info["joint_velocity"]); the store
does not keep them.

The imagination phase (f1.train.offline.imagine) has no live env: its ensemble reads the store's keys only
(`store_transitions`), the joint velocity replaced by the last step's joint change, and its mean prediction
doubles as the imagined arm's next joint positions and gripper width (`next_proprio`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from f1.collect.env_spec import ACTION_LAYOUT, REAL_ACTION_DIMS, STATE_LAYOUT
from f1.collect.layout import GRIPPER_OPEN

JOINTS = 9  # 7 arm + 2 finger joints: the length of info["joint_velocity"]
ARM = slice(0, 7)
INPUT_DIM = 7 + 1 + JOINTS + 2 * REAL_ACTION_DIMS
TARGET_DIM = 7 + 1 + JOINTS
STORE_INPUT_DIM = 7 + 1 + 7 + 2 * REAL_ACTION_DIMS  # q, w, q_t - q_{t-1}, a_t, a_{t-1}
STORE_TARGET_DIM = 7 + 1  # achieved - commanded joint change, width - commanded width
IMAGINED_INPUT_FLOOR = 1e-3  # rad or m: ProprioEnsemble.imagine's least input spread (the recipe's store: 0.018 at least)


def transitions(states: Tensor, joint_velocity: Tensor, applied: Tensor, action_scale: float) -> tuple[Tensor, Tensor]:
    """A rollout's transitions: states (T+1,M,S), joint_velocity (T+1,M,9), applied (T+1,M,A) -> x (T,M,33), y (T,M,17).

    applied[t] is a_t (row T is padding); a_{-1} = 0 (the episode's start).
    """
    q, w = states[..., STATE_LAYOUT["arm_qpos"]], states[..., STATE_LAYOUT["gripper_width"]]  # (T+1,M,7), (T+1,M,1)
    a = applied[:-1, :, :REAL_ACTION_DIMS].float()  # (T,M,8)
    previous = torch.cat([torch.zeros_like(a[:1]), a[:-1]])  # (T,M,8)
    x = torch.cat([q[:-1], w[:-1], joint_velocity[:-1], a, previous], -1)
    y = torch.cat([q[1:] - q[:-1] - action_scale * a[..., ARM], w[1:] - commanded_width(a), joint_velocity[1:]], -1)
    return x.float(), y.float()


def commanded_width(action: Tensor) -> Tensor:
    """(...,8) applied actions -> (...,1) the gripper width they command (2 fingers x gripper_command_to_finger)."""
    return (action[..., ACTION_LAYOUT["gripper"]].clamp(-1, 1) + 1) * GRIPPER_OPEN


def store_features(state: Tensor, previous_state: Tensor, action: Tensor, previous_action: Tensor) -> Tensor:
    """The store-keys ensemble's input: state, previous_state (...,S) raw, action, previous_action (...,8) applied
    -> (...,31) [q_t, w_t, q_t - q_{t-1}, a_t, a_{t-1}]."""
    q, w = state[..., STATE_LAYOUT["arm_qpos"]], state[..., STATE_LAYOUT["gripper_width"]]
    moved = q - previous_state[..., STATE_LAYOUT["arm_qpos"]]
    return torch.cat([q, w, moved, action, previous_action], -1).float()


def store_targets(state: Tensor, next_state: Tensor, action: Tensor, action_scale: float) -> Tensor:
    """(...,S) raw states t, t+1 and (...,8) applied a_t -> (...,8) [achieved - commanded joint change, width - commanded]."""
    q, next_q = state[..., STATE_LAYOUT["arm_qpos"]], next_state[..., STATE_LAYOUT["arm_qpos"]]
    next_w = next_state[..., STATE_LAYOUT["gripper_width"]]
    return torch.cat([next_q - q - action_scale * action[..., ARM], next_w - commanded_width(action)], -1).float()


def store_transitions(states: Tensor, applied: Tensor, action_scale: float) -> tuple[Tensor, Tensor]:
    """One episode's transitions from the store's keys: states (T+1,S) raw, applied (T+1,A) -> x (T,31), y (T,8).
    At step 0 the previous state is the step itself and a_{-1} = 0 (the episode's start)."""
    a = applied[:, :REAL_ACTION_DIMS].float()  # (T+1,8)
    previous_state = torch.cat([states[:1], states[:-2]])  # (T,S)
    previous_action = torch.cat([torch.zeros_like(a[:1]), a[:-2]])  # (T,8)
    x = store_features(states[:-1], previous_state, a[:-1], previous_action)
    return x, store_targets(states[:-1], states[1:], a[:-1], action_scale)


def next_proprio(state: Tensor, action: Tensor, target: Tensor, action_scale: float) -> tuple[Tensor, Tensor]:
    """The arm after action a_t as a store target says: state (...,S) raw, action (...,8) applied, target (...,8) raw
    -> (next joint positions (...,7), next gripper width (...,1))."""
    q = state[..., STATE_LAYOUT["arm_qpos"]]
    return q + action_scale * action[..., ARM] + target[..., :7], commanded_width(action) + target[..., 7:8]


def joint_residual(y: Tensor) -> Tensor:
    """(T,M,17) raw targets -> (T,M): mean |achieved - commanded| arm joint change (rad), no model."""
    return y[..., ARM].abs().mean(-1)


class RunningMoments(nn.Module):
    """Running mean and variance per feature (Chan's parallel update), kept as buffers so they checkpoint."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(dim, dtype=torch.float64))

    def update(self, values: Tensor) -> None:
        """values (N, dim)."""
        values = values.detach().double().reshape(-1, self.mean.shape[0])
        n = values.shape[0]
        if n == 0:
            return
        batch_mean = values.mean(0)
        batch_m2 = ((values - batch_mean) ** 2).sum(0)
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * n / total
        self.m2 += batch_m2 + delta**2 * self.count * n / total
        self.count.fill_(total)

    @property
    def std(self) -> Tensor:
        """(dim,) float32; 1 before any data."""
        if self.count < 2:
            return torch.ones_like(self.mean, dtype=torch.float32)
        return (self.m2 / self.count).sqrt().clamp(min=1e-6).float()


class EnsembleLinear(nn.Module):
    """K independent linear layers applied at once: (K,N,in) -> (K,N,out)."""

    def __init__(self, heads: int, fan_in: int, fan_out: int):
        super().__init__()
        bound = 1 / math.sqrt(fan_in)  # nn.Linear's init, each head its own draw
        self.weight = nn.Parameter(torch.empty(heads, fan_in, fan_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(heads, 1, fan_out).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class ProprioEnsemble(nn.Module):
    """K MLP heads (x -> y, standardised), a bootstrap-masked FIFO replay and the intrinsic return's normaliser."""

    def __init__(self, heads: int = 5, hidden: int = 64, replay: int = 8192, input_dim: int = INPUT_DIM, target_dim: int = TARGET_DIM):
        super().__init__()
        assert heads >= 2, ("an ensemble needs two heads or more to disagree", heads)
        self.heads, self.input_dim, self.target_dim = heads, input_dim, target_dim
        self.net = nn.Sequential(
            EnsembleLinear(heads, input_dim, hidden), nn.SiLU(),
            EnsembleLinear(heads, hidden, hidden), nn.SiLU(),
            EnsembleLinear(heads, hidden, target_dim),
        )  # fmt: skip
        self.x_moments, self.y_moments = RunningMoments(input_dim), RunningMoments(target_dim)
        self.return_moments = RunningMoments(1)
        # The replay: transitions and each head's bootstrap mask (Bernoulli 1/2: which heads train on which rows).
        self.register_buffer("replay_x", torch.zeros(replay, input_dim))
        self.register_buffer("replay_y", torch.zeros(replay, target_dim))
        self.register_buffer("replay_mask", torch.zeros(replay, heads))
        self.register_buffer("replay_size", torch.zeros((), dtype=torch.long))
        self.register_buffer("replay_next", torch.zeros((), dtype=torch.long))

    def standardise(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        xm, ym = self.x_moments, self.y_moments
        return (x - xm.mean.float()) / xm.std, (y - ym.mean.float()) / ym.std

    def predict(self, x: Tensor) -> Tensor:
        """Standardised x (N,in) -> every head's standardised prediction (K,N,out)."""
        return self.net(x.unsqueeze(0).expand(self.heads, -1, -1))

    @torch.no_grad()
    def score(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """Raw x (...,in), y (...,out) -> disagreement and error (...,) in standardised target units."""
        shape = x.shape[:-1]
        xs, ys = self.standardise(x.reshape(-1, self.input_dim), y.reshape(-1, self.target_dim))
        predictions = self.predict(xs)  # (K,N,17)
        disagreement = predictions.var(0, unbiased=False).mean(-1)
        error = ((predictions.mean(0) - ys) ** 2).mean(-1)
        return {"disagreement": disagreement.reshape(shape), "error": error.reshape(shape)}

    @torch.no_grad()
    def imagine(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Raw x (...,in) -> (the heads' mean prediction (...,out) raw, their disagreement (...,) standardised): what
        an imagined step needs when no true outcome exists to score an error against. Each input's spread is floored
        at IMAGINED_INPUT_FLOOR: a feature the data never varied (spread 1e-6) would otherwise blow an imagined
        state's disagreement up by orders of magnitude. The inputs are not clipped: imagined states that leave the
        data earn high disagreement, and that is what the explorer learns from (measured: clipping them at 10
        standard deviations halved the imagined explorers' contact, bench/RESULTS.md "bench_imagination")."""
        shape = x.shape[:-1]
        ym = self.y_moments
        xs = (x.reshape(-1, self.input_dim) - self.x_moments.mean.float()) / self.x_moments.std.clamp(min=IMAGINED_INPUT_FLOOR)
        predictions = self.predict(xs)  # (K,N,out) standardised
        mean = predictions.mean(0) * ym.std + ym.mean.float()  # (N,out) raw
        disagreement = predictions.var(0, unbiased=False).mean(-1)  # (N,)
        return mean.reshape(*shape, self.target_dim), disagreement.reshape(shape)

    @torch.no_grad()
    def add(self, x: Tensor, y: Tensor) -> None:
        """Raw transitions x (N,in), y (N,out) into the replay (oldest overwritten), each with its bootstrap mask."""
        x, y = x.reshape(-1, self.input_dim), y.reshape(-1, self.target_dim)
        self.x_moments.update(x)
        self.y_moments.update(y)
        capacity = self.replay_x.shape[0]
        for start in range(0, x.shape[0], capacity):
            chunk_x, chunk_y = x[start : start + capacity], y[start : start + capacity]
            index = (self.replay_next + torch.arange(chunk_x.shape[0], device=x.device)) % capacity
            self.replay_x[index], self.replay_y[index] = chunk_x, chunk_y
            self.replay_mask[index] = (torch.rand(chunk_x.shape[0], self.heads, device=x.device) < 0.5).float()
            self.replay_next.copy_((self.replay_next + chunk_x.shape[0]) % capacity)
            self.replay_size.copy_(torch.clamp(self.replay_size + chunk_x.shape[0], max=capacity))

    def fit(self, optimizer: torch.optim.Optimizer, updates: int, batch_size: int) -> float:
        """`updates` Adam steps on minibatches drawn from the replay; each head's loss over its own rows. Returns the mean loss."""
        size = int(self.replay_size)
        losses = []
        for _ in range(updates):
            rows = torch.randint(size, (min(batch_size, size),), device=self.replay_x.device)
            xs, ys = self.standardise(self.replay_x[rows], self.replay_y[rows])
            mask = self.replay_mask[rows].T  # (K,B)
            squared = ((self.predict(xs) - ys) ** 2).mean(-1)  # (K,B)
            loss = ((squared * mask).sum(1) / mask.sum(1).clamp(min=1)).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()) / self.heads)
        return sum(losses) / max(len(losses), 1)

    @torch.no_grad()
    def normalise(self, intrinsic: Tensor, gamma: float) -> Tensor:
        """(T,M) raw intrinsic rewards of whole episodes -> the same divided by the running std of their discounted
        returns, the estimate first updated with this rollout's returns (RND's normalisation)."""
        returns = torch.zeros_like(intrinsic)
        running = torch.zeros_like(intrinsic[0])
        for t in range(intrinsic.shape[0]):  # each rollout is one episode from step 0: the return starts at 0
            running = gamma * running + intrinsic[t]
            returns[t] = running
        self.return_moments.update(returns.reshape(-1, 1))
        return intrinsic / self.return_moments.std[0]


@dataclass
class Curiosity:
    """The student's ensemble curiosity: score a rollout, pay for it, then learn from it (module docstring)."""

    ensemble: ProprioEnsemble
    optimizer: torch.optim.Optimizer
    disagreement_weight: float
    error_weight: float
    action_scale: float
    gamma: float
    updates: int
    batch_size: int = 256

    @classmethod
    def from_config(cls, cfg: Any, device: torch.device) -> "Curiosity":
        s = cfg.student
        ensemble = ProprioEnsemble(s.ensemble_heads, s.ensemble_hidden, s.ensemble_replay).to(device)
        optimizer = torch.optim.Adam(ensemble.net.parameters(), lr=s.ensemble_learning_rate)
        return cls(
            ensemble, optimizer, s.ensemble_disagreement_weight, s.ensemble_error_weight, cfg.environment.action_scale,
            s.gamma, s.ensemble_updates,
        )  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        return {"ensemble": self.ensemble.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ensemble.load_state_dict(state["ensemble"])
        self.optimizer.load_state_dict(state["optimizer"])

    def __call__(self, buf: Any) -> dict[str, float]:
        """Score buf's transitions, add the paid part to buf.rewards and buf.terms["reward/total"], log each term
        in buf.terms, then train the heads on them. Returns `curiosity/...` figures."""
        x, y = transitions(buf.states, buf.joint_velocity, buf.applied, self.action_scale)  # (T,M,33), (T,M,17)
        scores = self.ensemble.score(x, y)
        buf.terms["reward/ensemble_disagreement"] = scores["disagreement"]
        buf.terms["reward/ensemble_error"] = scores["error"]
        buf.terms["reward/joint_residual"] = joint_residual(y)
        intrinsic = self.disagreement_weight * scores["disagreement"] + self.error_weight * scores["error"]
        paid = self.ensemble.normalise(intrinsic, self.gamma)
        buf.rewards += paid
        buf.terms["reward/total"] = buf.rewards.clone()
        self.ensemble.add(x, y)
        loss = self.ensemble.fit(self.optimizer, self.updates, self.batch_size)
        return {"curiosity/loss": loss, "curiosity/return_std": float(self.ensemble.return_moments.std[0])}
