"""One WebDataset shard: a plain tar, one sample a step, key `<episode_id>_<k:06d>`, steps in order.

Members of a step, in this order: `<cam>_rgb.<png|npy>` per camera,
`state.npy`, `action.npy`, with object slots `object_pose.npy`, with camera
geometry (format 4) `cameras.json` ({"<cam>_pose": 4 rows of 4, "<cam>_intrinsics":
3 rows of 3} per camera: one member, not four .npy members, which cost 4 KB a step in tar
headers and padding; float32 values survive JSON exactly), with depth
`<cam>_depth.<png|npy>` (a 16-bit greyscale PNG), then
`flags.json` ({"is_first", "is_last", "is_terminal"}, and with object slots
"object_valid" (a list, one bool per slot) and "object_contact": one readable
member rather than several). Every sample has the same members, as Hugging
Face `datasets`' webdataset builder requires; the episode's meta is in the
manifest entry (format version 2). Version-1 tars also carry `episode.json`
(the EpisodeMeta) at k = 0, which readers still use.
`webdataset.WebDataset`, `datasets.load_dataset("webdataset", ...)` and `tar`
read it without f1.

The sidecar `<shard>.tar.idx.npy` holds int64 (S, M, 2): for step s and
member m (MEMBER_ORDER, episode.json last, size -1 where absent) the data
offset and size in the tar, so a step range is one `pread` (one ranged GET on object storage) instead
of a scan. Without the sidecar the reader rebuilds it from the tar headers.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from f1.datasets.codecs import decode_depth, decode_image, decode_npy, encode_depth, encode_image, encode_npy, image_extension
from f1.datasets.schema import FLAG_KEYS, TAR_INDEX_SUFFIX, EpisodeMeta, StoreError, StoreSpec

OBJECT_FLAG_KEYS = ("object_valid", "object_contact")  # format 2: kept in flags.json beside the markers

EPISODE_MEMBER = "episode.json"
FLAGS_MEMBER = "flags.json"
CAMERAS_MEMBER = "cameras.json"  # format 4: every camera's pose and intrinsics
STEP_KEY_RE = re.compile(r"^(.+)_(\d{6,})$")
_BLOCK = tarfile.BLOCKSIZE


def member_names(spec: StoreSpec) -> list[str]:
    """Member suffixes in tar order; the index's column m is member_names(spec)[m]."""
    ext = image_extension(spec.image_codec)
    objects = ["object_pose.npy"] if spec.object_slots else []
    cameras = ([CAMERAS_MEMBER] if spec.camera_keys else []) + [f"{k}.{ext}" for k in spec.depth_keys]
    return [*(f"{k}.{ext}" for k in spec.image_keys), "state.npy", "action.npy", *objects, *cameras, FLAGS_MEMBER, EPISODE_MEMBER]


def json_members(spec: StoreSpec) -> dict[str, str]:
    """Per key kept inside a JSON member (flags.json, cameras.json), that member's name."""
    return {**{k: FLAGS_MEMBER for k in flag_keys(spec)}, **{k: CAMERAS_MEMBER for k in spec.camera_keys}}


def flag_keys(spec: StoreSpec) -> tuple[str, ...]:
    """The keys flags.json holds for this spec."""
    return FLAG_KEYS + (OBJECT_FLAG_KEYS if spec.object_slots else ())


def step_key(episode_id: str, k: int) -> str:
    return f"{episode_id}_{k:06d}"


def index_path(tar_path: Path) -> Path:
    return tar_path.with_name(tar_path.name + TAR_INDEX_SUFFIX)


