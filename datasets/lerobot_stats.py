"""Feature statistics as LeRobot 0.4 computes them (lerobot.datasets.compute_stats), without LeRobot.

Per episode, per feature: min, max, mean, std, count and the quantiles q01 q10 q50 q90 q99, the
quantiles read off a 5,000-bin histogram between the episode's min and max. Images: a sample of the
episode's frames (all of them up to 100, then n ** 0.75), per channel, scaled to [0, 1], shaped
(3, 1, 1). The dataset's stats aggregate the episodes': min of mins, max of maxes, the count-weighted
mean, the pooled std, and count-weighted quantiles; kept as running sums, so memory does not grow
with the number of episodes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from f1.datasets.lerobot_layout import QUANTILES

HISTOGRAM_BINS = 5000
QUANTILE_KEYS = tuple(f"q{int(q * 100):02d}" for q in QUANTILES)


def vector_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """Stats of one episode's vector feature: values (n, d) -> {stat: (d,)}, count (1,)."""
    x = values.reshape(len(values), -1).astype(np.float64)  # (n, d); bools count as 0/1
    n = len(x)
    stats = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0), "count": np.array([n])}
    if n < 2:  # LeRobot: too few samples for a histogram; every quantile is the mean
        stats.update({q: stats["mean"].copy() for q in QUANTILE_KEYS})
        return stats
    columns = [_histogram_quantiles(x[:, i], stats["min"][i], stats["max"][i]) for i in range(x.shape[1])]
    for j, key in enumerate(QUANTILE_KEYS):
        stats[key] = np.array([c[j] for c in columns])
    return stats


def _histogram_quantiles(column: np.ndarray, lo: float, hi: float, weights: np.ndarray | None = None) -> list[float]:
    """LeRobot's RunningQuantileStats after one batch: linear interpolation inside a 5,000-bin histogram.

    weights: how many times each value of `column` occurs (None: once each)."""
    edges = np.linspace(lo - 1e-10, hi + 1e-10, HISTOGRAM_BINS + 1)
    cumsum = np.cumsum(np.histogram(column, bins=edges, weights=weights)[0])
    total = len(column) if weights is None else weights.sum()
    out = []
    for q in QUANTILES:
        target = q * total
        idx = int(np.searchsorted(cumsum, target))
        if idx == 0:
            out.append(edges[0])
        elif idx >= len(cumsum):
            out.append(edges[-1])
        else:
            before, inside = cumsum[idx - 1], cumsum[idx] - cumsum[idx - 1]
            out.append(edges[idx] if inside == 0 else edges[idx] + (target - before) / inside * (edges[idx + 1] - edges[idx]))
    return out


def sample_frame_indices(n: int) -> np.ndarray:
    """LeRobot's sample_indices: which of an episode's n frames its image stats read."""
    num = n if n < 100 else max(100, min(int(n**0.75), 10_000))
    return np.round(np.linspace(0, n - 1, num)).astype(int)


def image_stats(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Stats of one episode's frames (n, H, W, 3) uint8: per channel in [0, 1], each stat (3, 1, 1)."""
    sample = frames[sample_frame_indices(len(frames))]  # (s, H, W, 3)
    h, w = sample.shape[1:3]
    if max(h, w) >= 300:  # LeRobot's auto_downsample_height_width
        step = int(w / 150) if w > h else int(h / 150)
        sample = sample[:, ::step, ::step]
    stats = _uint8_channel_stats(sample.reshape(-1, sample.shape[-1]))  # pixels as rows, channels as columns
    out = {k: (v / 255.0).reshape(-1, 1, 1) for k, v in stats.items() if k != "count"}
    out["count"] = np.array([len(sample)])  # LeRobot counts frames, not pixels
    return out


def _uint8_channel_stats(pixels: np.ndarray) -> dict[str, np.ndarray]:
    """vector_stats of (n, c) uint8 values, from each channel's 256-value counts: the same numbers
    (the histogram of the counted values is the histogram of the pixels) at a fraction of the time,
    which matters since image stats were 60% of an export at 128x128."""
    values = np.arange(256, dtype=np.float64)
    per_channel = []
    for i in range(pixels.shape[1]):
        counts = np.bincount(pixels[:, i], minlength=256)  # (256,)
        seen = np.flatnonzero(counts)
        n = counts.sum()
        mean = counts @ values / n
        stats = {"min": values[seen[0]], "max": values[seen[-1]], "mean": mean, "std": np.sqrt(counts @ (values - mean) ** 2 / n)}
        if n < 2:
            stats.update({q: mean for q in QUANTILE_KEYS})
        else:
            stats.update(zip(QUANTILE_KEYS, _histogram_quantiles(values[seen], stats["min"], stats["max"], counts[seen])))
        per_channel.append(stats)
    out = {k: np.array([c[k] for c in per_channel]) for k in per_channel[0]}
    out["count"] = np.array([len(pixels)])
    return out


class StatsAggregate:
    """Running aggregate of per-episode stats of one feature (LeRobot's aggregate_feature_stats)."""

    def __init__(self) -> None:
        self.count = 0
        self.sums: dict[str, np.ndarray] = {}  # count-weighted sums of mean, mean of squares, quantiles
        self.min: np.ndarray | None = None
        self.max: np.ndarray | None = None

    def add(self, stats: dict[str, np.ndarray]) -> None:
        c = int(stats["count"][0])
        weighted = {"mean": stats["mean"], "square": stats["std"] ** 2 + stats["mean"] ** 2}
        weighted.update({q: stats[q] for q in QUANTILE_KEYS})
        for key, value in weighted.items():
            self.sums[key] = self.sums.get(key, 0) + c * value
        self.min = stats["min"] if self.min is None else np.minimum(self.min, stats["min"])
        self.max = stats["max"] if self.max is None else np.maximum(self.max, stats["max"])
        self.count += c

    def result(self) -> dict[str, Any]:
        mean = self.sums["mean"] / self.count
        std = np.sqrt(np.maximum(self.sums["square"] / self.count - mean**2, 0))
        out = {"min": self.min, "max": self.max, "mean": mean, "std": std, "count": np.array([self.count])}
        out.update({q: self.sums[q] / self.count for q in QUANTILE_KEYS})
        return {k: v.tolist() for k, v in out.items()}
