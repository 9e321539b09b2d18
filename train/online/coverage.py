"""State coverage: how much of the workspace an episode's end effector visits.

The definitions live in f1.datasets.exploration (`f1 dataset stats` counts the
same way); this module keeps the online phases' names for them.
"""

from __future__ import annotations

from f1.datasets.exploration import (  # noqa: F401 - re-exported
    VOXEL_SIZE_M,
    coverage_curve,
    distinct_voxels,
    exploration_summary,
    union_voxels,
    voxel_ids,
)
