"""Teacher samples: one stored episode replayed through the world model, written as a PNG and a video.

The model predicts each next wrist frame from the true history (teacher
forcing), its memory carried over the whole episode from zeros; the most
likely token of each grid cell is decoded by the tokenizer. Argmax, not
sampling, so writing a sample draws nothing from the RNGs an exact resume restores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from f1.datasets.reader import EpisodeInfo, StoreReader
from f1.shared.normalizers import Normalizer
from f1.train.run_outputs import sample_png_path, video_path, write_sample_png, write_video
from f1.train.offline.teacher_batch import chunk_inputs, episode_chunk, window_tokens
from f1.train.models.tokenizer import VQTokenizer
from f1.train.models.world_model import WorldModel


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float (N,3,S,S) in [0,1] -> uint8 (N,S,S,3)."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def predict_episode(
    model: WorldModel,
    tokenizer: VQTokenizer,
    normalizers: Mapping[str, Normalizer],
    arrays: Mapping[str, np.ndarray],
    history: int,
    stride: int,
    use_head: bool,
) -> tuple[np.ndarray, float]:
    """-> (predicted wrist frames for steps 1..N-1, uint8 (N-1,S,S,3); token accuracy)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        chunk = episode_chunk(arrays, history, stride)
        inputs, targets, _ = chunk_inputs(chunk, window_tokens(chunk, tokenizer, device, use_head), normalizers, device)
        logits, _, _ = model.forward_chunk(inputs, model.initial_memory(1, device))  # (1,N-1,n,K)
        tokens = logits.argmax(-1)[0]  # (N-1,n)
        accuracy = float((tokens == targets[0]).float().mean())
        frames = torch.cat([tokenizer.decode(tokens[i : i + 64]) for i in range(0, tokens.shape[0], 64)])
    finally:
        model.train(was_training)
    return to_uint8(frames), accuracy


def write_episode_sample(
    output_dir: Path,
    store: StoreReader,
    info: EpisodeInfo,
    model: WorldModel,
    tokenizer: VQTokenizer,
    normalizers: Mapping[str, Normalizer],
    history: int,
    stride: int,
    use_head: bool,
    fps: float,
) -> tuple[Path, Path, float]:
    """samples/episode_<index>.png (the middle step) and videos/episode_<index>.mp4; -> (png, mp4, accuracy)."""
    keys = ("wrist_rgb", "action", "state") + (("head_rgb",) if use_head or "head" in store.spec.cameras else ())
    arrays = store.read_episode(info, keys=keys)
    predicted, accuracy = predict_episode(model, tokenizer, normalizers, arrays, history, stride, use_head)
    wrist = arrays["wrist_rgb"]  # (N,H,W,3)
    k = (len(wrist) - 1) // 2  # the middle step with a next frame
    slots = [max(k - (history - 1 - j) * stride, 0) for j in range(history)]  # oldest first
    png = write_sample_png(sample_png_path(output_dir, info.index), [wrist[s] for s in slots], wrist[k + 1], predicted[k])
    columns = ([arrays["head_rgb"][1:]] if "head_rgb" in arrays else []) + [wrist[1:], predicted]
    mp4 = write_video(video_path(output_dir, info.index), columns, fps)
    return png, mp4, accuracy
