"""The imagination phase's picture: a few imagined rollouts, one row each, steps left to right."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from f1.train.offline.teacher_samples import to_uint8
from f1.train.run_outputs import SAMPLES_DIR, write_rows_png

ROWS = 4  # imagined rollouts shown
COLUMNS = 9  # steps shown per rollout, spread over the horizon


def write_imagined_sample(output_dir: Path, iteration: int, imagined: Any) -> Path:
    """samples/imagined_<iteration>.png: ROWS rollouts (step 0 is the replayed real frame), COLUMNS steps each.

    imagined: an Imagined with frames (H+1,N,3,S,S) kept.
    """
    assert imagined.frames is not None, "imagine(keep_frames=True) keeps the frames this picture shows"
    horizon, rows = imagined.frames.shape[0] - 1, min(ROWS, imagined.frames.shape[1])
    steps = sorted({round(i * horizon / (COLUMNS - 1)) for i in range(COLUMNS)})
    frames = to_uint8(imagined.frames[steps, :rows].flatten(0, 1)).reshape(len(steps), rows, *imagined.frames.shape[-2:], 3)
    labelled = [(f"start {r} (step 0: real)", [frames[c, r] for c in range(len(steps))]) for r in range(rows)]
    path = Path(output_dir) / SAMPLES_DIR / f"imagined_{iteration}.png"
    return write_rows_png(path, labelled, [f"k={k}" for k in steps])
