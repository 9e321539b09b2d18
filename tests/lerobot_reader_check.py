"""Runs inside .venv-lerobot (scripts/lerobot_env.sh), not f1's environment: LeRobot 0.4.4 reads a dataset
that f1 wrote and reports what it saw, for tests/test_lerobot.py to compare with f1's own frames.

    python lerobot_reader_check.py DATASET_DIR OUT_DIR
    python lerobot_reader_check.py --imports      (scripts/lerobot_env.sh: does LeRobot's reader import?)

OUT_DIR gets report.json (counts, fps, every feature's shape and dtype as LeRobot's __getitem__ returns
it, the stats LeRobot recomputes next to the ones f1 wrote) and, for the first and the last episode,
<episode>_<feature>.npy: images as uint8 (n, H, W, 3) decoded by LeRobot's default decoder (torchcodec),
the other features as LeRobot returns them.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # a local dataset: nothing is fetched

import numpy as np
import pandas as pd
import torch

# PyPI's torchvision is a CUDA build: beside a CPU torch its compiled ops (_C) do not load, and its
# import then fails registering fake kernels for two of them. Declaring the two ops lets the
# pure-Python rest import (a CUDA torch loads the ops itself); LeRobot's dataset reader calls no torchvision op (it decodes with torchcodec).
for _op in ("nms", "qnms") if torch.version.cuda is None else ():
    torch.library.define(f"torchvision::{_op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")

import torchcodec.decoders  # noqa: E402,F401 - LeRobot's default decoder must load
from lerobot.datasets.compute_stats import aggregate_stats, compute_episode_stats  # noqa: E402
from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: E402


def main(root: Path, out: Path) -> None:
    ds = LeRobotDataset("f1/export", root=root)
    meta = ds.meta
    first = ds[0]
    report = {
        "num_frames": ds.num_frames,
        "num_episodes": ds.num_episodes,
        "fps": ds.fps,
        "video_backend": ds.video_backend,
        "task": first["task"],
        "items": {k: [list(v.shape), str(v.dtype)] for k, v in first.items() if isinstance(v, torch.Tensor)},
        "camera_keys": meta.camera_keys,
        "episodes": [],
    }
    for ep in sorted({0, ds.num_episodes - 1}):
        row = meta.episodes[ep]
        items = [ds[i] for i in range(row["dataset_from_index"], row["dataset_to_index"])]
        report["episodes"].append({"index": ep, "length": row["length"], "episode_id": row["episode_id"]})
        for key, value in items[0].items():
            if not isinstance(value, torch.Tensor):
                continue
            stacked = torch.stack([item[key] for item in items])
            if key in meta.camera_keys:  # (n, 3, H, W) float in [0, 1] -> (n, H, W, 3) uint8
                stacked = (stacked * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
            np.save(out / f"{ep}_{key}.npy", stacked.numpy())
    report["stats"] = recomputed_stats(root, meta)
    (out / "report.json").write_text(json.dumps(report))


def recomputed_stats(root: Path, meta) -> dict:
    """LeRobot's own stats code over f1's numbers: each episode's vector stats from its frames, and the
    dataset's from the episodes' (images included), beside what f1 wrote; the largest relative difference of each."""
    frames = pd.concat([pd.read_parquet(p) for p in sorted((root / "data").glob("*/*.parquet"))])
    episodes = pd.concat([pd.read_parquet(p) for p in sorted((root / "meta/episodes").glob("*/*.parquet"))])
    vector_keys = [k for k, f in meta.features.items() if f["dtype"] not in ("video", "image", "string")]
    worst = {"episode": 0.0, "dataset": 0.0}
    per_episode = []
    for _, row in episodes.iterrows():
        rows = frames[frames["episode_index"] == row["episode_index"]]
        data = {k: np.stack(rows[k].to_numpy()) if meta.features[k]["shape"][0] > 1 or k in ("action", "observation.state") else rows[k].to_numpy() for k in vector_keys}
        theirs = compute_episode_stats(data, meta.features)
        for key, stats in theirs.items():
            for name, value in stats.items():
                mine, value = np.asarray(row[f"stats/{key}/{name}"].tolist(), dtype=np.float64), np.asarray(value, dtype=np.float64)
                if name == "std":  # LeRobot: sqrt(E[x^2] - E[x]^2) in float32, which cancels to 0 for a tiny spread
                    square = np.maximum(1.0, np.asarray(stats["mean"], dtype=np.float64) ** 2 + value**2)
                    mine, value = mine**2 / square, value**2 / square  # variances, relative to E[x^2]
                worst["episode"] = max(worst["episode"], _relative(mine, value))
        per_episode.append(
            {
                key: {name: np.asarray(_nested(row[f"stats/{key}/{name}"]), dtype=np.float64) for name in theirs[next(iter(theirs))]}
                for key in meta.features
                if f"stats/{key}/mean" in row
            }
        )
    aggregated = aggregate_stats(per_episode)
    for key, stats in aggregated.items():
        for name, value in stats.items():
            mine = np.asarray(meta.stats[key][name], dtype=np.float64)
            worst["dataset"] = max(worst["dataset"], _relative(mine, value))
    return worst


def _relative(mine: np.ndarray, theirs: np.ndarray) -> float:
    """Largest difference relative to max(1, |value|): LeRobot computes in the data's dtype (float32), f1 in float64."""
    return float(np.max(np.abs(mine - theirs) / np.maximum(1.0, np.abs(theirs))))


def _nested(value):
    """A Parquet list cell (numpy object arrays inside numpy arrays) as nested Python lists."""
    if isinstance(value, np.ndarray):
        return [_nested(v) for v in value]
    return value


if __name__ == "__main__":
    if sys.argv[1:] != ["--imports"]:
        main(Path(sys.argv[1]), Path(sys.argv[2]))