class TarShardWriter:
    def __init__(self, path: Path, spec: StoreSpec):
        self.path, self.spec = path, spec
        self._members = member_names(spec)
        self._tar = tarfile.open(path, mode="x", format=tarfile.GNU_FORMAT)
        self._index: list[np.ndarray] = []  # one (M, 2) per step

    def _add(self, name: str, data: bytes) -> tuple[int, int]:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o644  # mtime 0: the same episodes give the same bytes
        self._tar.addfile(info, io.BytesIO(data))
        padded = -(-len(data) // _BLOCK) * _BLOCK
        return self._tar.offset - padded, len(data)  # the data starts where its padded payload does

    def add_episode(self, arrays: dict[str, np.ndarray], meta: EpisodeMeta) -> None:
        codec = self.spec.image_codec
        for k in range(meta.length):
            key = step_key(meta.episode_id, k)
            row = np.full((len(self._members), 2), -1, dtype=np.int64)
            payloads = [encode_image(codec, arrays[cam][k]) for cam in self.spec.image_keys]
            payloads += [encode_npy(arrays["state"][k]), encode_npy(arrays["action"][k])]
            flags = {f: bool(arrays[f][k]) for f in FLAG_KEYS}
            if self.spec.object_slots:
                payloads.append(encode_npy(arrays["object_pose"][k]))
                flags.update(object_valid=[bool(v) for v in arrays["object_valid"][k]], object_contact=bool(arrays["object_contact"][k]))
            if self.spec.camera_keys:
                # float32 -> Python float (float64) is exact, and json writes the shortest repr that reads back to it.
                payloads.append(json.dumps({name: arrays[name][k].tolist() for name in self.spec.camera_keys}).encode())
            payloads += [encode_depth(codec, arrays[name][k]) for name in self.spec.depth_keys]
            payloads.append(json.dumps(flags).encode())
            for m, data in enumerate(payloads):
                row[m] = self._add(f"{key}.{self._members[m]}", data)
            self._index.append(row)

    def discard(self) -> None:
        """Close and delete the unfinished tar (after a failed write: a full disk frees its space only once closed)."""
        try:
            self._tar.close()
        except OSError:
            pass  # its last blocks could not be written either: it is deleted anyway
        self.path.unlink(missing_ok=True)

    def finish(self) -> list[Path]:
        """Close the tar and write its index sidecar (under the same temp suffix); returns the sidecar."""
        self._tar.close()
        sidecar = self.path.with_name(self.path.name + TAR_INDEX_SUFFIX)  # shard-...tar.tmp.idx.npy
        np.save(sidecar, np.stack(self._index) if self._index else np.zeros((0, len(self._members), 2), np.int64))
        return [sidecar]


def scan_index(path: Path, spec: StoreSpec, problems: list[str] | None) -> tuple[np.ndarray, list[str]]:
    """Walk the tar headers (no payload reads): the (S, M, 2) index and each step's key.

    Structural problems (unknown members, a step whose members are incomplete,
    a truncated tar) raise a StoreError, or are appended to `problems` when given.
    """
    members = member_names(spec)
    column = {name: m for m, name in enumerate(members)}
    rows: list[np.ndarray] = []
    keys: list[str] = []

    def problem(msg: str) -> None:
        if problems is None:
            raise StoreError(f"{path}: {msg}; re-collect or convert the shard again")
        problems.append(msg)

    try:
        with tarfile.open(path, mode="r:") as tar:
            for info in tar:
                key, _, suffix = info.name.partition(".")
                if suffix not in column:
                    problem(f"unexpected member {info.name!r}")
                    continue
                if not keys or keys[-1] != key:
                    keys.append(key)
                    rows.append(np.full((len(members), 2), -1, dtype=np.int64))
                rows[-1][column[suffix]] = (info.offset_data, info.size)
    except (tarfile.TarError, EOFError, OSError) as exc:
        problem(f"cannot be read to the end, truncated or corrupt ({type(exc).__name__}: {exc})")
    index = np.stack(rows) if rows else np.zeros((0, len(members), 2), np.int64)
    for s in np.flatnonzero((index[:, :-1, 1] < 0).any(axis=1)):
        missing = [members[m] for m in np.flatnonzero(index[s, :-1, 1] < 0)]
        problem(f"step {keys[s]!r} lacks members {missing}")
    if index.size and ((index[:, :, 0] + index[:, :, 1]).max() > path.stat().st_size):
        problem(f"a member runs past the end of the file ({path.stat().st_size} bytes): truncated")
    return index, keys


class TarShardReader:
    """Random access to one finalised tar through its index: a step range is one pread (or ranged GET)."""

    def __init__(self, path: Any, spec: StoreSpec, index: np.ndarray, pread: Callable[[int, int], bytes] | None = None):
        """`pread(size, offset)` reads the tar's bytes (an object's ranged GET); None opens the local file."""
        self.path, self.spec, self.index = path, spec, index
        self._dtypes = spec.step_dtypes()
        self._members = member_names(spec)
        self._column = {name: m for m, name in enumerate(self._members)}
        self._json_members = json_members(spec)
        self._fd = -1
        if pread is None:
            self._fd = os.open(path, os.O_RDONLY)  # pread: no shared file position between threads
            pread = lambda size, offset: os.pread(self._fd, size, offset)  # noqa: E731
        self._pread = pread

    @classmethod
    def open(cls, path: Path, spec: StoreSpec, num_steps: int) -> "TarShardReader":
        """Through the sidecar index (rebuilt from the tar headers when it is missing)."""
        from f1.datasets.s3 import S3Path

        sidecar = index_path(path) if not isinstance(path, S3Path) else path.parent / (path.name + TAR_INDEX_SUFFIX)
        try:
            if isinstance(path, S3Path):
                if not sidecar.is_file():
                    raise StoreError(f"{sidecar} is missing; convert the store again (an s3 store needs the index)")
                index = np.load(io.BytesIO(sidecar.read_bytes()))
            else:
                index = np.load(sidecar) if sidecar.exists() else scan_index(path, spec, None)[0]
        except (ValueError, OSError) as exc:
            raise StoreError(f"{sidecar} is unreadable ({exc}); delete it and f1 rebuilds it from the tar") from None
        if index.shape != (num_steps, len(member_names(spec)), 2):
            raise StoreError(
                f"{sidecar}: index shape {index.shape} does not match the manifest's {num_steps} steps; "
                "delete it and f1 rebuilds it from the tar"
            )
        if isinstance(path, S3Path):
            return cls(path, spec, index, pread=lambda size, offset: path.read_range(offset, size))
        return cls(path, spec, index)

    def _member(self, buf: bytes | memoryview, base: int, s: int, name: str) -> memoryview:
        off, size = self.index[s, self._column[name]]
        return memoryview(buf)[off - base : off - base + size]

    def _decode(self, key: str, data: memoryview) -> np.ndarray:
        dtype, shape = self._dtypes[key]
        if key in self.spec.image_keys:
            return decode_image(self.spec.image_codec, data, shape)
        if key in self.spec.depth_keys:
            return decode_depth(self.spec.image_codec, data, shape)
        return decode_npy(data, dtype, shape)

    def read(self, start: int, stop: int, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Steps [start, stop) of the shard: one pread over the span when images are asked for, else per member."""
        out = {key: np.empty((stop - start, *self._dtypes[key][1]), self._dtypes[key][0]) for key in keys}
        if stop <= start:
            return out
        names = {key: self._member_name(key) for key in keys}
        rows = self.index[start:stop]
        present = rows[:, :, 1] >= 0
        lo = int(rows[:, :, 0][present].min())
        hi = int((rows[:, :, 0] + rows[:, :, 1])[present].max())
        span = any(key in self.spec.frame_keys for key in keys)
        buf = self._pread(hi - lo, lo) if span else None
        if span and len(buf) != hi - lo:
            raise StoreError(f"{self.path} is truncated (read {len(buf)} of {hi - lo} bytes at {lo}); re-collect it")
        parsed: dict[tuple[int, str], dict] = {}  # (step, member) -> its JSON
        for i, s in enumerate(range(start, stop)):
            for key in keys:
                if span:
                    data = self._member(buf, lo, s, names[key])
                else:
                    off, size = self.index[s, self._column[names[key]]]
                    data = memoryview(self._pread(int(size), int(off)))
                if key in self._json_members:
                    if (s, names[key]) not in parsed:
                        parsed[s, names[key]] = json.loads(bytes(data))
                    out[key][i] = parsed[s, names[key]][key]
                else:
                    out[key][i] = self._decode(key, data)
        return out

    def _member_name(self, key: str) -> str:
        if key in self._json_members:
            return self._json_members[key]
        if key in self.spec.frame_keys:
            return f"{key}.{image_extension(self.spec.image_codec)}"
        return f"{key}.npy"

    def episode_meta(self, step: int) -> EpisodeMeta | None:
        """The episode.json stored with step `step` (an episode's k = 0 in a version-1 tar), or None."""
        off, size = self.index[step, self._column[EPISODE_MEMBER]]
        if size < 0:
            return None
        return EpisodeMeta.from_dict(json.loads(self._pread(int(size), int(off))))

    def close(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()


def iter_tar_episodes(
    path: Path, spec: StoreSpec, problems: list[str] | None = None, listed: dict[str, dict] | None = None
) -> Iterator[tuple[EpisodeMeta, dict[str, np.ndarray]]]:
    """Read a tar front to back, without its index, checking key order: what verify and convert use.

    An episode without episode.json (format version 2) takes its meta from `listed`, its manifest
    entry by id ({id: {"id", "length", "seed", "scene_id", "randomization"}}).

    Episodes come out as they end. Order problems (a step missing or out of
    order, an episode resumed later in the shard) raise a StoreError, or are
    appended to `problems` and the episode is still yielded with what it has.
    """
    index, keys = scan_index(path, spec, problems)
    reader = TarShardReader(path, spec, index)

    def problem(msg: str) -> None:
        if problems is None:
            raise StoreError(f"{path}: {msg}; re-collect or convert the shard again")
        problems.append(msg)

    try:
        seen: set[str] = set()
        s = 0
        while s < len(keys):
            m = STEP_KEY_RE.match(keys[s])
            if not m:
                problem(f"sample key {keys[s]!r} is not <episode_id>_<k:06d>")
                s += 1
                continue
            episode_id = m.group(1)
            if episode_id in seen:
                problem(f"episode {episode_id!r}: steps resume at {keys[s]!r} after another episode (split episode)")
            seen.add(episode_id)
            first, expected = s, 0
            while s < len(keys) and (m := STEP_KEY_RE.match(keys[s])) and m.group(1) == episode_id:
                k = int(m.group(2))
                if k != expected:
                    problem(f"episode {episode_id!r}: step {k} follows step {expected - 1} (expected {expected})")
                expected = k + 1
                s += 1
            meta = reader.episode_meta(first)
            if meta is None and listed is not None and episode_id in listed:
                e = listed[episode_id]
                meta = EpisodeMeta(episode_id, e["seed"], e["scene_id"], dict(e.get("randomization", {})), s - first)
            elif meta is None:
                problem(f"episode {episode_id!r}: no {EPISODE_MEMBER} at its first sample {keys[first]!r} nor a manifest entry")
                meta = EpisodeMeta(episode_id, -1, -1, {}, s - first)
            elif meta.episode_id != episode_id:
                problem(f"episode {episode_id!r}: {EPISODE_MEMBER} names {meta.episode_id!r}")
            try:
                arrays = reader.read(first, s, spec.keys)
            except (ValueError, KeyError, OSError, StoreError) as exc:
                problem(f"episode {episode_id!r}: steps {first}..{s - 1} do not decode ({exc})")
                continue
            yield meta, arrays
    finally:
        reader.close()
