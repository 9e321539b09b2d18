"""Will the run fit? Bytes per step from the store's finished shards, else the uncompressed size of a step.

Only a warning: the estimate from an empty store is an upper bound (the image
codecs are lossless but compress), and a full disk mid-run stops cleanly and
resumes (f1.collect.failures).
"""

from __future__ import annotations

from typing import Optional

from f1.collect.failures import free_mb
from f1.datasets.reader import StoreReader


def bytes_per_step(store: StoreReader) -> tuple[float, str]:
    """(bytes a step takes, where that figure comes from)."""
    spec, steps = store.spec, store.num_steps
    if steps:
        written = store.snapshot.shard_column("bytes")
        return float(written.sum()) / steps, f"{len(written)} finished shards"
    h, w = spec.image_hw
    raw = len(spec.cameras) * h * w * 3 + 4 * (spec.state_dim + spec.action_dim) + 3
    return float(raw), "uncompressed frames; the codec will do better"


def space_warning(store: StoreReader, steps_to_write: int) -> Optional[str]:
    """One warning line when the estimated size of the steps still to write exceeds the free space, else None."""
    per_step, source = bytes_per_step(store)
    need, free = per_step * steps_to_write / 1e6, free_mb(store.store_dir)
    if need <= free:
        return None
    return (
        f"warning: {store.store_dir} has {free:.1f} MB free but this run is estimated at {need:.1f} MB ({source}); "
        "if the disk fills, the workers stop cleanly and the same command resumes once there is space"
    )
