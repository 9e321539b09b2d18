"""Zarr image fast path (f1.datasets.zarr_frames): bit-identical to zarr's slicing, used only where it applies, corruption caught."""

from __future__ import annotations

import threading
from pathlib import Path

import google_crc32c
import numpy as np
import pytest

from f1.datasets import EpisodeMeta, StoreError, StoreSpec
from f1.datasets.codecs import ZARR_CODECS
from f1.datasets.zarr_frames import ShardedZstdFrames
from f1.datasets.zarr_shard import FRAMES_PER_FILE, ZarrShardReader, ZarrShardWriter

pytestmark = pytest.mark.filterwarnings("ignore:Numcodecs codecs are not in the Zarr version 3 specification")

HW = (16, 16)
# 3 shard files: frames [0, 128) real (one all-zero frame: an unwritten inner chunk), [128, 256) all zero
# (zarr writes no file), [256, 300) real (a partly filled file).
STEPS = 300
ZERO_FRAMES = [10, *range(FRAMES_PER_FILE, 2 * FRAMES_PER_FILE)]


def _frames(seed: int) -> np.ndarray:
    """(STEPS, 16, 16, 3) image-like frames: gradient + moving square + noise, ZERO_FRAMES black."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : HW[0], 0 : HW[1]]
    k = np.arange(STEPS)[:, None, None, None]
    img = np.stack([xx * 9, yy * 7, (xx + yy) * 4], -1)[None] + k % 50  # (STEPS, H, W, 3)
    frames = np.clip(img + rng.integers(-4, 5, img.shape), 0, 255).astype(np.uint8)
    frames[ZERO_FRAMES] = 0
    return frames


def write_shard(path: Path, codec: str, fast_images: bool = True) -> tuple[StoreSpec, dict[str, np.ndarray]]:
    spec = StoreSpec(
        image_hw=HW, state_dim=4, action_dim=4, real_state_dims=4, real_action_dims=4, image_codec=codec, depth_cameras=("wrist",)
    )
    writer = ZarrShardWriter(path, spec, fast_images=fast_images)
    arrays = {key: _frames(c) for c, key in enumerate(spec.image_keys)}
    # Depth (format 4): (STEPS, 16, 16) uint16 mm, past 255 so both bytes count; zero where the frames are.
    arrays["wrist_depth"] = (_frames(7)[..., 0].astype(np.uint16) * 37 + 300) * (arrays["wrist_rgb"].any(-1))
    n = np.arange(STEPS)
    # Two episodes, the first ending inside shard file 0: 200 + 100 steps.
    for sl, e in ((slice(0, 200), 0), (slice(200, STEPS), 1)):
        episode = {key: frames[sl] for key, frames in arrays.items()}
        steps = sl.stop - sl.start
        episode.update(
            state=np.full((steps, 4), e, np.float32), action=np.zeros((steps, 4), np.float32),
            is_first=n[:steps] == 0, is_last=n[:steps] == steps - 1, is_terminal=np.zeros(steps, bool),
        )  # fmt: skip
        writer.add_episode(episode, EpisodeMeta(f"e{e}", e, 0, {}, steps))
    writer.finish()
    return spec, arrays


def _ranges(seed: int, count: int) -> list[tuple[int, int]]:
    """Random step ranges plus the ones that cross or touch file boundaries."""
    rng = np.random.default_rng(seed)
    fixed = [(0, STEPS), (120, 140), (250, 260), (127, 129), (255, 256), (5, 15), (299, 300), (40, 40), (100, 290)]
    return fixed + [tuple(sorted(int(v) for v in rng.integers(0, STEPS + 1, 2))) for _ in range(count)]


@pytest.mark.parametrize("codec", ZARR_CODECS)
def test_reads_match_plain_zarr_and_take_the_expected_path(tmp_path, codec):
    import zarr

    path = tmp_path / "shard.zarr"
    spec, arrays = write_shard(path, codec)
    if codec == "zstd":
        assert not (path / "data/head_rgb/c/1/0/0/0").exists(), "an all-fill shard file should not be written"
    reader = ZarrShardReader(path, spec)
    # Depth is zstd a frame whatever the colour codec, so it always takes the fast path.
    fast = (frozenset(spec.image_keys) if codec == "zstd" else frozenset()) | {"wrist_depth"}
    assert reader.fast_image_keys == fast, reader.fast_image_keys
    plain = zarr.open_group(str(path), mode="r")
    for start, stop in _ranges(seed=len(codec), count=25):
        got = reader.read(start, stop, spec.keys)
        for key in spec.frame_keys:
            want = plain[f"data/{key}"][start:stop]
            assert got[key].dtype == arrays[key].dtype and got[key].shape == want.shape, (key, start, stop, got[key].shape)
            assert np.array_equal(got[key], want), (codec, key, start, stop)
            assert np.array_equal(want, arrays[key][start:stop]), (codec, key, start, stop)  # what was written
            assert np.array_equal(got[key], arrays[key][start:stop]), (codec, key, start, stop)
        assert np.array_equal(got["state"], plain["data/state"][start:stop]), (start, stop)


def test_fast_reads_are_fresh_arrays_and_clip_like_a_slice(tmp_path):
    spec, arrays = write_shard(tmp_path / "shard.zarr", "zstd")
    reader = ZarrShardReader(tmp_path / "shard.zarr", spec)
    a = reader.read(0, 8, ("head_rgb",))["head_rgb"]
    a[:] = 7
    assert np.array_equal(reader.read(0, 8, ("head_rgb",))["head_rgb"], arrays["head_rgb"][:8])
    tail = reader.read(290, 400, ("head_rgb",))["head_rgb"]
    assert tail.shape == (10, *HW, 3) and np.array_equal(tail, arrays["head_rgb"][290:]), tail.shape


def test_threads_read_alike(tmp_path):
    """Cold index cache, several threads at once (the replay's prefetch thread beside the trainer)."""
    spec, arrays = write_shard(tmp_path / "shard.zarr", "zstd")
    reader = ZarrShardReader(tmp_path / "shard.zarr", spec)
    failures: list[tuple] = []

    def work(seed: int) -> None:
        for start, stop in _ranges(seed, 20):
            got = reader.read(start, stop, spec.image_keys)
            failures.extend((seed, k, start, stop) for k in got if not np.array_equal(got[k], arrays[k][start:stop]))

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:5]


