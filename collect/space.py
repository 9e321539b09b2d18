"""Will the run fit? Bytes per step from the store's finished shards, else the uncompressed size of a step.

Only a warning: the estimate from an empty store is an upper bound (the image
codecs are lossless but compress), and a full disk mid-run stops cleanly and
resumes (f1.collect.failures).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from f1.collect.failures import free_mb
from f1.datasets.schema import StoreSpec


def bytes_per_step(manifest: dict, spec: StoreSpec) -> tuple[float, str]:
    """(bytes a step takes, where that figure comes from)."""
    steps = sum(s["steps"] for s in manifest["shards"])
    if steps:
        return sum(s["bytes"] for s in manifest["shards"]) / steps, f"{len(manifest['shards'])} finished shards"
    h, w = spec.image_hw
    raw = len(spec.cameras) * h * w * 3 + 4 * (spec.state_dim + spec.action_dim) + 3
    return float(raw), "uncompressed frames; the codec will do better"


def space_warning(store: Path, manifest: dict, spec: StoreSpec, steps_to_write: int) -> Optional[str]:
    """One warning line when the estimated size of the steps still to write exceeds the free space, else None."""
    per_step, source = bytes_per_step(manifest, spec)
    need, free = per_step * steps_to_write / 1e6, free_mb(store)
    if need <= free:
        return None
    return (
        f"warning: {store} has {free:.1f} MB free but this run is estimated at {need:.1f} MB ({source}); "
        "if the disk fills, the workers stop cleanly and the same command resumes once there is space"
    )
