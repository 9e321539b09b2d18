"""Lossless image codecs per store format, chosen by measurement (bench/bench_datasets.py).

Zarr images are one chunk per frame. On frames rendered by F1RLEnv at
128x128 (flat-shaded tabletop, 2 cameras), bytes per frame and encode rate
of the codecs on one frame (2-core VM, numcodecs directly):
    zstd level 3               2,120 B (23x)  10,000 frames/s
    blosc-zstd (byte shuffle)  1,970 B (25x)   1,900 frames/s  (shuffle is a no-op on uint8)
    delta-zstd                 3,810 B (13x)   6,400 frames/s
    PNG (zlib 1 / 6)   3,000 / 2,580 B         1,100-1,600 frames/s
Flat-shaded renders are long runs of equal RGB triples, which zstd on the
interleaved pixels takes whole; so 'zstd' is the Zarr default. 'delta-zstd'
(channel planes, numcodecs Delta along rows, zstd: a PNG-style prediction
built from codecs plain zarr ships) wins on smooth gradients and sensor-like
noise instead (about 15x vs 2.6x for zstd on synthetic gradient frames).
Every Zarr codec here is read by plain zarr-python, without f1.

WebDataset members are files a user opens with anything: PNG by default,
raw .npy as the fast, large alternative. Store-level figures (with zarr's
per-chunk overhead and the tar headers) are in bench/RESULTS.md.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
from PIL import Image

from f1.datasets.schema import StoreError

# zarr warns, at every open, that numcodecs codecs (Delta) are outside the v3 spec; zarr-python reads
# them, which is all f1 needs. A process-wide filter for that one message: catch_warnings is not thread-safe.
warnings.filterwarnings("ignore", message=".*not in the Zarr version 3 specification.*")

AUTO = "auto"
ZARR_CODECS = ("zstd", "delta-zstd", "blosc-zstd", "blosc-lz4")
WDS_CODECS = ("png", "npy")
DEFAULT_CODEC = {"zarr": "zstd", "webdataset": "png"}
CODECS = {"zarr": ZARR_CODECS, "webdataset": WDS_CODECS}
ZSTD_LEVEL = 3
# PNG zlib level 1: on rendered frames PIL's default (6) saved 8% of a tar's bytes for ~40% more write time (bench).
PNG_LEVEL = 1


def resolve_codec(fmt: str, name: str | None) -> str:
    """The concrete codec for `fmt`; None or 'auto' gives the format's default; unknown names are a StoreError."""
    if fmt not in CODECS:
        raise StoreError(f"unknown store format {fmt!r}; use one of {list(CODECS)}")
    if name in (None, AUTO):
        return DEFAULT_CODEC[fmt]
    if name not in CODECS[fmt]:
        raise StoreError(f"image codec {name!r} does not apply to {fmt} stores; use one of {[AUTO, *CODECS[fmt]]}")
    return name


def zarr_image_codecs(name: str) -> dict[str, Any]:
    """`filters` and `compressors` for zarr.create_array on (N, H, W, 3) uint8 images, one frame per chunk."""
    from zarr.codecs import BloscCodec, TransposeCodec, ZstdCodec

    if name == "delta-zstd":
        from zarr.codecs.numcodecs import Delta

        delta = Delta(dtype="|u1")
        # (1, H, W, 3) -> (1, 3, H, W): each channel a plane, so Delta subtracts the left neighbour of one channel.
        return {"filters": [TransposeCodec(order=(0, 3, 1, 2)), delta], "compressors": [ZstdCodec(level=ZSTD_LEVEL)]}
    if name == "zstd":
        return {"filters": None, "compressors": [ZstdCodec(level=ZSTD_LEVEL)]}
    if name in ("blosc-zstd", "blosc-lz4"):
        return {"filters": None, "compressors": [BloscCodec(cname=name.split("-")[1], clevel=5, shuffle="shuffle")]}
    raise StoreError(f"image codec {name!r} does not apply to zarr stores; use one of {list(ZARR_CODECS)}")


def image_extension(name: str) -> str:
    """The WebDataset member extension for codec `name`."""
    return {"png": "png", "npy": "npy"}[name]


def encode_image(name: str, frame: np.ndarray) -> bytes:
    """One (H, W, 3) uint8 frame -> member bytes."""
    buf = io.BytesIO()
    if name == "png":
        Image.fromarray(frame).save(buf, format="PNG", compress_level=PNG_LEVEL)
    else:
        np.save(buf, frame, allow_pickle=False)
    return buf.getvalue()


def decode_image(name: str, data: bytes | memoryview, shape: tuple[int, ...]) -> np.ndarray:
    """Member bytes -> (H, W, 3) uint8 frame; raises ValueError when the bytes do not decode to `shape`."""
    if name == "png":
        with Image.open(io.BytesIO(data)) as im:
            frame = np.asarray(im)
    else:
        frame = decode_npy(data, np.dtype(np.uint8), shape)
    if frame.shape != shape or frame.dtype != np.uint8:
        raise ValueError(f"decoded image is {frame.dtype}{frame.shape}, expected uint8{shape}")
    return frame


def encode_depth(name: str, depth: np.ndarray) -> bytes:
    """One (H, W) uint16 depth map -> member bytes: a 16-bit greyscale PNG (what the 'png' codec writes) or .npy."""
    buf = io.BytesIO()
    if name == "png":
        Image.fromarray(depth.astype("<u2", copy=False)).save(buf, format="PNG", compress_level=PNG_LEVEL)  # mode I;16
    else:
        np.save(buf, depth, allow_pickle=False)
    return buf.getvalue()


def decode_depth(name: str, data: bytes | memoryview, shape: tuple[int, ...]) -> np.ndarray:
    """Member bytes -> (H, W) uint16 depth map; ValueError when they do not decode to `shape`."""
    if name == "png":
        with Image.open(io.BytesIO(data)) as im:
            depth = np.asarray(im).astype(np.uint16, copy=False)  # PIL reads 16-bit PNGs as I;16 (uint16)
    else:
        depth = decode_npy(data, np.dtype(np.uint16), shape)
    if depth.shape != shape:
        raise ValueError(f"decoded depth is {depth.dtype}{depth.shape}, expected uint16{shape}")
    return depth


def encode_npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def decode_npy(data: bytes | memoryview, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """A .npy member of known dtype and shape: the payload is the tail, so skip parsing the header."""
    nbytes = dtype.itemsize * int(np.prod(shape))
    if len(data) < nbytes + 10:  # 10: the smallest possible .npy header
        raise ValueError(f".npy member has {len(data)} bytes, too few for {dtype}{shape}")
    return np.frombuffer(data, dtype=dtype, count=nbytes // dtype.itemsize, offset=len(data) - nbytes).reshape(shape)
