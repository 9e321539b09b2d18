"""`f1 train tokenizer` end to end on a tiny store written with the datasets writer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from f1.datasets import EpisodeMeta, StoreSpec, open_writer

SIZE = 32
SPEC = StoreSpec(image_hw=(SIZE, SIZE))


def wrist_like_episode(i: int, n: int) -> tuple[dict[str, np.ndarray], EpisodeMeta]:
    """A shaded table and two discs that move a little each step (what a wrist camera sees).

    The objects keep their colours across episodes (one scene), so held-out episodes show
    known objects in new places.
    """
    rng = np.random.default_rng(i)
    yy, xx = np.mgrid[:SIZE, :SIZE] / SIZE
    table = np.stack([60 + 80 * yy, 110 + 40 * xx, 70 + 30 * yy * xx], -1)
    centres, colours = rng.uniform(0.2, 0.8, (2, 2)), [(200, 40, 40), (40, 40, 220)]
    frames = np.repeat(table[None], n, 0)
    for k in range(n):
        for (cx, cy), colour in zip(centres + 0.03 * k, colours):
            frames[k][(xx - cx) ** 2 + (yy - cy) ** 2 < 0.03] = colour
    frames = frames.round().astype(np.uint8)
    k = np.arange(n)
    action = np.zeros((n, SPEC.action_dim), np.float32)
    action[:-1, :8] = rng.uniform(-1, 1, (n - 1, 8))
    arrays = {
        "head_rgb": frames[:, ::-1].copy(),
        "wrist_rgb": frames,
        "state": np.zeros((n, SPEC.state_dim), np.float32),
        "action": action,
        "is_first": k == 0,
        "is_last": k == n - 1,
        "is_terminal": np.zeros(n, bool),
    }
    return arrays, EpisodeMeta(f"t0-e{i:07d}", seed=i, scene_id=0, length=n)


def write_store(path: Path, episodes: int = 6, steps: int = 10) -> Path:
    with open_writer(path, "zarr", SPEC, "n0w0", {}, episodes_per_shard=3) as writer:
        for i in range(episodes):
            writer.add_episode(*wrist_like_episode(i, steps))
    return path


@pytest.mark.slow
def test_tokenizer_phase_beats_the_mean_image(tmp_path, f1_cli):
    store = write_store(tmp_path / "store")
    out = tmp_path / "tok"
    result = f1_cli(
        "train", "tokenizer", "--data", store, "--output-dir", out, "--max-steps", "120",
        "--set", "tokenizer.batch_size=16", "--set", f"model.tokenizer_image_size={SIZE}",
        "--set", "model.tokenizer_downsample=4", "--set", "logging.tensorboard=false",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("tokenizer.pt", "tokenizer_config.json", "reconstructions.png", "metrics.json", "episode_metrics.jsonl"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 120 and metrics["n_tokens"] == (SIZE // 4) ** 2
    assert metrics["heldout_frames"] == 10  # one whole held-out episode of the six
    assert metrics["psnr"] > metrics["psnr_mean_image_baseline"] + 1.5, metrics
    png = np.asarray(Image.open(out / "reconstructions.png"))
    assert png.shape[0] == 2 * 2 * SIZE + 2 and png.shape[1] >= 2 * SIZE * 8, png.shape  # originals over reconstructions, 2x
    for figure in ("saturation_ratio", "colourful_mae", "gradient_energy_ratio"):
        assert np.isfinite(metrics[figure]), (figure, metrics)

    from f1.train.models.tokenizer import FSQTokenizer

    tokenizer = FSQTokenizer.load(out)
    assert tokenizer.n_tokens == metrics["n_tokens"]


def test_tokenizer_phase_rejects_a_missing_store(tmp_path, f1_cli):
    result = f1_cli("train", "tokenizer", "--data", tmp_path / "nope", "--output-dir", tmp_path / "tok")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and "nope" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "tok").exists()  # nothing written before the input was checked
