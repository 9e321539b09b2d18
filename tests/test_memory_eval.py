"""f1.train.memory_eval: memory-pixel figures on a camera that slides over a painted plane and comes back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from f1.shared.config import load_config
from f1.train.memory_eval import MemoryPixelEvaluator
from f1.train.models.world_model import WorldModel
from test_prediction_eval import SETTINGS, SIZE, evaluator, models  # noqa: F401  (the module's fixture)

FOCAL = 16.0  # pixels: a footprint of SIZE / FOCAL = 2 m at 1 m
K = np.array([[FOCAL, 0, (SIZE - 1) / 2], [0, FOCAL, (SIZE - 1) / 2], [0, 0, 1]], np.float32)
PIXEL_M = 1 / FOCAL  # one pixel's footprint at 1 m
# out 16 pixels and back, 4 a step (1/8 of the frame): the way back re-enters what the first frames saw
SHIFTS = [0, 4, 8, 12, 16, 16, 12, 8, 4, 0, 0]


def paint(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The plane's colour at world (x, y) (metres) -> (..., 3) uint8: stripes of every width, never repeating here."""
    r = 128 + 100 * np.sin(3.1 * x + 0.5 * y)
    g = 128 + 100 * np.sin(1.7 * y - 2.3 * x * x)
    b = 128 + 100 * np.cos(5.3 * x * y + 0.7 * x)
    return np.stack([r, g, b], -1).round().astype(np.uint8)


def sliding_episode(seed: int) -> dict[str, np.ndarray]:
    """A camera 1 m above the plane z = 0, looking down, moving along x in whole pixels: frames, depth, poses."""
    rng = np.random.default_rng(seed)
    n = len(SHIFTS)
    pose = np.tile(np.eye(4, dtype=np.float32), (n, 1, 1))
    pose[:, :3, :3] = [[1, 0, 0], [0, -1, 0], [0, 0, -1]]  # OpenCV axes, z down onto the plane
    pose[:, 0, 3] = np.array(SHIFTS) * PIXEL_M
    pose[:, 2, 3] = 1.0
    v, u = np.mgrid[:SIZE, :SIZE]
    frames = np.stack([paint(x0 + (u - K[0, 2]) / FOCAL, -(v - K[1, 2]) / FOCAL) for x0 in pose[:, 0, 3]])  # (N,S,S,3)
    return {
        "wrist_rgb": frames,
        "action": rng.normal(size=(n, 32)).astype(np.float32),
        "state": rng.normal(size=(n, 32)).astype(np.float32),
        "wrist_depth": np.full((n, SIZE, SIZE), 1000, np.uint16),
        "wrist_pose": pose,
        "wrist_intrinsics": np.tile(K, (n, 1, 1)),
    }


def test_the_oracle_is_exact_on_a_plane_and_the_figures_cover_the_returning_frames(models):  # noqa: F811
    memory = MemoryPixelEvaluator(evaluator(models))
    returned = memory.add_episode(sliding_episode(0), memory.carried_memories(sliding_episode(1)))
    # what it hands the next episode is this one's own memory, as carried_memories gives it
    assert all(torch.equal(a, b) for a, b in zip(returned, memory.carried_memories(sliding_episode(0)), strict=True))
    summary = memory.summary()
    # history 2 frames: from the 7th frame on (shift 12 after 16, 16) the view re-enters what shifts 0..6 showed
    assert summary["frames"]["evaluated"] == len(SHIFTS) - 1
    assert 0 < summary["frames"]["with_memory_pixels"] < summary["frames"]["evaluated"]
    assert summary["steps_fraction"] == pytest.approx(summary["frames"]["with_memory_pixels"] / (len(SHIFTS) - 1))
    # the oracle recolours each memory pixel from the frame that last saw it: exact up to the tokenizer's resize
    assert summary["psnr_oracle"] > summary["psnr_zeroed"] + 5, summary
    for key in ("psnr_carried", "psnr_zeroed", "psnr_other_episode"):
        assert np.isfinite(summary[key]), key
    assert summary["full_frame_qualifying"]["frames"] + summary["full_frame_none"]["frames"] <= len(SHIFTS) - 1
    assert summary["full_frame_qualifying"]["frames"] > 0 and summary["full_frame_none"]["frames"] > 0
    assert [row["k"] for row in summary["open_loop"]] == sorted(row["k"] for row in summary["open_loop"])
    assert summary["open_loop"] and all(np.isfinite(row["psnr_carried"]) for row in summary["open_loop"])
    rows = memory.picture_rows()
    assert rows and all(len(frames) == 5 for _, frames in rows)


def test_without_a_memory_carried_zeroed_and_another_episodes_are_the_same_frames(models):  # noqa: F811
    cfg, tokenizer, _, normalizers = models
    torch.manual_seed(0)
    memoryless = WorldModel(load_config(overrides=[*SETTINGS, "model.memory_enabled=false"]), tokenizer.n_tokens, tokenizer.levels).eval()
    memory = MemoryPixelEvaluator(evaluator((cfg, tokenizer, memoryless, normalizers)))
    memory.add_episode(sliding_episode(0), memory.carried_memories(sliding_episode(1)))
    summary = memory.summary()
    assert summary["psnr_carried"] == summary["psnr_zeroed"] == summary["psnr_other_episode"]
    assert all(row["psnr_carried"] == row["psnr_zeroed"] for row in summary["open_loop"])
