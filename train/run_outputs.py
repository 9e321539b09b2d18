"""What a training run leaves besides checkpoints (DESIGN §7): metrics, sample PNGs, videos.

```
<output_dir>/episode_metrics.jsonl    one JSON record per log step: step, loss, then namespaced keys
<output_dir>/tensorboard/             event files (same namespaced keys)
<output_dir>/samples/episode_<n>.png  history | truth | prediction
<output_dir>/videos/episode_<n>.mp4   head | ground-truth wrist | predicted wrist
<output_dir>/logs/                    DEBUG log file (f1.shared.logs.setup_logging)
```
Only the main process creates these; the phases decide who calls.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

METRICS_FILE = "episode_metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
SAMPLES_DIR = "samples"
VIDEOS_DIR = "videos"


class MetricsLog:
    """episode_metrics.jsonl plus tensorboard. Keys are namespaced (`wm/loss`, `perf/steps_per_s`)."""

    def __init__(self, output_dir: str | Path, tensorboard: bool, resume_step: Optional[int] = None) -> None:
        self.path = Path(output_dir) / METRICS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            self._drop_after(resume_step)
        self._file = open(self.path, "a")
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step hides events a crashed run wrote past the checkpoint we resume from.
            purge = resume_step + 1 if resume_step is not None else None
            self._tb = SummaryWriter(str(Path(output_dir) / TENSORBOARD_DIR), purge_step=purge)

    def _drop_after(self, step: int) -> None:
        """Forget records a killed run wrote after its last checkpoint: the resumed run writes them again."""
        if not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, step: int, metrics: Mapping[str, float]) -> dict:
        """One record: `step`, `loss` (from `wm/loss` or `loss`), then every metric as given."""
        loss = metrics.get("wm/loss", metrics.get("loss"))
        assert loss is not None, ("a metrics record needs a loss", sorted(metrics))
        record = {"step": int(step), "loss": float(loss), **{k: _plain(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)
        return record

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def _plain(value: object) -> object:
    return float(value) if isinstance(value, (np.floating, np.integer)) else value


def read_metrics(output_dir: str | Path) -> list[dict]:
    path = Path(output_dir) / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line]


# --------------------------------------------------------------------------- images


def resize_frame(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 (H, W, 3) -> (height, width, 3), bilinear."""
    if frame.shape[:2] == (height, width):
        return frame
    from PIL import Image

    return np.asarray(Image.fromarray(frame).resize((width, height), Image.BILINEAR))


def hstack(tiles: Sequence[np.ndarray], gap: int) -> np.ndarray:
    """Tiles of one height (uint8 (H, W_i, 3)) in a row, `gap` white columns between them."""
    heights = {t.shape[0] for t in tiles}
    assert len(heights) == 1, ("tiles differ in height", [t.shape for t in tiles])
    spacer = np.full((heights.pop(), gap, 3), 255, np.uint8)
    row = [tiles[0]]
    for tile in tiles[1:]:
        row += [spacer, tile] if gap else [tile]
    return np.concatenate(row, axis=1)  # (H, sum W_i + (n-1)*gap, 3)


def side_by_side(frames: Sequence[np.ndarray], gap: int = 2) -> np.ndarray:
    """Frames (each uint8 (H, W, 3)) resized to the first one's size, in a row."""
    height, width = frames[0].shape[:2]
    return hstack([resize_frame(f, height, width) for f in frames], gap)


def sample_png_path(output_dir: str | Path, episode: int) -> Path:
    return Path(output_dir) / SAMPLES_DIR / f"episode_{episode}.png"


def video_path(output_dir: str | Path, episode: int) -> Path:
    return Path(output_dir) / VIDEOS_DIR / f"episode_{episode}.mp4"


SAMPLE_MIN_TILE = 128  # sample tiles are blown up (nearest, whole pixels) to at least this many rows
CAPTION_ROWS = 16  # a white strip above the tiles naming each group


def write_sample_png(path: Path, history: Sequence[np.ndarray], truth: np.ndarray, prediction: np.ndarray) -> Path:
    """One row, captioned: the history frames (oldest first) | the true next frame | the predicted one.

    Every tile is the truth's size times an integer factor (so a 64x64 frame is seen at 128x128,
    pixel for pixel); 2-px gaps inside the history, 6-px gaps between the three groups.
    """
    from PIL import Image, ImageDraw

    height, width = truth.shape[:2]
    scale = -(-SAMPLE_MIN_TILE // height)  # ceil: integer upscaling keeps the tokens' blockiness visible
    tiles = [resize_frame(f, height, width).repeat(scale, 0).repeat(scale, 1) for f in (*history, truth, prediction)]
    history_row = hstack(tiles[:-2], 2)
    image = hstack([history_row, tiles[-2], tiles[-1]], 6)  # (h*scale, W, 3)
    canvas = Image.new("RGB", (image.shape[1], CAPTION_ROWS + image.shape[0]), "white")
    canvas.paste(Image.fromarray(image), (0, CAPTION_ROWS))
    draw = ImageDraw.Draw(canvas)
    tile_w = width * scale
    starts = (0, history_row.shape[1] + 6, history_row.shape[1] + 12 + tile_w)
    for x, label in zip(starts, (f"history ({len(history)} frames, oldest first)", "truth t+1", "predicted t+1")):
        draw.text((x + 2, 2), label, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def write_rows_png(path: Path, rows: Sequence[tuple[str, Sequence[np.ndarray]]], column_labels: Sequence[str]) -> Path:
    """Captioned rows of frames, e.g. truth / one-step / open-loop at the same steps; rows[i] = (label, frames).

    Tiles are blown up (nearest, whole pixels) to at least SAMPLE_MIN_TILE rows; the caption strip above
    names the columns (the steps), each row's label sits in the strip above it.
    """
    from PIL import Image, ImageDraw

    height, width = rows[0][1][0].shape[:2]
    scale = -(-SAMPLE_MIN_TILE // height)
    strips = [hstack([resize_frame(f, height, width).repeat(scale, 0).repeat(scale, 1) for f in frames], 2) for _, frames in rows]
    row_h = CAPTION_ROWS + height * scale
    canvas = Image.new("RGB", (strips[0].shape[1], CAPTION_ROWS + row_h * len(rows)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, label in enumerate(column_labels):
        draw.text((i * (width * scale + 2) + 2, 2), label, fill="black")
    for r, ((label, _), strip) in enumerate(zip(rows, strips)):
        top = CAPTION_ROWS + r * row_h
        draw.text((2, top + 2), label, fill="black")
        canvas.paste(Image.fromarray(strip), (0, top + CAPTION_ROWS))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def write_video(path: Path, columns: Sequence[np.ndarray], fps: float) -> Path:
    """An mp4 whose frame t shows columns[i][t] side by side; each column is uint8 (T, H, W, 3)."""
    import imageio.v2 as imageio

    lengths = {len(c) for c in columns}
    assert len(lengths) == 1, ("video columns differ in length", [len(c) for c in columns])
    frames = [side_by_side([c[t] for c in columns], gap=0) for t in range(lengths.pop())]
    frames = [_even(f) for f in frames]  # yuv420p needs even sides
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimwrite(path, frames, fps=fps, codec="libx264", macro_block_size=2, quality=8)
    return path


def _even(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
