"""`f1 dataset show`: one episode as an mp4 (cameras side by side, step number drawn) or a PNG contact sheet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from f1.datasets.reader import EpisodeInfo, StoreReader, open_store
from f1.datasets.schema import StoreError

MIN_VIDEO_HEIGHT = 256  # small camera frames are scaled up (nearest) so the video is watchable
SHEET_MAX_STEPS = 64
SHEET_COLUMNS = 8
MACRO_BLOCK = 16  # H.264 encoders want sides in multiples of 16


def resolve_episode(reader: StoreReader, episode: str) -> EpisodeInfo:
    """An episode id, or an integer index into reader.episodes (negative counts from the end)."""
    if episode in {e.episode_id for e in reader.episodes}:
        return reader.episode(episode)
    try:
        index = int(episode)
    except ValueError:
        raise StoreError(
            f"no episode {episode!r} in {reader.store_dir}; give an id (`f1 dataset stats` counts them) "
            f"or an index in [0, {len(reader.episodes)})"
        ) from None
    if not -len(reader.episodes) <= index < len(reader.episodes):
        raise StoreError(f"episode index {index} is outside [0, {len(reader.episodes)}) for {reader.store_dir}")
    return reader.episodes[index]


def labelled_frames(arrays: dict[str, np.ndarray], image_keys: tuple[str, ...], scale: int) -> list[np.ndarray]:
    """Per step: the cameras side by side, scaled by `scale`, with 'k=<step>' drawn top left. (H*scale, W*scale*C, 3)"""
    side_by_side = np.concatenate([arrays[k] for k in image_keys], axis=2)  # (N, H, W*C, 3)
    big = side_by_side.repeat(scale, axis=1).repeat(scale, axis=2)
    n = len(big)
    out = []
    for k in range(n):
        im = Image.fromarray(big[k])
        draw = ImageDraw.Draw(im)
        text = f"k={k}/{n - 1}"
        box = draw.textbbox((2, 1), text)
        draw.rectangle((0, 0, box[2] + 2, box[3] + 2), fill=(0, 0, 0))
        draw.text((2, 1), text, fill=(255, 255, 255))
        out.append(np.asarray(im))
    return out


def _pad_to_block(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, -h % MACRO_BLOCK), (0, -w % MACRO_BLOCK), (0, 0)))


def write_video(path: Path, frames: list[np.ndarray], fps: int) -> None:
    import imageio.v2 as imageio

    with imageio.get_writer(path, fps=fps, codec="libx264", macro_block_size=MACRO_BLOCK) as video:
        for frame in frames:
            video.append_data(_pad_to_block(frame))


def write_contact_sheet(path: Path, frames: list[np.ndarray]) -> None:
    """Up to SHEET_MAX_STEPS evenly spaced steps in a grid of SHEET_COLUMNS columns."""
    picks = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), SHEET_MAX_STEPS)).round().astype(int))
    h, w = frames[0].shape[:2]
    cols = min(SHEET_COLUMNS, len(picks))
    rows = -(-len(picks) // cols)
    sheet = np.zeros((rows * h, cols * w, 3), np.uint8)
    for i, k in enumerate(picks):
        r, c = divmod(i, cols)
        sheet[r * h : (r + 1) * h, c * w : (c + 1) * w] = frames[k]
    Image.fromarray(sheet).save(path)


def main(store: str | Path, episode: str, out: Path | None = None) -> None:
    reader = open_store(store)
    info = resolve_episode(reader, str(episode))
    out = Path(out) if out is not None else Path(f"{info.episode_id}.mp4")
    if out.suffix.lower() not in (".mp4", ".png"):
        raise StoreError(f"--out {out} must end in .mp4 (video) or .png (contact sheet)")
    keys = reader.spec.image_keys
    arrays = reader.read_episode(info, keys=keys)
    h = reader.spec.image_hw[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".png":
        write_contact_sheet(out, labelled_frames(arrays, keys, scale=max(1, 128 // h)))
    else:
        write_video(out, labelled_frames(arrays, keys, scale=max(1, -(-MIN_VIDEO_HEIGHT // h))), reader.spec.control_freq)
    print(out)
