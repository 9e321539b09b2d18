"""The episode schema (DESIGN.md section 2), the one definition that writers, readers and verify share.

A store is a directory. Format 3 (log-structured; docs/store-format.md has the protocol):

```
<store>/
├── manifest.json                  format version, StoreSpec, collection config; written once, never rewritten
├── log/<worker>/<chunk>/<seq>.json   one commit record per shard, created once, never rewritten:
│                                  the shard's entry (name, path, format, steps, bytes, checksum, episodes)
├── checkpoints/<n>.json           compaction n: its index parts and, per worker, the highest seq it folded
├── index/<part>.shards.parquet    the shards table of a part (name, path, format, steps, bytes, checksum)
├── index/<part>.episodes.parquet  the episode index of a part (id, length, shard, start, seed, scene, ...)
├── _last_checkpoint               a hint (the newest n); readers never depend on it
├── shards/<worker>/<chunk>/shard-n0w0-000000.zarr/   shards, at most SHARDS_PER_CHUNK a folder
├── writer-n<rank>.lock            the per-node-rank writer lock (f1.datasets.writer_lock)
└── normalizer.json                written by `f1 dataset stats`; training's action/state normalizer
```

Formats 1 and 2 keep every shard at the top level and list them all in
manifest.json (rewritten per commit under manifest.lock):

```
<store>/
├── manifest.json                  format version, StoreSpec, collection config, finalised shards
│                                  (each with its episodes' metas: id, length, seed, scene_id, randomization)
├── manifest.lock                  flock target: writers read-modify-write manifest.json under it
├── shard-n0w0-000000.zarr/        Zarr v3 group, one per finalised shard (format "zarr")
│   ├── data/
│   │   ├── head_rgb               uint8 (S, H, W, 3), one frame per chunk, sharded into a few files
│   │   ├── wrist_rgb              uint8 (S, H, W, 3)
│   │   ├── state                  float32 (S, state_dim)
│   │   ├── action                 float32 (S, action_dim)
│   │   ├── is_first, is_last, is_terminal   bool (S,)
│   │   └── object_pose, object_valid, object_contact   (format 2, when spec.object_slots > 0; see OBJECT_KEYS)
│   └── meta/
│       ├── episode_ends           int64 (E,) cumulative, diffusion_policy style
│       ├── episode_ids            str (E,)
│       ├── seeds, scene_ids       int64 (E,)
│       └── (group attrs)          randomization: one dict per episode
├── shard-n0w1-000000.tar          WebDataset (format "webdataset"): one sample a step,
│                                  key <episode_id>_<k:06d>, members head_rgb.png wrist_rgb.png
│                                  state.npy action.npy [object_pose.npy] flags.json (version 1 also
│                                  episode.json at k = 0); flags.json also holds object_valid and
│                                  object_contact when the store has object slots
├── shard-n0w1-000000.tar.idx.npy  member byte offsets of that tar, so a step range is one seek
└── shard-n0w2-000003.zarr.tmp/    a shard being written (or left by a killed writer): never read
```

S is the shard's total step count, E its episode count; every episode lies
inside one shard, its steps contiguous and in order.

Format versions: 1 had no object keys; 2 adds, per step, the clutter objects'
poses in `spec.object_slots` fixed slots, which slots hold a real object, and
whether the robot touches any of them (OBJECT_KEYS). A version-1 store's spec
has no `object_slots` (it reads as 0: no object keys), so it still reads. 3 changes
the store's layout, not its shards: commit records, checkpoints and a Parquet episode index instead
of one manifest rewritten per commit (`f1 dataset upgrade` moves a version 1 or 2 store forward). 4 adds,
per step, every camera's pose and intrinsics (CAMERA_KEY_SUFFIXES, when `spec.camera_geometry`) and a camera's
depth (`<cam>_depth`, for each of `spec.depth_cameras`); a version-1..3 store's spec has neither field (no
camera keys), so it still reads, and `f1 dataset upgrade` moves a version-3 store to 4 by its header alone.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from f1.shared.errors import UserError

FORMAT_VERSION = 4
"""4: per-step camera poses and intrinsics, and optionally depth (CAMERA_KEY_SUFFIXES, DEPTH_SUFFIX); the layout
is version 3's. 3: the log-structured layout above (commit records, checkpoints, the Parquet episode index, chunk
folders); the shards themselves are as in version 2. 2: per-step object poses, which slots are real and robot-object contact (when the store has object
slots, `StoreSpec.object_slots`); WebDataset samples all have the same members (no episode.json at
k = 0; every episode's meta, randomization included, is in its manifest entry), so Hugging Face
`datasets` loads the tars. Version-1 stores are still read (their tars' episode.json is used)."""
MANIFEST_NAME = "manifest.json"
LOCK_NAME = "manifest.lock"
LOG_DIR = "log"
CHECKPOINT_DIR = "checkpoints"
INDEX_DIR = "index"
SHARDS_DIR = "shards"
LAST_CHECKPOINT = "_last_checkpoint"
SHARDS_PER_CHUNK = 500  # a chunk folder's shards: a tar and its index sidecar keep it at <= 1,000 entries
RECORDS_PER_CHUNK = 1000  # a log folder's records (one per shard)
TMP_SUFFIX = ".tmp"
FORMATS = ("zarr", "webdataset")
SHARD_SUFFIX = {"zarr": ".zarr", "webdataset": ".tar"}
SHARD_PATTERN = "shard-{worker}-{seq:06d}{suffix}"
TAR_INDEX_SUFFIX = ".idx.npy"  # sidecar of a .tar: shard-<worker>-<seq>.tar.idx.npy
# Group 1: worker, 2: seq, 3: suffix (.zarr/.tar), 4: anything after (.tmp, .idx.npy, ...).
SHARD_NAME_RE = re.compile(r"^shard-([A-Za-z0-9]+)-(\d{6,})(\.zarr|\.tar)(.*)$")
WORKER_RE = re.compile(r"^[A-Za-z0-9]+$")
# No dots (WebDataset splits keys at dots), nothing a path or a tar name would mangle.
EPISODE_ID_RE = re.compile(r"^[A-Za-z0-9_-]+$")

IMAGE_SUFFIX = "_rgb"
FLAG_KEYS = ("is_first", "is_last", "is_terminal")
VECTOR_KEYS = ("state", "action")
# Format 2, present when spec.object_slots > 0 (the collector sets it to environment.domain_randomization.max_objects):
#   object_pose    float32 (slots, 7)  each clutter object's pose in the world frame: position xyz (m), quaternion wxyz;
#                                      zeros in a slot that holds no object on the table
#   object_valid   bool (slots,)       the slot holds an object on the table this episode (not padding, not parked)
#   object_contact bool ()             a robot link touched a clutter object during the physics steps that led to
#                                      this step's observation (False at step 0, before any action)
OBJECT_KEYS = ("object_pose", "object_valid", "object_contact")
OBJECT_POSE_DIM = 7
# Format 4, present when spec.camera_geometry (the collector always sets it), for each camera <cam>:
#   <cam>_pose        float32 (4, 4)  camera-to-world transform, OpenCV camera axes (x right, y down, z forward),
#                                     metres; world frame as object_pose (z up, robot base at the origin)
#   <cam>_intrinsics  float32 (3, 3)  K in pixels of the stored image: u = fx x/z + cx, v = fy y/z + cy, with
#                                     pixel (row v, column u) centred on integer (u, v) (OpenCV's convention)
# and for each camera of spec.depth_cameras (environment.depth: the wrist camera):
#   <cam>_depth       uint16 (H, W)   z along the camera's forward axis (OpenCV z), millimetres; 0 where
#                                     nothing was rendered (beyond the far plane)
CAMERA_KEY_SUFFIXES = ("_pose", "_intrinsics")
DEPTH_SUFFIX = "_depth"


Episode = dict  # dict[str, np.ndarray]: one array per key of StoreSpec.keys, leading time axis N


class StoreError(UserError):
    """A store on disk is missing, malformed or does not match what was asked of it."""


class SchemaError(ValueError):
    """Arrays handed to a writer do not follow the episode schema (a bug in the caller, not user input)."""


def shard_name(worker: str, seq: int, fmt: str) -> str:
    return SHARD_PATTERN.format(worker=worker, seq=seq, suffix=SHARD_SUFFIX[fmt])


def shard_relpath(name: str) -> str:
    """Where a format-3 writer puts a shard: 'shard-n0w3-000002.tar' -> 'shards/n0w3/0000/shard-n0w3-000002.tar'."""
    worker, seq, _, _ = parse_shard_name(name)
    return f"{SHARDS_DIR}/{worker}/{seq // SHARDS_PER_CHUNK:04d}/{name}"


def parse_shard_name(name: str) -> tuple[str, int, str, str] | None:
    """'shard-n0w3-000002.tar.tmp' -> ('n0w3', 2, '.tar', '.tmp'); None for other names."""
    m = SHARD_NAME_RE.match(name)
    return (m.group(1), int(m.group(2)), m.group(3), m.group(4)) if m else None


@dataclass(frozen=True)
class StoreSpec:
    """What every episode of one store looks like; saved in the manifest and compared on reopen."""

    image_hw: tuple[int, int] = (128, 128)
    cameras: tuple[str, ...] = ("head", "wrist")
    state_dim: int = 32
    action_dim: int = 32
    real_state_dims: int = 8
    """The first `real_state_dims` entries of state are real; the rest is zero padding."""
    real_action_dims: int = 8
    """Panda single arm: 7 joint deltas + 1 gripper."""
    control_mode: str = "delta_qpos"
    control_freq: int = 20
    image_codec: str = "auto"
    """Lossless image codec (f1.datasets.codecs); 'auto' resolves to the format's default when a store is created."""
    object_slots: int = 0
    """Clutter object slots per step (format 2, OBJECT_KEYS); 0: the store keeps no object keys (every version-1 store)."""
    camera_geometry: bool = False
    """Per-step `<cam>_pose` and `<cam>_intrinsics` for every camera (format 4); False in every older store."""
    depth_cameras: tuple[str, ...] = ()
    """Cameras whose per-step `<cam>_depth` (uint16 millimetres) the store keeps (format 4); () in every older store."""

    def __post_init__(self) -> None:
        # Lists from JSON become tuples, so specs compare equal however they were built.
        object.__setattr__(self, "image_hw", tuple(int(v) for v in self.image_hw))
        object.__setattr__(self, "cameras", tuple(self.cameras))
        object.__setattr__(self, "depth_cameras", tuple(self.depth_cameras))
        if len(self.image_hw) != 2 or min(self.image_hw) < 1:
            raise SchemaError(f"image_hw must be (height, width), got {self.image_hw}")
        if not self.cameras or len(set(self.cameras)) != len(self.cameras):
            raise SchemaError(f"cameras must be distinct names, got {self.cameras}")
        if not 0 <= self.real_state_dims <= self.state_dim:
            raise SchemaError(f"real_state_dims={self.real_state_dims} not in [0, state_dim={self.state_dim}]")
        if not 0 <= self.real_action_dims <= self.action_dim:
            raise SchemaError(f"real_action_dims={self.real_action_dims} not in [0, action_dim={self.action_dim}]")
        if self.object_slots < 0:
            raise SchemaError(f"object_slots={self.object_slots} must be >= 0")
        if not set(self.depth_cameras) <= set(self.cameras) or len(set(self.depth_cameras)) != len(self.depth_cameras):
            raise SchemaError(f"depth_cameras {self.depth_cameras} must be distinct cameras of {self.cameras}")

    @property
    def image_keys(self) -> tuple[str, ...]:
        return tuple(f"{cam}{IMAGE_SUFFIX}" for cam in self.cameras)

    @property
    def object_keys(self) -> tuple[str, ...]:
        return OBJECT_KEYS if self.object_slots else ()

    @property
    def camera_keys(self) -> tuple[str, ...]:
        """Format 4's per-camera pose and intrinsics keys, () without camera_geometry."""
        return tuple(f"{cam}{suffix}" for cam in self.cameras for suffix in CAMERA_KEY_SUFFIXES) if self.camera_geometry else ()

    @property
    def depth_keys(self) -> tuple[str, ...]:
        return tuple(f"{cam}{DEPTH_SUFFIX}" for cam in self.depth_cameras)

    @property
    def frame_keys(self) -> tuple[str, ...]:
        """Keys stored frame by frame (a chunk, a PNG each): the colour images, then the depth maps."""
        return (*self.image_keys, *self.depth_keys)

    @property
    def keys(self) -> tuple[str, ...]:
        return (*self.image_keys, *VECTOR_KEYS, *FLAG_KEYS, *self.object_keys, *self.camera_keys, *self.depth_keys)

    def step_dtypes(self) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        """Per key: (dtype, shape of one step)."""
        h, w = self.image_hw
        out: dict[str, tuple[np.dtype, tuple[int, ...]]] = {k: (np.dtype(np.uint8), (h, w, 3)) for k in self.image_keys}
        out["state"] = (np.dtype(np.float32), (self.state_dim,))
        out["action"] = (np.dtype(np.float32), (self.action_dim,))
        out.update({k: (np.dtype(np.bool_), ()) for k in FLAG_KEYS})
        if self.object_slots:
            out["object_pose"] = (np.dtype(np.float32), (self.object_slots, OBJECT_POSE_DIM))
            out["object_valid"] = (np.dtype(np.bool_), (self.object_slots,))
            out["object_contact"] = (np.dtype(np.bool_), ())
        for cam in self.cameras if self.camera_geometry else ():
            out[f"{cam}_pose"] = (np.dtype(np.float32), (4, 4))
            out[f"{cam}_intrinsics"] = (np.dtype(np.float32), (3, 3))
        out.update({k: (np.dtype(np.uint16), (h, w)) for k in self.depth_keys})
        return out

    def raw_bytes_per_step(self) -> int:
        return sum(dtype.itemsize * int(np.prod(shape)) for dtype, shape in self.step_dtypes().values())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["image_hw"], d["cameras"], d["depth_cameras"] = list(self.image_hw), list(self.cameras), list(self.depth_cameras)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StoreSpec":
        return cls(**d)

    def with_codec(self, image_codec: str) -> "StoreSpec":
        return StoreSpec.from_dict({**self.to_dict(), "image_codec": image_codec})


@dataclass
class EpisodeMeta:
    episode_id: str
    seed: int
    scene_id: int
    randomization: dict[str, Any] = field(default_factory=dict)
    """JSON-able randomisation parameters of the episode's scene."""
    length: int = 0
    """N = T + 1 steps."""

    def __post_init__(self) -> None:
        # numpy integers from the collector would not survive json.dumps.
        self.seed, self.scene_id, self.length = int(self.seed), int(self.scene_id), int(self.length)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EpisodeMeta":
        return cls(**d)


def episode_problems(arrays: dict[str, np.ndarray], meta: EpisodeMeta, spec: StoreSpec) -> list[str]:
    """Every way `arrays` + `meta` break the schema, each naming the episode, key and step; [] when valid."""
    ep = f"episode {meta.episode_id!r}"
    problems = []
    if not isinstance(meta.episode_id, str) or not EPISODE_ID_RE.match(meta.episode_id):
        problems.append(f"{ep}: episode_id must match {EPISODE_ID_RE.pattern} (no dots)")
    missing, extra = set(spec.keys) - set(arrays), set(arrays) - set(spec.keys)
    if missing or extra:
        problems.append(f"{ep}: keys missing {sorted(missing)}, unexpected {sorted(extra)}")
    n = meta.length
    if n < 1:
        problems.append(f"{ep}: length {n} < 1")
    for key, (dtype, shape) in spec.step_dtypes().items():
        if key not in arrays:
            continue
        a = arrays[key]
        if a.dtype != dtype or tuple(a.shape) != (n, *shape):
            problems.append(f"{ep}: {key} is {a.dtype}{tuple(a.shape)}, expected {dtype}{(n, *shape)}")
    if problems:
        return problems  # markers and padding are only meaningful on well-shaped arrays
    first, last, term = (np.flatnonzero(arrays[k]) for k in FLAG_KEYS)
    if first.tolist() != [0]:
        problems.append(f"{ep}: is_first must be set at step 0 only, found at steps {first.tolist()}")
    if last.tolist() != [n - 1]:
        problems.append(f"{ep}: is_last must be set at step {n - 1} only, found at steps {last.tolist()}")
    if term.size and term.tolist() != [n - 1]:
        problems.append(f"{ep}: is_terminal may only be set at the last step {n - 1}, found at steps {term.tolist()}")
    for key, real in (("state", spec.real_state_dims), ("action", spec.real_action_dims)):
        pad = arrays[key][:, real:]
        if np.any(pad != 0):
            step, dim = np.argwhere(pad != 0)[0]
            problems.append(f"{ep}: {key} padding dim {real + dim} is nonzero at step {step} (zero-padded past {real})")
        bad = ~np.isfinite(arrays[key])
        if bad.any():
            problems.append(f"{ep}: {key} is not finite at step {np.argwhere(bad)[0][0]}")
    if spec.object_slots:
        pose, valid = arrays["object_pose"], arrays["object_valid"]
        bad = ~np.isfinite(pose)
        if bad.any():
            problems.append(f"{ep}: object_pose is not finite at step {np.argwhere(bad)[0][0]}")
        empty = np.any(pose != 0, axis=-1) & ~valid  # (N, slots)
        if empty.any():
            step, slot = np.argwhere(empty)[0]
            problems.append(f"{ep}: object_pose slot {slot} is nonzero at step {step} where object_valid is False")
        norm = np.linalg.norm(pose[..., 3:], axis=-1)  # (N, slots) quaternion norms
        off = valid & (np.abs(norm - 1) > 1e-3)
        if off.any():
            step, slot = np.argwhere(off)[0]
            problems.append(f"{ep}: object_pose slot {slot} at step {step} has a quaternion of norm {norm[step, slot]:.4f}, not 1")
    for cam in spec.cameras if spec.camera_geometry else ():
        problems += camera_problems(ep, cam, arrays[f"{cam}_pose"], arrays[f"{cam}_intrinsics"])
    return problems


def camera_problems(ep: str, cam: str, pose: np.ndarray, intrinsics: np.ndarray) -> list[str]:
    """A camera's poses (N, 4, 4) must be rigid transforms, its intrinsics (N, 3, 3) pinhole matrices."""
    problems = []
    for key, a in ((f"{cam}_pose", pose), (f"{cam}_intrinsics", intrinsics)):
        bad = ~np.isfinite(a).all(axis=(1, 2))  # (N,)
        if bad.any():
            problems.append(f"{ep}: {key} is not finite at step {np.flatnonzero(bad)[0]}")
    if problems:
        return problems
    rot = pose[:, :3, :3].astype(np.float64)  # (N, 3, 3)
    off = np.abs(rot @ rot.transpose(0, 2, 1) - np.eye(3)).max(axis=(1, 2)) > 1e-4  # (N,)
    off |= np.linalg.det(rot) < 0
    off |= np.any(pose[:, 3] != np.array([0, 0, 0, 1], np.float32), axis=1)
    if off.any():
        problems.append(f"{ep}: {cam}_pose at step {np.flatnonzero(off)[0]} is not a rigid transform (rotation, translation, last row 0 0 0 1)")
    k = intrinsics
    bad = (k[:, 0, 0] <= 0) | (k[:, 1, 1] <= 0) | np.any(k[:, 2] != np.array([0, 0, 1], np.float32), axis=1) | (k[:, 1, 0] != 0)
    if bad.any():
        problems.append(f"{ep}: {cam}_intrinsics at step {np.flatnonzero(bad)[0]} is not a pinhole matrix [[fx, s, cx], [0, fy, cy], [0, 0, 1]]")
    return problems


def validate_episode(arrays: dict[str, np.ndarray], meta: EpisodeMeta, spec: StoreSpec) -> None:
    """Raise SchemaError listing every problem (key, step) of one episode."""
    problems = episode_problems(arrays, meta, spec)
    if problems:
        raise SchemaError("; ".join(problems))
