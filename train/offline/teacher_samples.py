"""Teacher samples: one stored episode predicted by the world model, written as a PNG and a video.

Two predictions of every frame 1..N-1, both from the memory carried from zeros:
one step ahead from the true history (teacher forcing), and open loop from
frame 0 (the model fed its own most likely codes, the true actions). Each
frame shown is the model's frame of f1.train.prediction_eval: the last true
frame plus the predicted change, decoded. Nothing is sampled, so writing a
sample draws nothing from the RNGs an exact resume restores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from f1.datasets.reader import EpisodeInfo, StoreReader
from f1.shared.normalizers import Normalizer
from f1.train.models.tokenizer import FSQTokenizer
from f1.train.models.world_model import WorldModel
from f1.train.prediction_eval import PredictionEvaluator
from f1.train.run_outputs import resize_frame, sample_png_path, video_path, write_rows_png, write_video

SAMPLE_COLUMNS = 8


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float (N,3,S,S) in [0,1] -> uint8 (N,S,S,3)."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def frames_uint8(frames: np.ndarray) -> np.ndarray:
    """float (N,S,S,3) in [0,1] -> uint8."""
    return (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)


def write_episode_sample(
    output_dir: Path,
    store: StoreReader,
    info: EpisodeInfo,
    model: WorldModel,
    tokenizer: FSQTokenizer,
    normalizers: Mapping[str, Normalizer],
    history: int,
    stride: int,
    use_head: bool,
    fps: float,
) -> tuple[Path, Path, float]:
    """samples/episode_<index>.png (truth / one step / open loop at 8 steps) and videos/episode_<index>.mp4.

    -> (png, mp4, one-step token accuracy)
    """
    keys = ("wrist_rgb", "action", "state") + (("head_rgb",) if use_head or "head" in store.spec.cameras else ())
    arrays = store.read_episode(info, keys=keys)
    was_training = model.training
    model.eval()
    try:
        rollout = PredictionEvaluator(model, tokenizer, normalizers, history, stride, use_head).episode_rollout(arrays)
    finally:
        model.train(was_training)
    truth, one_step, open_loop = (frames_uint8(rollout[key]) for key in ("truth", "one_step", "open_loop"))
    steps = np.unique(np.linspace(1, len(truth) - 1, min(SAMPLE_COLUMNS, len(truth) - 1)).round().astype(int))
    png = write_rows_png(
        sample_png_path(output_dir, info.index),
        [("truth", truth[steps]), ("one step ahead (true history)", one_step[steps - 1]), ("open loop from step 0", open_loop[steps - 1])],
        [f"t={s}" for s in steps],
    )  # fmt: skip
    columns = [truth[1:], one_step, open_loop]
    if "head_rgb" in arrays:
        height, width = truth.shape[1:3]
        columns.insert(0, np.stack([resize_frame(f, height, width) for f in arrays["head_rgb"][1:]]))
    mp4 = write_video(video_path(output_dir, info.index), columns, fps)
    return png, mp4, float(rollout["token_accuracy"])
