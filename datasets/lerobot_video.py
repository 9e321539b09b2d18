"""MP4 files of a LeRobot dataset, through PyAV (its wheels bundle FFmpeg with SVT-AV1, x264 and dav1d).

One VideoFileWriter per camera and file: episodes are appended one after another into one stream,
frame k of the file at pts k in a 1/fps time base, so an episode starting at file frame s has
from_timestamp s / fps, which is where LeRobot's reader seeks.

Codecs:
- "av1": LeRobot's default codec, libsvtav1 in yuv420p with a keyframe every 2 frames (what LeRobot's
  reader expects for fast seeking), but crf 20 at preset 9 where LeRobot sets crf 30 at preset 12:
  on f1's 64x64 head frames LeRobot's settings gave 33.9-36.1 dB per episode, these 37.5-38.2 dB
  in files a tenth smaller (SVT-AV1's fastest presets code tiny frames poorly: preset 10 gave
  34.8-36.9 dB; preset 8 the same as 9 at 15% fewer frames/s). Lossy (chroma subsampled: 41 dB at
  best on those frames); even frame sizes only.
- "lossless": libx264rgb at qp 0 in rgb24 (H.264 High 4:4:4 Predictive): every pixel comes back
  bit-exact, through PyAV and through LeRobot's torchcodec decoder alike. Preset ultrafast: 2.7x
  the frames/s of veryfast on 128x128 frames for files 20% larger (qp 0 is exact at any preset).
"""

from __future__ import annotations

import logging
import os
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from f1.datasets.lerobot_layout import LeRobotError

CODECS = {
    "av1": ("libsvtav1", "yuv420p", {"g": "2", "crf": "20", "preset": "9"}),
    "lossless": ("libx264rgb", "rgb24", {"qp": "0", "preset": "ultrafast", "g": "2"}),
}


def _av():
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its config banner to stderr unless told: errors only
    import av

    logging.getLogger("libav").setLevel(logging.ERROR)  # the encoders' banners are not the user's business
    return av


def check_codec(codec: str, height: int, width: int) -> None:
    """LeRobotError (one line) when `codec` cannot encode frames of this size here."""
    name, pix_fmt, _ = CODECS[codec]
    try:
        _av().codec.Codec(name, "w")
    except Exception:  # noqa: BLE001 - PyAV raises UnknownCodecError or ValueError depending on version
        raise LeRobotError(f"this PyAV build has no {name} encoder; reinstall the `av` wheel from PyPI") from None
    if pix_fmt == "yuv420p" and (height % 2 or width % 2):
        raise LeRobotError(f"frames of {height}x{width} cannot be AV1 yuv420p (odd size); pass --lossless")


class VideoFileWriter:
    """Appends frames (H, W, 3) uint8 to one MP4; `frames` counts them, `bytes` the encoded bytes so far."""

    def __init__(self, path: Path, fps: int, codec: str, height: int, width: int):
        av = _av()
        name, pix_fmt, options = CODECS[codec]
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.frames, self.bytes = path, 0, 0
        self._time_base = Fraction(1, fps)
        self._container = av.open(str(path), "w")
        self._stream = self._container.add_stream(name, fps, options=dict(options))
        self._stream.pix_fmt = pix_fmt
        self._stream.width, self._stream.height = width, height
        self._stream.time_base = self._time_base
        self._frame_type = av.VideoFrame

    def add(self, frames: np.ndarray) -> None:
        """frames: (n, H, W, 3) uint8."""
        for image in frames:
            frame = self._frame_type.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts, frame.time_base = self.frames, self._time_base
            self._mux(self._stream.encode(frame))
            self.frames += 1

    def _mux(self, packets) -> None:
        self.bytes += sum(p.size for p in packets)
        self._container.mux(packets)

    def close(self) -> None:
        self._mux(self._stream.encode())  # flush the encoder's delayed frames
        self._container.close()


def read_frames(path: Path, fps: int, hw: tuple[int, int], max_frames: int) -> Iterator[tuple[int, np.ndarray]]:
    """(frame number at `fps`, (H, W, 3) uint8) of every frame of a video file, in order.

    The number is the frame's time times fps, rounded: where LeRobot's reader would look for it.
    LeRobotError when the stream's size is not `hw` (checked before any frame is decoded) or past
    `max_frames` frames.
    """
    av = _av()
    try:
        container = av.open(str(path))
    except Exception as exc:  # noqa: BLE001 - FFmpeg's many error types
        raise LeRobotError(f"{path} is not a readable video ({type(exc).__name__}); re-export the dataset") from None
    with container:
        if not container.streams.video:
            raise LeRobotError(f"{path} has no video stream; re-export the dataset")
        stream = container.streams.video[0]
        if (stream.height, stream.width) != tuple(hw):
            raise LeRobotError(f"{path} holds {stream.height}x{stream.width} frames, info.json says {hw[0]}x{hw[1]}; re-export the dataset")
        stream.thread_type = "AUTO"
        decoded = 0
        for frame in container.decode(stream):
            decoded += 1
            if decoded > max_frames:
                raise LeRobotError(f"{path} holds more than the {max_frames} frames its episodes claim; re-export the dataset")
            t = float(frame.time) if frame.time is not None else (decoded - 1) / fps
            yield int(round(t * fps)), frame.to_ndarray(format="rgb24")
