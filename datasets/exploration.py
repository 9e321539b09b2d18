"""Exploration figures of episodes: state coverage and what the robot did to the clutter (pure numpy).

Shared by `f1 dataset stats` (stores with the format-2 object keys), the online
phases' `explore/...` logs and `f1 evaluate`, so every place counts alike:

- coverage (per episode): distinct VOXEL_SIZE_M cubes (axis-aligned, world frame,
  the grid anchored at the robot base) holding at least one end-effector
  position of the episode, the start included. A policy that jitters in place
  scores 1-2; one that sweeps the table scores tens. In T steps it is at most T + 1.
- union_voxels (over a set of episodes): distinct voxels over all of them together;
  it does not saturate with the episode length as coverage does.
- object_contact_fraction: of the steps that follow an action (k = 1 .. N-1), the
  fraction in whose physics a robot link touched any clutter object
  (f1.collect.scene.TabletopScene.robot_touches_objects).
- objects_moved (per episode): the number of clutter objects on the table whose
  position ever got more than MOVED_M from where it was at step 0.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

VOXEL_SIZE_M = 0.05  # 5 cm: a few voxels per hand width, ~20 across the Panda's reach over the table
MOVED_M = 0.02  # an object displaced by more than 2 cm counts as moved
# Where the end effector's position lies in the store's `state` (f1.collect.env_spec.STATE_LAYOUT["tcp_pos"];
# tests/test_contacts.py checks the two agree): f1.datasets imports nothing from f1.collect.
TCP_POS_STATE_DIMS = slice(8, 11)


def voxel_ids(positions: np.ndarray, voxel_size: float = VOXEL_SIZE_M) -> np.ndarray:
    """(N, 3) metres -> (N, 3) int64 voxel indices."""
    positions = np.asarray(positions, dtype=np.float64)
    assert positions.ndim == 2 and positions.shape[1] == 3, positions.shape
    return np.floor(positions / voxel_size).astype(np.int64)


def distinct_voxels(positions: np.ndarray, voxel_size: float = VOXEL_SIZE_M) -> int:
    """Distinct voxels visited by the (N, 3) positions."""
    return int(len(np.unique(voxel_ids(positions, voxel_size), axis=0)))


def coverage_curve(positions: np.ndarray, voxel_size: float = VOXEL_SIZE_M) -> np.ndarray:
    """(N, 3) positions in time order -> (N,) distinct voxels visited up to and including each step."""
    seen: set[tuple[int, int, int]] = set()
    curve = np.zeros(len(positions), np.int64)
    for i, voxel in enumerate(map(tuple, voxel_ids(positions, voxel_size))):
        seen.add(voxel)
        curve[i] = len(seen)
    return curve


def union_voxels(episodes: Iterable[np.ndarray], voxel_size: float = VOXEL_SIZE_M) -> int:
    """Distinct voxels over all episodes' (N_i, 3) end-effector positions together."""
    ids = [voxel_ids(p, voxel_size) for p in episodes]
    return int(len(np.unique(np.concatenate(ids), axis=0))) if ids else 0


def contact_steps(object_contact: np.ndarray) -> np.ndarray:
    """(N,) per-step contact flags -> (N-1,) those of the steps after an action (step 0 has had no physics)."""
    object_contact = np.asarray(object_contact, bool)
    assert object_contact.ndim == 1, object_contact.shape
    return object_contact[1:]


def object_contact_fraction(object_contact: np.ndarray) -> float:
    """(N,) per-step contact flags of one episode -> the fraction of its N-1 acted steps with contact."""
    steps = contact_steps(object_contact)
    return float(steps.mean()) if len(steps) else 0.0


def object_displacement(object_pose: np.ndarray, object_valid: np.ndarray) -> np.ndarray:
    """(N, slots, 7) poses, (N, slots) valid -> (slots,) the largest distance (m) each object got from its step-0
    position; 0 for a slot that holds no object at step 0."""
    pose, valid = np.asarray(object_pose, np.float64), np.asarray(object_valid, bool)
    assert pose.ndim == 3 and pose.shape[-1] == 7 and valid.shape == pose.shape[:2], (pose.shape, valid.shape)
    distance = np.linalg.norm(pose[:, :, :3] - pose[:1, :, :3], axis=-1)  # (N, slots)
    return np.where(valid[0], distance.max(0), 0.0)


def objects_moved(object_pose: np.ndarray, object_valid: np.ndarray, moved_m: float = MOVED_M) -> int:
    """The number of objects of one episode displaced by more than `moved_m` from their start."""
    return int((object_displacement(object_pose, object_valid) > moved_m).sum())


def exploration_summary(
    ee_positions: list[np.ndarray], object_contact: list[np.ndarray], object_pose: list[np.ndarray], object_valid: list[np.ndarray]
) -> dict[str, float]:
    """The figures over a set of episodes (one array per episode, time first), as logged and reported.

    object_contact_fraction pools every acted step of every episode; objects_moved and
    coverage are means over episodes; union_voxels counts over all episodes together.
    """
    contacts = np.concatenate([contact_steps(c) for c in object_contact]) if object_contact else np.zeros(0, bool)
    moved = [objects_moved(p, v) for p, v in zip(object_pose, object_valid)]
    return {
        "object_contact_fraction": float(contacts.mean()) if len(contacts) else 0.0,
        "episodes_with_contact": float(np.mean([contact_steps(c).any() for c in object_contact])) if object_contact else 0.0,
        "objects_moved": float(np.mean(moved)) if moved else 0.0,
        "objects_on_table": float(np.mean([v[0].sum() for v in object_valid])) if object_valid else 0.0,
        "ee_voxels": float(np.mean([distinct_voxels(p) for p in ee_positions])) if ee_positions else 0.0,
        "union_voxels": float(union_voxels(ee_positions)),
    }
