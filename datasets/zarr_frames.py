"""Fast reads of Zarr image arrays stored one zstd frame per inner chunk of the sharding codec.

zarr-python 3 runs its async codec pipeline once per inner chunk, ~0.6 ms
per 64x64 frame, where zstd alone decodes one in ~30 us. For the layout
ZarrShardWriter writes with the 'zstd' codec, `ShardedZstdFrames` reads the
shard files itself, per the Zarr v3 sharding spec (sharding-indexed codec,
index at the end):

    data/<key>/c/<i>/0/0/0      shard file i holds frames [i*S, (i+1)*S), S = frames per file
        [zstd frame][zstd frame]...                       one per inner chunk (1, H, W, 3)
        [S x (offset, nbytes) uint64 little-endian]       the shard index
        [crc32c of the index, 4 bytes]

An inner chunk zarr did not write (a frame equal to the fill value) has
offset = nbytes = 2**64-1, and a missing file is all fill: both read as the
fill value, as zarr reads them. Each file's index is read and checked once,
then a step range costs one pread per file and one zstd call per frame.
`ShardedZstdFrames.open` returns None for any other layout (other codecs,
filters, an index without crc32c, ...), and the caller keeps zarr's slicing.

Writes: ShardedZstdFrameWriter writes whole files of this layout, the same bytes zarr writes.

Frames are (H, W, 3) uint8 colour images or (H, W) uint16 depth maps (store format 4), little-endian.

On object storage (`remote`, the array's S3Path) the same reads are ranged
GETs: a file's index is its last bytes, a step range one GET per file.

Thread-safe (reads): no shared file handle (each read opens, preads, closes), index
arrays are immutable once cached, and numcodecs' zstd calls keep no state.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import google_crc32c  # zarr's own dependency for the crc32c codec
import numpy as np
from numcodecs import Zstd, zstd

from f1.datasets.schema import StoreError

EMPTY_INT = 2**64 - 1  # offset and nbytes of an inner chunk that was never written
EMPTY = np.uint64(EMPTY_INT)
ENTRY_BYTES = 16  # (offset, nbytes), uint64 each
CRC_BYTES = 4


class _ZstdFrameLayout:
    """Where and how a zarr.Array in the supported layout stores its frames; `of(array)` is None for any other."""

    def __init__(self, array: Any, frames_per_file: int, level: int, checksum: bool):
        self.array_dir = Path(array.store.root) / array.path if hasattr(array.store, "root") else None
        self.shape = tuple(array.shape)
        self.frames_per_file = frames_per_file
        self.fill_value = int(array.metadata.fill_value)
        self.level, self.checksum = level, checksum
        self.write_empty_chunks = bool(array.async_array.config.write_empty_chunks)
        self._meta = array.metadata

    def file_key(self, i: int) -> str:
        """Path of shard file i relative to array_dir: 'c/<i>/0/0/0' ('c/<i>/0/0' for depth) with the default '/' separator."""
        return self._meta.encode_chunk_key((i,) + (0,) * (len(self.shape) - 1))

    @classmethod
    def of(cls, array: Any, remote: bool = False) -> "_ZstdFrameLayout | None":
        """`remote`: the array lives on object storage (zarr's ObjectStore), read by ranged GETs."""
        from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec, ZstdCodec
        from zarr.codecs.sharding import ShardingCodecIndexLocation
        from zarr.core.chunk_grids import RegularChunkGrid
        from zarr.storage import LocalStore, ObjectStore

        meta = array.metadata
        shape = tuple(array.shape)
        store_type = ObjectStore if remote else LocalStore
        if meta.zarr_format != 3 or not isinstance(array.store, store_type) or meta.storage_transformers:
            return None
        colour = array.dtype == np.uint8 and len(shape) == 4 and shape[3] == 3
        depth = array.dtype == np.dtype("<u2") and len(shape) == 3
        if not (colour or depth):
            return None
        frame = (1, *shape[1:])
        grid = meta.chunk_grid
        if not isinstance(grid, RegularChunkGrid) or tuple(grid.chunk_shape[1:]) != shape[1:]:
            return None
        if len(meta.codecs) != 1 or not isinstance(meta.codecs[0], ShardingCodec):
            return None
        sharding = meta.codecs[0]
        if (
            tuple(sharding.chunk_shape) != frame
            or [type(c) for c in sharding.codecs] != [BytesCodec, ZstdCodec]  # zstd level/checksum: any, decode alike
            or tuple(sharding.index_codecs) != (BytesCodec(endian="little"), Crc32cCodec())
            or sharding.index_location != ShardingCodecIndexLocation.end
        ):
            return None
        zstd_codec = sharding.codecs[1]
        return cls(array, int(grid.chunk_shape[0]), int(zstd_codec.level), bool(zstd_codec.checksum))


class ShardedZstdFrames:
    """Frames [start, stop) of one (N, H, W, 3) uint8 or (N, H, W) uint16 array: `read(start, stop)` -> (stop - start, ...)."""

    def __init__(
        self,
        array_dir: Path,
        shape: tuple[int, ...],
        frames_per_file: int,
        fill_value: int,
        file_key: Callable[[int], str],
        remote: Any = None,
        dtype: np.dtype = np.dtype(np.uint8),
    ):
        self.array_dir = array_dir
        self.dtype = np.dtype(dtype)
        self.remote = remote  # the array's S3Path on object storage, else None
        self.shape = shape
        self.frames_per_file = frames_per_file
        self.fill_value = fill_value
        self._file_key = file_key  # file number -> path of the shard file relative to array_dir
        self._frame_items = int(np.prod(shape[1:]))
        self._frame_bytes = self._frame_items * self.dtype.itemsize
        self._index_bytes = frames_per_file * ENTRY_BYTES + CRC_BYTES
        self._indexes: dict[int, np.ndarray] = {}

    @classmethod
    def open(cls, array: Any, remote: Any = None) -> "ShardedZstdFrames | None":
        """The fast reader of a zarr.Array when its metadata is exactly the supported layout, else None.

        `remote`: the array's S3Path when it lives on object storage."""
        layout = _ZstdFrameLayout.of(array, remote=remote is not None)
        if layout is None:
            return None
        return cls(layout.array_dir, layout.shape, layout.frames_per_file, layout.fill_value, layout.file_key, remote, array.dtype)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames [start, stop), clipped to the array like a numpy/zarr slice: (n, H, W, 3) or (n, H, W), a fresh array."""
        start, stop, _ = slice(start, stop).indices(self.shape[0])
        n = max(stop - start, 0)
        out = np.empty((n, *self.shape[1:]), self.dtype)
        flat = out.reshape(n, self._frame_items)  # (n, H*W*3) or (n, H*W), a view: frames decode into their rows
        pos = start
        while pos < stop:
            file_no, first = divmod(pos, self.frames_per_file)
            end = min(stop, (file_no + 1) * self.frames_per_file)
            self._read_file(file_no, first, first + end - pos, flat[pos - start : end - start])
            pos = end
        return out

    def _path(self, file_no: int) -> Any:
        if self.remote is not None:
            return self.remote / self._file_key(file_no)
        return os.path.join(self.array_dir, self._file_key(file_no))

    def _index(self, file_no: int) -> np.ndarray:
        index = self._indexes.get(file_no)
        if index is None:
            # Two threads may both load it; they store equal arrays, so the race costs one extra read at most.
            index = self._indexes.setdefault(file_no, self._load_index(file_no))
        return index

    def _load_index(self, file_no: int) -> np.ndarray:
        """(S, 2) uint64 (offset, nbytes) of file_no, checked; all EMPTY when the file does not exist."""
        path = self._path(file_no)
        try:
            if self.remote is not None:
                size = path.size()
                self._check_index_fits(path, size)
                raw = path.read_range(size - self._index_bytes, self._index_bytes)
            else:
                with open(path, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    self._check_index_fits(path, size)
                    raw = os.pread(f.fileno(), self._index_bytes, size - self._index_bytes)
        except FileNotFoundError:
            return np.full((self.frames_per_file, 2), EMPTY, np.uint64)  # zarr reads a missing file as fill
        body, stored = raw[:-CRC_BYTES], raw[-CRC_BYTES:]
        computed = np.uint32(google_crc32c.value(body)).tobytes()  # little-endian, as zarr's Crc32cCodec writes it
        if computed != stored:
            raise StoreError(
                f"{path}: shard index checksum {stored.hex()} does not match its crc32c {computed.hex()}: "
                "the file is corrupt; re-collect the shard"
            )
        index = np.frombuffer(body, "<u8").reshape(self.frames_per_file, 2)  # (S, 2): offset, nbytes
        empty = index == EMPTY
        data_end = size - self._index_bytes
        offsets, sizes = index[:, 0], index[:, 1]
        # offset + nbytes could wrap around in uint64 on a corrupt entry: compare without adding.
        outside = (offsets > data_end) | (sizes > data_end - np.minimum(offsets, data_end))
        bad = (empty[:, 0] != empty[:, 1]) | (~empty[:, 0] & outside)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise StoreError(
                f"{path}: shard index entry {i} (offset {index[i, 0]}, {index[i, 1]} bytes) lies outside the "
                f"{data_end} data bytes: the file is corrupt; re-collect the shard"
            )
        return index

    def _check_index_fits(self, path: Any, size: int) -> None:
        if size < self._index_bytes:
            raise StoreError(
                f"{path} has {size} bytes, fewer than its {self._index_bytes}-byte shard index: truncated; "
                "re-collect the shard"
            )

    def _read_file(self, file_no: int, first: int, stop: int, dest: np.ndarray) -> None:
        """Frames [first, stop) of file file_no into dest (stop - first, H*W*C): one pread, one zstd call each."""
        # Python lists, not numpy ops: a range spans a few frames, where per-call numpy overhead would dominate.
        entries = self._index(file_no)[first:stop].tolist()  # [[offset, nbytes], ...]
        written = [(row, offset, nbytes) for row, (offset, nbytes) in enumerate(entries) if offset != EMPTY_INT]
        if len(written) < len(entries):
            dest[[row for row, (offset, _) in enumerate(entries) if offset == EMPTY_INT]] = self.fill_value
        if not written:
            return
        lo = min(offset for _, offset, _ in written)
        hi = max(offset + nbytes for _, offset, nbytes in written)
        path = self._path(file_no)
        if self.remote is not None:
            span = path.read_range(lo, hi - lo)
        else:
            fd = os.open(path, os.O_RDONLY)
            try:
                span = os.pread(fd, hi - lo, lo)
            finally:
                os.close(fd)
        if len(span) != hi - lo:
            raise StoreError(f"{path}: read {len(span)} of bytes [{lo}, {hi}): truncated; re-collect the shard")
        view = memoryview(span)
        for row, offset, nbytes in written:
            try:
                frame = zstd.decompress(view[offset - lo : offset - lo + nbytes])
            except RuntimeError as exc:
                raise StoreError(f"{path}: frame {first + row} does not decode ({exc}); re-collect the shard") from None
            if len(frame) != self._frame_bytes:
                raise StoreError(
                    f"{path}: frame {first + row} decodes to {len(frame)} bytes, expected {self._frame_bytes}; "
                    "re-collect the shard"
                )
            dest[row] = np.frombuffer(frame, self.dtype)


class ShardedZstdFrameWriter:
    """Writes whole shard files of a zarr.Array in the supported layout, byte for byte as zarr writes them.

    zarr-python spends ~1 ms of Python per inner chunk on `arr[a:b] = frames`; here a file costs one
    numcodecs zstd call per frame (the codec zarr's ZstdCodec calls, same level and checksum flag, so the
    same bytes), one crc32c and one file write. As zarr with write_empty_chunks=False (its default), a frame
    equal to the fill value is not stored (index entry (2**64-1, 2**64-1)), nor is a file of fill frames
    only, and the entries past the end of a partly filled last file are empty. Files go to the path zarr
    would use (the array's chunk key encoding) inside the array's own directory; `write` then grows the
    array's metadata with zarr's resize, which only rewrites zarr.json when the array grows.
    """

    def __init__(self, array: Any, layout: _ZstdFrameLayout):
        self._array = array
        self._layout = layout
        self._zstd = Zstd(level=layout.level, checksum=layout.checksum)

    @classmethod
    def open(cls, array: Any) -> "ShardedZstdFrameWriter | None":
        """The fast writer of a zarr.Array in the supported layout (with zarr's default write_empty_chunks=False), else None."""
        layout = _ZstdFrameLayout.of(array)
        if layout is None or layout.write_empty_chunks:
            return None
        return cls(array, layout)

    def append(self, frames: np.ndarray) -> None:
        """Append (n, H, W, 3) uint8 or (n, H, W) uint16 frames; the array's length must be a multiple of frames per file."""
        layout, length = self._layout, self._array.shape[0]
        per_file = layout.frames_per_file
        assert length % per_file == 0, f"array length {length} is not a multiple of {per_file}: a file is partly written"
        assert frames.dtype == self._array.dtype and frames.shape[1:] == self._array.shape[1:], (frames.dtype, frames.shape)
        for start in range(0, len(frames), per_file):
            self._write_file((length + start) // per_file, frames[start : start + per_file])
        self._array.resize((length + len(frames), *self._array.shape[1:]))

    def _write_file(self, file_no: int, frames: np.ndarray) -> None:
        """Shard file file_no from its first len(frames) frames (the rest of the file is left empty)."""
        n, per_file = len(frames), self._layout.frames_per_file
        flat = frames.astype(frames.dtype.newbyteorder("<"), copy=False).reshape(n, -1)  # (n, H*W*C), little-endian as zarr's BytesCodec
        stored = (flat != self._layout.fill_value).any(axis=1).tolist()  # a frame all fill is not stored
        if not any(stored):
            return  # zarr writes no file for a shard of fill only (nothing to delete: files are written once)
        index = np.full((per_file, 2), EMPTY, "<u8")  # (S, 2): offset, nbytes
        parts, offset = [], 0
        for row, keep in enumerate(stored):
            if keep:
                part = self._zstd.encode(np.ascontiguousarray(flat[row]))
                index[row] = (offset, len(part))
                parts.append(part)
                offset += len(part)
        body = index.tobytes()
        parts += [body, np.uint32(google_crc32c.value(body)).tobytes()]  # crc32c little-endian, as Crc32cCodec writes it
        path = os.path.join(self._layout.array_dir, self._layout.file_key(file_no))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(b"".join(parts))
