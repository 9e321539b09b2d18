"""Zarr image fast write path (ShardedZstdFrameWriter): the same bytes zarr writes, read back alike, used only where it applies."""

from __future__ import annotations

import numpy as np
import pytest

from f1.datasets.codecs import ZARR_CODECS
from f1.datasets.zarr_frames import ShardedZstdFrameWriter
from f1.datasets.zarr_shard import FRAMES_PER_FILE, ZarrShardReader, ZarrShardWriter
from test_zarr_fast_read import HW, STEPS, ZERO_FRAMES, write_shard

pytestmark = pytest.mark.filterwarnings("ignore:Numcodecs codecs are not in the Zarr version 3 specification")


def _files(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("codec", ZARR_CODECS)
def test_writes_read_back_exactly_and_take_the_expected_path(tmp_path, codec, monkeypatch):
    """300 frames: 3 files (one all zero, so not written), a partly filled last one, an all-zero frame in file 0."""
    import zarr

    taken: list[int] = []
    write_file = ShardedZstdFrameWriter._write_file
    monkeypatch.setattr(ShardedZstdFrameWriter, "_write_file", lambda self, i, f: (taken.append(i), write_file(self, i, f)))
    path = tmp_path / "shard.zarr"
    spec, arrays = write_shard(path, codec)
    # Whole files 0 and 1, then the partly filled file 2, per camera.
    # (the depth always: zstd a frame whatever the colour codec)
    fast_keys = len(spec.frame_keys) if codec == "zstd" else len(spec.depth_keys)
    assert sorted(taken) == sorted([0, 1, 2] * fast_keys), (codec, taken)
    plain = zarr.open_group(str(path), mode="r")
    reader = ZarrShardReader(path, spec)
    for key in spec.frame_keys:
        assert plain[f"data/{key}"].shape == arrays[key].shape == (STEPS, *HW, 3)[: arrays[key].ndim], plain[f"data/{key}"].shape
        assert np.array_equal(plain[f"data/{key}"][...], arrays[key]), (codec, key)
        assert np.array_equal(reader.read(0, STEPS, (key,))[key], arrays[key]), (codec, key)
        assert np.array_equal(reader.read(5, 15, (key,))[key], arrays[key][5:15]), (codec, key)  # holds zero frame 10


def test_zstd_files_are_byte_identical_to_zarrs_own(tmp_path):
    """Every file of the image arrays (shard files, zarr.json) is what zarr's own write path produces."""
    spec, _ = write_shard(tmp_path / "fast.zarr", "zstd")
    assert ZarrShardWriter(tmp_path / "probe.zarr", spec).fast_image_keys == frozenset(spec.frame_keys)
    write_shard(tmp_path / "zarr.zarr", "zstd", fast_images=False)
    for key in spec.frame_keys:
        fast, own = _files(tmp_path / f"fast.zarr/data/{key}"), _files(tmp_path / f"zarr.zarr/data/{key}")
        tail = "/0/0/0" if key in spec.image_keys else "/0/0"  # (N, H, W, 3) colour, (N, H, W) depth
        assert sorted(fast) == sorted(own) == [f"c/0{tail}", f"c/2{tail}", "zarr.json"], (sorted(fast), sorted(own))
        for name in own:
            assert fast[name] == own[name], (key, name, len(fast[name]), len(own[name]))
    index = np.frombuffer(fast[f"c/0{tail}"][-(FRAMES_PER_FILE * 16 + 4) : -4], "<u8").reshape(-1, 2)
    assert (index[ZERO_FRAMES[0]] == 2**64 - 1).all(), index[ZERO_FRAMES[0]]  # the all-zero frame is not stored (the depth's)


def test_other_layouts_keep_zarrs_write_path(tmp_path):
    import zarr
    from zarr.codecs import ZstdCodec

    common = dict(shape=(0, *HW, 3), dtype="uint8", chunks=(1, *HW, 3), shards=(8, *HW, 3), fill_value=0)
    eager = zarr.create_array(str(tmp_path / "a.zarr"), compressors=[ZstdCodec(level=3)], config={"write_empty_chunks": True}, **common)
    assert ShardedZstdFrameWriter.open(eager) is None  # zarr would store fill frames: not what the fast path writes
    start = zarr.create_array(
        str(tmp_path / "b.zarr"), compressors=[ZstdCodec(level=3)], **(common | {"shards": {"shape": (8, *HW, 3), "index_location": "start"}})
    )  # fmt: skip
    assert ShardedZstdFrameWriter.open(start) is None
    writer = ShardedZstdFrameWriter.open(zarr.create_array(str(tmp_path / "c.zarr"), compressors=[ZstdCodec(level=3)], **common))
    frames = np.random.default_rng(0).integers(0, 256, (20, *HW, 3), dtype=np.uint8)
    writer.append(frames)
    assert np.array_equal(zarr.open_array(str(tmp_path / "c.zarr"), mode="r")[...], frames)
    with pytest.raises(AssertionError, match="not a multiple"):
        writer.append(frames)  # after a partly filled file: zarr would have to merge, the fast path does not
