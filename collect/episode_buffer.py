"""Accumulates one episode's steps into preallocated arrays in the store's schema (DESIGN.md section 2).

Step k holds the observation before action k and action k itself; the last
step (k = N-1 = T) holds the final observation and a zero (padding) action.
With `object_slots` > 0 it also keeps, from each step's env info, the format-2
object keys (f1.datasets.schema.OBJECT_KEYS): the clutter's poses, which slots
are real, and whether the robot touched the clutter; with `camera_keys`, the format-4 camera keys
(`<cam>_pose`, `<cam>_intrinsics`, `<cam>_depth`), also from the env's info (`camera_keys_in`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from f1.collect.plan import EpisodeTask

OBS_KEYS = ("head_rgb", "wrist_rgb", "state")
INFO_KEYS = ("object_pose", "object_valid", "object_contact")  # = f1.datasets.schema.OBJECT_KEYS, from the env's info
CAMERA_INFO_SUFFIXES = ("_pose", "_intrinsics", "_depth")  # f1.datasets.schema's CAMERA_KEY_SUFFIXES and DEPTH_SUFFIX


def camera_keys_in(info: dict[str, Any], cameras: tuple[str, ...] = ("head", "wrist")) -> tuple[str, ...]:
    """The format-4 camera keys an env's info carries (its cameras' poses and intrinsics, the depth if on)."""
    return tuple(f"{cam}{suffix}" for cam in cameras for suffix in CAMERA_INFO_SUFFIXES if f"{cam}{suffix}" in info)


class EpisodeBuffer:
    def __init__(self, num_actions: int, action_dim: int, object_slots: int = 0, camera_keys: tuple[str, ...] = ()):
        self.num_steps = num_actions + 1  # N = T + 1
        self.action_dim = action_dim
        self.object_slots = object_slots
        self.camera_keys = camera_keys
        self._arrays: dict[str, np.ndarray] = {}
        self._k = 0
        self._terminated = False

    def _store(self, obs: dict[str, np.ndarray], info: dict[str, Any] | None) -> None:
        values = {key: obs[key] for key in OBS_KEYS}
        if self.object_slots:
            assert info is not None, "a buffer with object slots needs each step's env info"
            values.update({key: np.asarray(info[key]) for key in INFO_KEYS})
        if self.camera_keys:
            assert info is not None, "a buffer with camera keys needs each step's env info"
            values.update({key: info[key] for key in self.camera_keys})
        for key, value in values.items():
            if key not in self._arrays:
                self._arrays[key] = np.empty((self.num_steps, *value.shape), value.dtype)
                self._arrays.setdefault("action", np.zeros((self.num_steps, self.action_dim), np.float32))
            self._arrays[key][self._k] = value

    def add(self, obs: dict[str, np.ndarray], action: np.ndarray, info: dict[str, Any] | None = None) -> None:
        """Record step k: the observation seen (and the info that came with it), then the action taken after it."""
        assert self._k < self.num_steps - 1, (self._k, self.num_steps)
        self._store(obs, info)
        self._arrays["action"][self._k] = action
        self._k += 1

    def finish(self, final_obs: dict[str, np.ndarray], terminated: bool, info: dict[str, Any] | None = None) -> None:
        """Record the last step: the observation after the last action; its action stays zero padding."""
        assert self._k == self.num_steps - 1, ("episode needs exactly T actions", self._k, self.num_steps - 1)
        self._store(final_obs, info)
        self._k += 1
        self._terminated = terminated

    def arrays(self) -> dict[str, np.ndarray]:
        assert self._k == self.num_steps, (self._k, self.num_steps)
        n = self.num_steps
        flags = {name: np.zeros(n, bool) for name in ("is_first", "is_last", "is_terminal")}
        flags["is_first"][0] = True
        flags["is_last"][-1] = True
        flags["is_terminal"][-1] = self._terminated
        return {**self._arrays, **flags}

    def meta(self, task: EpisodeTask, info: dict[str, Any]):
        from f1.datasets import EpisodeMeta

        return EpisodeMeta(
            episode_id=task.episode_id,
            seed=task.seed,
            scene_id=task.scene_id,
            randomization=info.get("randomization", {}),
            length=self.num_steps,
        )
