"""Figures that say whether a reconstructed or predicted frame looks like the truth.

PSNR alone hides a grey, blurred frame, so every image figure comes with three more:

- saturation ratio: mean HSV saturation of the frames / that of the truth (a grey blur scores << 1)
- colourful MAE: mean absolute error on each true frame's most saturated COLOURFUL_FRACTION of
  pixels (the clutter objects: the table and walls are muted), channels in [0, 1]
- gradient energy ratio: mean squared neighbour difference of the frames / that of the truth
  (< 1 is blur, > 1 is ringing or noise)

All take float arrays in [0, 1] of shape (N, H, W, 3) and return one number over the N frames.
"""

from __future__ import annotations

import numpy as np

COLOURFUL_FRACTION = 0.02


def mse_per_frame(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,...) x 2 -> (N,) mean squared error."""
    return ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(1)


def psnr_per_frame(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,...) x 2 -> (N,) PSNR in dB, 10 log10(1 / MSE) with pixels in [0, 1] (MSE floored at 1e-10)."""
    return 10 * np.log10(1.0 / np.maximum(mse_per_frame(a, b), 1e-10))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Mean per-frame PSNR (dB)."""
    return float(psnr_per_frame(a, b).mean())


def saturation(frames: np.ndarray) -> np.ndarray:
    """HSV saturation (max - min) / max per pixel, 0 where the pixel is black: (N,H,W,3) -> (N,H,W)."""
    hi, lo = frames.max(-1), frames.min(-1)
    return np.where(hi > 0, (hi - lo) / np.maximum(hi, 1e-12), 0.0)


def saturation_ratio(frames: np.ndarray, truth: np.ndarray) -> float:
    return float(saturation(frames).mean() / max(saturation(truth).mean(), 1e-12))


def colourful_mae(frames: np.ndarray, truth: np.ndarray, fraction: float = COLOURFUL_FRACTION) -> float:
    """MAE over each true frame's most saturated `fraction` of pixels (at least one a frame)."""
    n = len(truth)
    sat = saturation(truth).reshape(n, -1)  # (N,P)
    k = max(1, int(round(fraction * sat.shape[1])))
    top = np.argpartition(-sat, k - 1, axis=1)[:, :k]  # (N,k) the k most saturated pixels of each frame
    err = np.abs(frames.astype(np.float64) - truth.astype(np.float64)).reshape(n, -1, 3).mean(-1)  # (N,P)
    return float(np.take_along_axis(err, top, 1).mean())


def gradient_energy(frames: np.ndarray) -> float:
    """Mean squared horizontal and vertical neighbour difference."""
    f = frames.astype(np.float64)
    return float(0.5 * (np.mean(np.diff(f, axis=2) ** 2) + np.mean(np.diff(f, axis=1) ** 2)))


def gradient_energy_ratio(frames: np.ndarray, truth: np.ndarray) -> float:
    return gradient_energy(frames) / max(gradient_energy(truth), 1e-12)


def ssim_per_frame(frames: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(N,S,S,3) x 2 -> (N,) mean local SSIM (7x7 uniform windows, per channel), as the tokenizer's loss computes it."""
    import torch

    from f1.train.models.tokenizer import ssim_map

    to_t = lambda x: torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).permute(0, 3, 1, 2)  # noqa: E731
    with torch.no_grad():
        return ssim_map(to_t(frames), to_t(truth)).mean((1, 2, 3)).numpy()


def image_figures(frames: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """The four figures of a set of frames against the truth."""
    return {
        "psnr": psnr(frames, truth),
        "saturation_ratio": saturation_ratio(frames, truth),
        "colourful_mae": colourful_mae(frames, truth),
        "gradient_energy_ratio": gradient_energy_ratio(frames, truth),
    }
