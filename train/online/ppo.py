"""PPO pieces for the online phases, after CleanRL's ppo_continuous_action.py, top to bottom.

    advantages, returns = compute_gae(rewards, values, terminated, next_value, gamma, gae_lambda)
    loss, stats = ppo_loss(new_logprob, old_logprob, entropy, new_value, b_advantages, b_returns, ...)

Storage is (num_steps, num_envs) as in CleanRL. One difference: here a rollout
is whole fixed-length episodes (f1 episodes end by the step limit, a
truncation), so the last step bootstraps from the value of the final
observation, `next_value`; a step flagged `terminated` (the env itself ended
the episode) does not bootstrap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn


@torch.no_grad()
def compute_gae(
    rewards: Tensor, values: Tensor, terminated: Tensor, next_value: Tensor, gamma: float, gae_lambda: float
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016).

    rewards, values, terminated: (T, M); next_value: (M,) the value of the observation after step T-1.
    terminated[t]: action t ended the episode in a terminal state (no value after it).
    Returns (advantages, returns), both (T, M); returns = advantages + values (the value targets).
    """
    num_steps = rewards.shape[0]
    assert values.shape == rewards.shape == terminated.shape, (values.shape, rewards.shape, terminated.shape)
    assert next_value.shape == rewards.shape[1:], (next_value.shape, rewards.shape)
    advantages = torch.zeros_like(rewards)
    last_gae = torch.zeros_like(next_value)  # (M,)
    for t in reversed(range(num_steps)):
        value_after = next_value if t == num_steps - 1 else values[t + 1]  # (M,)
        nonterminal = 1.0 - terminated[t].float()
        delta = rewards[t] + gamma * value_after * nonterminal - values[t]
        last_gae = delta + gamma * gae_lambda * nonterminal * last_gae
        advantages[t] = last_gae
    return advantages, advantages + values


@dataclass
class PPOStats:
    """One minibatch's figures, logged as `policy/...`."""

    policy_loss: float
    value_loss: float
    entropy: float
    approx_kl: float
    clip_fraction: float

    def as_metrics(self) -> dict[str, float]:
        return {
            "policy/policy_loss": self.policy_loss,
            "policy/value_loss": self.value_loss,
            "policy/entropy": self.entropy,
            "policy/approx_kl": self.approx_kl,
            "policy/clip_fraction": self.clip_fraction,
        }


def ppo_loss(
    new_logprob: Tensor,
    old_logprob: Tensor,
    entropy: Tensor,
    new_value: Tensor,
    advantages: Tensor,
    returns: Tensor,
    *,
    clip_coef: float,
    vf_coef: float,
    ent_coef: float,
    norm_adv: bool = True,
) -> tuple[Tensor, PPOStats]:
    """Clipped surrogate + value loss - entropy bonus over one minibatch; every input is (N,).

    approx_kl is CleanRL's low-variance estimator E[(r - 1) - log r] (http://joschu.net/blog/kl-approx.html).
    """
    for name, x in (("old_logprob", old_logprob), ("entropy", entropy), ("new_value", new_value),
                    ("advantages", advantages), ("returns", returns)):  # fmt: skip
        assert x.shape == new_logprob.shape, (name, x.shape, new_logprob.shape)
    log_ratio = new_logprob - old_logprob
    ratio = log_ratio.exp()
    with torch.no_grad():
        approx_kl = ((ratio - 1) - log_ratio).mean()
        clip_fraction = ((ratio - 1.0).abs() > clip_coef).float().mean()

    if norm_adv and advantages.numel() > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

    # Policy loss: the pessimistic (max of the negated) of the plain and the clipped surrogate.
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)
    pg_loss = torch.max(pg_loss1, pg_loss2).mean()

    # Value loss: plain squared error (CleanRL's clip_vloss off: the reward scale drifts early on).
    v_loss = 0.5 * (new_value - returns).pow(2).mean()

    entropy_loss = entropy.mean()
    loss = pg_loss - ent_coef * entropy_loss + vf_coef * v_loss
    stats = PPOStats(
        policy_loss=float(pg_loss.detach()),
        value_loss=float(v_loss.detach()),
        entropy=float(entropy_loss.detach()),
        approx_kl=float(approx_kl),
        clip_fraction=float(clip_fraction),
    )
    return loss, stats


def explained_variance(values: Tensor, returns: Tensor) -> float:
    """1 - Var[returns - values] / Var[returns]: 1 is a perfect critic, 0 no better than a constant (CleanRL)."""
    var_returns = returns.var()
    return float("nan") if var_returns == 0 else float(1 - (returns - values).var() / var_returns)


# --------------------------------------------------------------------------- the update


class ActionScorer(nn.Module):
    """The explorer with `forward` = `evaluate_actions`: DistributedDataParallel syncs gradients only through forward."""

    def __init__(self, explorer: nn.Module) -> None:
        super().__init__()
        self.explorer = explorer

    def forward(self, tokens: Tensor, memory: Tensor, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.explorer.evaluate_actions(tokens, memory, actions)


def ppo_update(
    scorer: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, Tensor],
    *,
    update_epochs: int,
    num_minibatches: int,
    clip_coef: float,
    vf_coef: float,
    ent_coef: float,
    backward: Callable[[Tensor], None],
    clip_grad: Callable[[], None],
) -> dict[str, float]:
    """CleanRL's update: `update_epochs` passes over the flat batch in shuffled minibatches.

    batch: b_tokens (N,n), b_memory (N,L_m,Hm), b_actions (N,A), b_logprobs, b_advantages, b_returns (N,).
    backward(loss) and clip_grad() come from the caller (Accelerate). Returns the last pass's mean figures.
    """
    n = batch["b_logprobs"].shape[0]
    minibatch_size = max(1, n // num_minibatches)
    for epoch in range(update_epochs):
        b_inds = torch.randperm(n, device=batch["b_logprobs"].device)
        epoch_stats = []
        for start in range(0, n - minibatch_size + 1, minibatch_size):  # equal minibatches: every rank takes as many steps
            mb_inds = b_inds[start : start + minibatch_size]
            memory = batch["b_memory"][mb_inds].transpose(0, 1)  # (mb,L_m,Hm) -> (L_m,mb,Hm)
            new_logprob, entropy, new_value = scorer(batch["b_tokens"][mb_inds], memory, batch["b_actions"][mb_inds])
            loss, stats = ppo_loss(
                new_logprob, batch["b_logprobs"][mb_inds], entropy, new_value,
                batch["b_advantages"][mb_inds], batch["b_returns"][mb_inds],
                clip_coef=clip_coef, vf_coef=vf_coef, ent_coef=ent_coef,
            )  # fmt: skip
            optimizer.zero_grad(set_to_none=True)
            backward(loss)
            clip_grad()
            optimizer.step()
            epoch_stats.append((float(loss.detach()), stats))
    losses = [loss for loss, _ in epoch_stats]
    merged = {key: sum(s.as_metrics()[key] for _, s in epoch_stats) / len(epoch_stats) for key in epoch_stats[0][1].as_metrics()}
    return {"policy/loss": sum(losses) / len(losses), **merged}