def _index_span(path: Path) -> tuple[int, int]:
    size = path.stat().st_size
    return size - (FRAMES_PER_FILE * 16 + 4), size


def test_corrupt_index_checksum_is_a_store_error_naming_the_file(tmp_path):
    spec, _ = write_shard(tmp_path / "shard.zarr", "zstd")
    file = tmp_path / "shard.zarr/data/wrist_rgb/c/0/0/0/0"
    raw = bytearray(file.read_bytes())
    lo, _ = _index_span(file)
    raw[lo + 16 * 3] ^= 0x40  # frame 3's offset
    file.write_bytes(bytes(raw))
    reader = ZarrShardReader(tmp_path / "shard.zarr", spec)
    assert reader.read(0, 4, ("head_rgb",))["head_rgb"].shape == (4, *HW, 3)  # the other camera is intact
    with pytest.raises(StoreError, match=r"wrist_rgb/c/0/0/0/0: shard index checksum .* corrupt"):
        reader.read(0, 4, ("wrist_rgb",))


def test_index_entry_outside_the_file_is_a_store_error(tmp_path):
    """A checksum-consistent index that points past the data (written by a broken tool) is caught too."""
    spec, _ = write_shard(tmp_path / "shard.zarr", "zstd")
    file = tmp_path / "shard.zarr/data/head_rgb/c/2/0/0/0"
    raw = bytearray(file.read_bytes())
    lo, hi = _index_span(file)
    index = np.frombuffer(raw[lo : hi - 4], "<u8").copy().reshape(-1, 2)
    index[5] = (2**64 - 8, 16)  # offset + nbytes wraps around in uint64
    body = index.tobytes()
    raw[lo:hi] = body + np.uint32(google_crc32c.value(body)).tobytes()
    file.write_bytes(bytes(raw))
    reader = ZarrShardReader(tmp_path / "shard.zarr", spec)
    with pytest.raises(StoreError, match=r"head_rgb/c/2/0/0/0: shard index entry 5 .* outside"):
        reader.read(260, 262, ("head_rgb",))


def test_corrupt_frame_bytes_are_a_store_error(tmp_path):
    spec, _ = write_shard(tmp_path / "shard.zarr", "zstd")
    file = tmp_path / "shard.zarr/data/head_rgb/c/0/0/0/0"
    raw = bytearray(file.read_bytes())
    raw[0:4] = b"\0\0\0\0"  # frame 0's zstd magic number
    file.write_bytes(bytes(raw))
    reader = ZarrShardReader(tmp_path / "shard.zarr", spec)
    assert reader.read(1, 3, ("head_rgb",))["head_rgb"].shape == (2, *HW, 3)
    with pytest.raises(StoreError, match=r"head_rgb/c/0/0/0/0: frame 0 does not decode"):
        reader.read(0, 3, ("head_rgb",))


@pytest.mark.parametrize(
    "layout",
    [
        dict(chunks=(2, *HW, 3), shards=(8, *HW, 3)),  # two frames per inner chunk
        dict(chunks=(1, *HW, 3), shards={"shape": (8, *HW, 3), "index_location": "start"}),
        dict(chunks=(1, *HW, 3), shards=(8, *HW, 3), filters=[{"name": "transpose", "configuration": {"order": [0, 3, 1, 2]}}]),
        dict(chunks=(1, *HW, 3), shards=None),  # no sharding
        dict(chunks=(1, *HW, 3), shards=(8, *HW, 3), dtype="uint16"),
    ],
)
def test_other_layouts_keep_zarr_slicing(tmp_path, layout):
    import zarr
    from zarr.codecs import ZstdCodec

    args = dict(shape=(16, *HW, 3), dtype="uint8", compressors=[ZstdCodec(level=3)], fill_value=0) | layout
    array = zarr.create_array(str(tmp_path / "a.zarr"), **args)
    assert ShardedZstdFrames.open(array) is None, layout
    control = zarr.create_array(
        str(tmp_path / "b.zarr"), shape=(16, *HW, 3), dtype="uint8", chunks=(1, *HW, 3), shards=(8, *HW, 3),
        compressors=[ZstdCodec(level=3)], fill_value=0,
    )  # fmt: skip
    assert ShardedZstdFrames.open(control) is not None
