"""M envs in one process, stepped together: the form the collector and the online phases use.

    venv = make_vector_env(cfg, num_envs, cameras=("head", "wrist"))
    obs, infos = venv.reset(seeds=[...], options=[{"scene_seed": ..., "scene_id": ...}, ...])
    obs, rewards, terminated, truncated, infos = venv.step(actions)   # actions: (M, action_dim)
    venv.close()

- `obs` and `infos` are lists with one entry per env (each env's own dict,
  as `F1RLEnv` returns it); `rewards`, `terminated`, `truncated` are (M,)
  arrays. Per-env dicts rather than stacked arrays, because the collector
  writes each env's episode on its own.
- `env_indices` (optional, on both calls) picks a subset of the envs, in
  that order; `seeds`, `options` and `actions` then have one entry per
  picked env, and so do the results. Envs not picked are left untouched.
- There is no auto-reset: an env whose episode is truncated stays as it is
  until the caller resets it, so two episodes never mix in one stream.

Why not gymnasium's SyncVectorEnv: it steps envs one after another and
stacks every observation into batch arrays (one more copy of every image),
and it auto-resets. This plain loop instead runs every env's physics and
starts its cameras first, then reads the pictures: lavapipe renders one env
while the CPU steps the next. bench/bench_env.py measures both.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from f1.collect.env import F1RLEnv
from f1.collect.scene import CAMERA_NAMES
from f1.shared.config import F1Config


class VectorEnv:
    def __init__(self, envs: Sequence[F1RLEnv]):
        assert len(envs) > 0, "a vector env needs at least one env"
        self.envs = list(envs)
        self.num_envs = len(self.envs)
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space

    def _pick(self, env_indices: Optional[Sequence[int]]) -> list[int]:
        indices = list(range(self.num_envs)) if env_indices is None else [int(i) for i in env_indices]
        bad = [i for i in indices if not 0 <= i < self.num_envs]
        assert not bad, ("env_indices out of range", bad, self.num_envs)
        assert len(set(indices)) == len(indices), ("env_indices repeat an env", indices)
        return indices

    def reset(
        self,
        seeds: Optional[Sequence[Optional[int]]] = None,
        options: Optional[Sequence[Optional[dict]]] = None,
        env_indices: Optional[Sequence[int]] = None,
    ) -> tuple[list[dict[str, np.ndarray]], list[dict[str, Any]]]:
        indices = self._pick(env_indices)
        seeds = list(seeds) if seeds is not None else [None] * len(indices)
        options = list(options) if options is not None else [None] * len(indices)
        assert len(seeds) == len(indices) == len(options), (len(seeds), len(indices), len(options))
        results = [self.envs[i].reset(seed=s, options=o) for i, s, o in zip(indices, seeds, options)]
        return [obs for obs, _ in results], [info for _, info in results]

    def step(self, actions, env_indices: Optional[Sequence[int]] = None):
        indices = self._pick(env_indices)
        assert len(actions) == len(indices), ("one action per env", len(actions), len(indices))
        for i, action in zip(indices, actions):
            self.envs[i].apply_action(action)  # physics, then the cameras start rendering
        results = [self.envs[i].finish_step() for i in indices]  # wait for the pictures, build obs
        obs, rewards, terminated, truncated, infos = zip(*results)
        return (
            list(obs),
            np.asarray(rewards, np.float32),
            np.asarray(terminated, bool),
            np.asarray(truncated, bool),
            list(infos),
        )

    def close(self) -> None:
        for env in self.envs:
            env.close()


def make_vector_env(
    cfg: F1Config, num_envs: int, cameras: Sequence[str] = CAMERA_NAMES, render_device: Optional[str] = None
) -> VectorEnv:
    """`num_envs` envs with the given cameras, all on this process's render device."""
    return VectorEnv([F1RLEnv(cfg, cameras=cameras, render_device=render_device) for _ in range(num_envs)])
