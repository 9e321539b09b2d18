"""What the student and adversarial loops share: resume checks, devices, the explorer's PPO update, metrics, videos.

Both phases count progress in iterations (one rollout of one episode per env,
then the updates); the iteration is the checkpoint step.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import Tensor

from f1.shared.config import F1Config
from f1.train.checkpoint import Checkpoint, CheckpointError
from f1.train.online.coverage import exploration_summary
from f1.train.online.ppo import compute_gae, explained_variance, ppo_update
from f1.train.online.rollout import RolloutBuffer


@dataclass
class Progress:
    """Where an online run is: saved in training_state.pt."""

    iteration: int = 0
    """Iterations done (rollout + updates): the checkpoint step."""
    episodes: int = 0
    """Episodes rolled out, over all ranks."""
    env_steps: int = 0
    """Actions taken, over all ranks."""

    def advance(self, episodes: int, steps_per_episode: int) -> None:
        """One iteration done: `episodes` more episodes (all ranks) of `steps_per_episode` actions each."""
        self.iteration += 1
        self.episodes += episodes
        self.env_steps += episodes * steps_per_episode


def check_online_resume(checkpoint: Checkpoint, phase: str, world_size: int, envs: int, base_refs: Mapping[str, str]) -> None:
    """A resume must be of the same phase, world size and env count, against the same base checkpoints."""
    state, path = checkpoint.training_state, checkpoint.path
    if state.get("phase") != phase:
        raise CheckpointError(f"--resume {path} is a {state.get('phase')} checkpoint, not {phase}; pass one of this phase's")
    if state["world_size"] != world_size:
        raise CheckpointError(
            f"checkpoint {path} was written by {state['world_size']} processes, this run has {world_size}; "
            f"resume with --gpus {state['world_size']} or start a new output dir"
        )
    if state["batch_size"] != envs:
        raise CheckpointError(f"checkpoint {path} ran {state['batch_size']} envs per process; resume with --envs {state['batch_size']}")
    saved = checkpoint.model["model_config"]
    for key, given in base_refs.items():
        if Path(saved[key]).resolve() != Path(given).resolve():
            raise CheckpointError(f"checkpoint {path} was trained from {key}={saved[key]}, not {given}; pass that one or start a new output dir")


def planned_iterations(total_iterations: int, num_episodes: Optional[int], episodes_per_iteration: int) -> int:
    """training.num_episodes, when set, decides the length (rounded up to whole iterations); else total_iterations."""
    if num_episodes is not None:
        return math.ceil(num_episodes / episodes_per_iteration)
    return total_iterations


def limit_cpu_threads(device: torch.device) -> int:
    """On the CPU, one torch thread unless OMP_NUM_THREADS says otherwise; returns the count before (to restore).

    Online steps run batch-M models a step at a time, too small for intra-op
    parallelism, while lavapipe's render threads share the same cores: measured
    on a busy 2-core machine, a 64-wide linear layer took 0.84 ms with 2 threads
    against 0.06 ms with 1 (OpenMP threads spinning against each other).
    """
    import os

    before = torch.get_num_threads()
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)
    return before


def render_device_for(device: torch.device) -> Optional[str]:
    """SAPIEN renders on the GPU torch uses (the pinned one), or on the CPU (lavapipe) when torch is on the CPU."""
    if device.type != "cuda":
        return None
    return f"cuda:{device.index if device.index is not None else torch.cuda.current_device()}"


@torch.no_grad()
def ppo_batch(buf: RolloutBuffer, advantages: Tensor, returns: Tensor) -> dict[str, Tensor]:
    """The rollout (or an imagined one: f1.train.offline.imagination.Imagined) flattened over (T, M) -> N = T*M rows,
    CleanRL's b_* names."""
    num_steps = buf.num_steps
    return {
        "b_tokens": buf.tokens[:num_steps].flatten(0, 1),  # (N,n)
        "b_memory": buf.memory[:num_steps].flatten(0, 1),  # (N,L_m,Hm)
        "b_actions": buf.actions.flatten(0, 1),  # (N,A)
        "b_logprobs": buf.logprobs.flatten(),
        "b_advantages": advantages.flatten(),
        "b_returns": returns.flatten(),
        "b_values": buf.values.flatten(),
    }


