"""State coverage: how much of the workspace an episode's end effector visits.

Coverage = the number of distinct VOXEL_SIZE_M cubes (axis-aligned, world
frame, the grid anchored at the robot base) that hold at least one
end-effector position of the episode, the start included. A policy that
jitters in place scores 1-2; one that sweeps the table scores tens.
"""

from __future__ import annotations

import numpy as np

VOXEL_SIZE_M = 0.05  # 5 cm: a few voxels per hand width, ~20 across the Panda's reach over the table


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
