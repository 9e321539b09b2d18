"""`f1 dataset stats`: counts, bytes, lengths, per-dim state/action statistics, image statistics.

State and action vectors are read whole (no image is decoded for them);
image statistics come from a seeded sample of frames, so the command stays
fast on thousands of episodes. The action of an episode's last step is
padding (DESIGN.md section 2) and is left out of the action statistics.
The state/action mean and std are what training normalises with: they are
written to <store>/normalizer.json. A store with the format-2 object keys also
gets its exploration figures (f1.datasets.exploration): the fraction of steps
in contact with the clutter, objects moved per episode, end-effector coverage
per episode and over the whole store; `exploration` is None for other stores.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from f1.datasets.exploration import MOVED_M, TCP_POS_STATE_DIMS, VOXEL_SIZE_M, exploration_summary
from f1.datasets.progress import count_bar
from f1.datasets.reader import StoreReader, open_store
from f1.datasets.s3 import S3Path, store_path
from f1.datasets.schema import StoreError
from f1.shared.normalizers import NORMALIZER_FILE, Normalizer, save_normalizers

HISTOGRAM_BINS = 10


def _per_dim(values: np.ndarray) -> dict[str, list[float]]:
    """values (N, D) -> per-dim mean, std, min, max, q01, q99."""
    x = values.astype(np.float64)
    q01, q99 = np.quantile(x, [0.01, 0.99], axis=0)
    return {
        "mean": x.mean(0).tolist(),
        "std": x.std(0).tolist(),
        "min": x.min(0).tolist(),
        "max": x.max(0).tolist(),
        "q01": q01.tolist(),
        "q99": q99.tolist(),
    }


def _length_histogram(lengths: np.ndarray) -> list[dict[str, int]]:
    """One bin per length when there are few distinct lengths, else HISTOGRAM_BINS equal bins; bins are [lo, hi]."""
    distinct = np.unique(lengths)
    if len(distinct) <= HISTOGRAM_BINS:
        return [{"lo": int(n), "hi": int(n), "count": int((lengths == n).sum())} for n in distinct]
    counts, edges = np.histogram(lengths, bins=HISTOGRAM_BINS)
    los = np.ceil(edges[:-1]).astype(int)
    his = np.append(np.ceil(edges[1:-1]).astype(int) - 1, int(lengths.max()))
    return [{"lo": int(lo), "hi": int(hi), "count": int(c)} for lo, hi, c in zip(los, his, counts)]


def _image_stats(reader: StoreReader, sample_images: int, seed: int) -> dict[str, dict[str, Any]]:
    """Per camera, per-channel mean and std in [0, 1] over `sample_images` seeded random steps."""
    lengths = reader.lengths
    total = int(lengths.sum())
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(total, size=min(sample_images, total), replace=False))
    ends = np.cumsum(lengths)
    sums = {k: np.zeros((2, 3)) for k in reader.spec.image_keys}  # per key: sum and sum of squares, per channel
    for g in picks:
        e = int(np.searchsorted(ends, g, side="right"))
        k = int(g - (ends[e] - lengths[e]))
        frames = reader.read_steps(reader.episodes[e], k, k + 1, reader.spec.image_keys)
        for key, frame in frames.items():
            pixels = frame.reshape(-1, 3).astype(np.float64) / 255.0  # (H*W, 3)
            sums[key] += (pixels.mean(0), (pixels**2).mean(0))
    out = {}
    for key, (s, s2) in sums.items():
        mean = s / len(picks)
        out[key] = {"mean": mean.tolist(), "std": np.sqrt(np.maximum(s2 / len(picks) - mean**2, 0)).tolist()}
    return {"frames_sampled": len(picks), **out}


def store_summary(reader: StoreReader) -> dict[str, Any]:
    """The metadata part of the stats (no shard is read): counts, bytes and the length histogram."""
    spec = reader.spec
    lengths = reader.lengths
    steps = int(lengths.sum())
    disk = int(reader.snapshot.shard_column("bytes").sum())
    return {
        "store": str(reader.store_dir),
        "format": reader.format,
        "image_codec": spec.image_codec,
        "image_hw": list(spec.image_hw),
        "cameras": list(spec.cameras),
        "shards": len(reader.snapshot.shard_order),
        "episodes": len(lengths),
        "steps": steps,
        "bytes": disk,
        "bytes_per_step": disk / max(steps, 1),
        "raw_bytes_per_step": spec.raw_bytes_per_step(),
        "compression_ratio": spec.raw_bytes_per_step() * steps / max(disk, 1),
        "episode_length": {
            "min": int(lengths.min()) if len(lengths) else 0,
            "max": int(lengths.max()) if len(lengths) else 0,
            "mean": float(lengths.mean()) if len(lengths) else 0.0,
            "histogram": _length_histogram(lengths),
        },
    }


def compute_stats(reader: StoreReader, sample_images: int = 256, seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """Everything `f1 dataset stats` reports, as one JSON-able dict; StoreError on a store with no episodes."""
    spec = reader.spec
    if not reader.episodes:
        raise StoreError(f"{reader.store_dir} has no finalised episodes yet; collect some first")
    states, actions = [], []
    objects = bool(spec.object_slots)
    ee, contact, pose, valid = [], [], [], []
    keys = ("state", "action", "is_last") + (("object_pose", "object_valid", "object_contact") if objects else ())
    with count_bar("stats", len(reader.episodes), show=progress) as advance:
        for info in reader.episodes:
            v = reader.read_episode(info, keys=keys)
            states.append(v["state"][:, : spec.real_state_dims])  # (N, real_state_dims)
            actions.append(v["action"][~v["is_last"], : spec.real_action_dims])  # (N - 1, real_action_dims)
            if objects:
                ee.append(v["state"][:, TCP_POS_STATE_DIMS])  # (N, 3)
                contact.append(v["object_contact"])
                pose.append(v["object_pose"])
                valid.append(v["object_valid"])
            advance()
    return {
        **store_summary(reader),
        "state": {"real_dims": spec.real_state_dims, **_per_dim(np.concatenate(states))},
        "action": {"real_dims": spec.real_action_dims, **_per_dim(np.concatenate(actions))},
        "images": _image_stats(reader, sample_images, seed),
        "exploration": (
            {"voxel_size_m": VOXEL_SIZE_M, "moved_m": MOVED_M, **exploration_summary(ee, contact, pose, valid)} if objects else None
        ),
    }


def _print_tables(stats: dict[str, Any], console: Console) -> None:
    summary = Table(title=f"store {stats['store']}", show_header=False)
    for key in ("format", "image_codec", "image_hw", "cameras", "shards", "episodes", "steps"):
        summary.add_row(key, str(stats[key]))
    summary.add_row("bytes on disk", f"{stats['bytes'] / 1e6:.2f} MB")
    summary.add_row("bytes / step", f"{stats['bytes_per_step']:.0f} (raw {stats['raw_bytes_per_step']})")
    summary.add_row("compression", f"{stats['compression_ratio']:.2f}x")
    console.print(summary)
    lengths = Table(title="episode lengths (steps)")
    for col in ("lengths", "episodes"):
        lengths.add_column(col, justify="right")
    for b in stats["episode_length"]["histogram"]:
        lengths.add_row(str(b["lo"]) if b["lo"] == b["hi"] else f"{b['lo']}-{b['hi']}", str(b["count"]))
    console.print(lengths)
    for key in ("state", "action"):
        s = stats[key]
        table = Table(title=f"{key} (real dims 0..{s['real_dims'] - 1})")
        table.add_column("dim", justify="right")
        for col in ("mean", "std", "min", "max", "q01", "q99"):
            table.add_column(col, justify="right")
        for d in range(s["real_dims"]):
            table.add_row(str(d), *(f"{s[col][d]:+.4f}" for col in ("mean", "std", "min", "max", "q01", "q99")))
        console.print(table)
    images = stats["images"]
    table = Table(title=f"images (RGB in [0, 1], {images['frames_sampled']} sampled steps)")
    for col in ("camera", "mean", "std"):
        table.add_column(col)
    for key, s in images.items():
        if key != "frames_sampled":
            table.add_row(key, " ".join(f"{v:.3f}" for v in s["mean"]), " ".join(f"{v:.3f}" for v in s["std"]))
    console.print(table)
    e = stats["exploration"]
    if e is not None:
        table = Table(title="exploration (f1.datasets.exploration)", show_header=False)
        table.add_row("object_contact_fraction", f"{e['object_contact_fraction']:.4f} of acted steps")
        table.add_row("episodes with contact", f"{e['episodes_with_contact']:.3f}")
        table.add_row("objects_moved", f"{e['objects_moved']:.3f} per episode (> {e['moved_m'] * 100:.0f} cm), of {e['objects_on_table']:.2f} on the table")
        table.add_row("ee voxels", f"{e['ee_voxels']:.1f} per episode ({e['voxel_size_m'] * 100:.0f} cm)")
        table.add_row("union_voxels", f"{e['union_voxels']:.0f} over all episodes")
        console.print(table)


def main(store: Path, as_json: bool = False, sample_images: int = 256, write_normalizer: bool = True) -> None:
    reader = open_store(store)
    stats = compute_stats(reader, sample_images=sample_images, progress=sys.stderr.isatty())
    stats["normalizer"] = None
    if write_normalizer:
        path = store_path(store) / NORMALIZER_FILE
        normalizers = {k: Normalizer.from_stats(stats[k]) for k in ("action", "state")}
        if isinstance(path, S3Path):  # one PUT replaces an object whole: no temp name needed
            path.write_text(json.dumps({k: asdict(v) for k, v in normalizers.items()}, indent=2))
        else:
            save_normalizers(path, normalizers)
        stats["normalizer"] = str(path)
    if as_json:
        print(json.dumps(stats))
        return
    console = Console()
    _print_tables(stats, console)
    if write_normalizer:
        console.print(f"wrote {stats['normalizer']}")