def explorer_update(buf: RolloutBuffer, scorer: Any, optimizer: Any, explorer: Any, cfg: F1Config, accelerator: Any) -> tuple[dict[str, float], float]:
    """The explorer learns from one rollout, live or imagined (an Imagined with its rewards set): GAE, then PPO
    epochs over shuffled minibatches (student.* settings).

    scorer: the prepared ActionScorer around `explorer`. Returns (figures, seconds): ppo_update's `policy/...`
    means, the critic's explained variance on the rollout and the policy's action std after the update.
    """
    s = cfg.student
    start = time.perf_counter()
    advantages, returns = compute_gae(buf.rewards, buf.values, buf.terminated, buf.next_value, s.gamma, s.gae_lambda)
    batch = ppo_batch(buf, advantages, returns)
    explorer.train()
    update = ppo_update(
        scorer, optimizer, batch, update_epochs=s.update_epochs, num_minibatches=s.num_minibatches,
        clip_coef=s.clip_coef, vf_coef=s.vf_coef, ent_coef=s.ent_coef, backward=accelerator.backward,
        clip_grad=lambda: accelerator.clip_grad_norm_(scorer.parameters(), cfg.training.grad_clip),
    )  # fmt: skip
    seconds = time.perf_counter() - start
    return {
        **update,
        "policy/explained_variance": explained_variance(batch["b_values"], batch["b_returns"]),
        "policy/action_std": float(explorer.log_std.detach().exp().mean()),
    }, seconds


def rollout_metrics(buf: RolloutBuffer) -> dict[str, float]:
    """Per-step means of each reward term, the mean episode return, exploration and the world model's loss on it.

    explore/...: f1.datasets.exploration's figures over this rollout's M episodes (ee_voxels, union_voxels,
    object_contact_fraction, episodes_with_contact, objects_moved, objects_on_table); absent when the env
    hides the simulator's object state (environment.privileged_info off).
    """
    metrics = {name: float(term.mean()) for name, term in buf.terms.items()}
    envs = range(buf.num_envs)
    if buf.object_contact is not None:  # the env exposed the simulator's object state
        explore = exploration_summary(
            [buf.ee_pos[:, e] for e in envs], [buf.object_contact[:, e] for e in envs],
            [buf.object_pose[:, e] for e in envs], [buf.object_valid[:, e] for e in envs],
        )  # fmt: skip
        metrics.update({f"explore/{name}": value for name, value in explore.items()})
    metrics.update({
        "policy/episode_return": float(buf.rewards.sum(0).mean()),
        "wm/prediction_ce": float(buf.prediction_ce.mean()),
        "perf/env_s": buf.seconds.get("env", 0.0),
        "perf/policy_s": buf.seconds.get("policy", 0.0),
        "perf/world_model_s": buf.seconds.get("world_model", 0.0),
    })  # fmt: skip
    return metrics


def mean_over_ranks(accelerator: Any, metrics: dict[str, float]) -> dict[str, float]:
    """Every metric averaged over the ranks (one all-reduce); unchanged with one rank."""
    if accelerator.num_processes == 1:
        return metrics
    keys = sorted(metrics)
    values = torch.tensor([float(metrics[k]) for k in keys], device=accelerator.device, dtype=torch.float64)
    values = accelerator.reduce(values, "mean")
    return dict(zip(keys, values.tolist()))


def write_rollout_sample(output_dir: Path, episode: int, buf: RolloutBuffer, tokenizer: Any, history: int, stride: int, fps: float) -> Path:
    """videos/episode_<episode>.mp4 (env 0's wrist | the world model's prediction) and samples/episode_<episode>.png."""
    from f1.train.run_outputs import sample_png_path, video_path, write_sample_png, write_video
    from f1.train.offline.teacher_samples import to_uint8

    assert buf.wrist_frames is not None, "the rollout kept no frames: collect_rollout(keep_video=True)"
    wrist = buf.wrist_frames  # (T+1,H,W,3)
    predicted = to_uint8(tokenizer.decode(buf.predicted_tokens[:, 0]))  # (T,S,S,3), frame t+1 predicted at t
    k = (len(wrist) - 1) // 2
    slots = [max(k - (history - 1 - j) * stride, 0) for j in range(history)]
    write_sample_png(sample_png_path(output_dir, episode), [wrist[s] for s in slots], wrist[k + 1], predicted[k])
    return write_video(video_path(output_dir, episode), [wrist[1:], predicted], fps)


def model_file_config(cfg: F1Config, phase: str, bundle: Any, **refs: str) -> dict[str, Any]:
    """model.pt's model_config for an online checkpoint: phase, token sizes, base refs and the run's config."""
    return {
        "phase": phase,
        "n_tokens": bundle.tokenizer.n_tokens,
        "levels": list(bundle.tokenizer.levels),
        "tokenizer_path": bundle.model_config["tokenizer_path"],
        "normalizers": bundle.model_config["normalizers"],
        **refs,
        "config": cfg.to_dict(),
    }
