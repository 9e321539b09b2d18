"""`f1 dataset convert LEROBOT_DIR STORE --format zarr|webdataset`: a LeRobot v3.0 dataset as an f1 store.

Mapping (flags, with defaults):
- cameras: `--camera wrist=observation.images.wrist --camera head=observation.images.head`; by default
  the features of those names, or a dataset's only camera as the wrist; the wrist is required
  (f1's tokenizer and teacher read it). All frames take one size: `--image-size N` (N x N), else the wrist's.
- `--state KEY` (default observation.state) and `--action KEY` (default action): 1-D float features;
  each becomes the first dims of f1's state/action, zero-padded to 32 (or kept as they are if longer).
- One LeRobot episode of n frames becomes one f1 episode of n steps: is_first at step 0, is_last at
  n - 1; is_terminal, the clutter keys and the episode's id, seed and scene come back when the dataset
  was written by f1 (`--format lerobot`), and otherwise is_terminal is False and the id is
  lerobot-e<episode_index>. fps becomes the store's control frequency.

A LeRobot dataset is input from strangers: info.json's data_path and video_path are checked
(lerobot_layout.check_template) and every file they name must lie inside the dataset's folder; the
counts and shapes a header claims are bounded before anything is allocated; each file's rows and
frames must agree with the episodes that point into it. Every refusal is one line (LeRobotError).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from f1.datasets.lerobot_features import ACTION, IMAGE_PREFIX, STATE, camera_features
from f1.datasets.lerobot_layout import (
    CODEBASE_VERSION,
    F1_INFO,
    INFO_PATH,
    MAX_EPISODES,
    MAX_FPS,
    MAX_FRAMES,
    MAX_IMAGE_SIDE,
    MAX_VECTOR_DIMS,
    LeRobotError,
    check_template,
    resolve_inside,
)
from f1.datasets.lerobot_video import read_frames
from f1.datasets.progress import count_bar
from f1.datasets.schema import EPISODE_ID_RE, OBJECT_POSE_DIM, EpisodeMeta, StoreSpec
from f1.datasets.writer import open_writer

CAMERA_SLOTS = ("wrist", "head")
PADDED_DIMS = 32  # f1's training.state_dim / action_dim: shorter vectors are padded to it
EPISODES_PER_SHARD = 64
MAX_INFO_BYTES = 16 << 20
ROW_BATCH = 4096  # Parquet rows decoded at a time
F1_COLUMNS = ("episode_id", "seed", "scene_id", "randomization")


@dataclass
class Mapping:
    cameras: dict[str, str]  # f1 camera slot -> LeRobot video feature
    state: str
    action: str
    image_hw: tuple[int, int]
    source_hw: dict[str, tuple[int, int]]
    object_slots: int
    extra: list[str] = field(default_factory=list)  # f1's own per-frame features present in the dataset
    camera_names: dict[str, str] = field(default_factory=dict)  # f1 slot -> its name in f1's <name>_pose features


def main(
    src: str,
    dst: str,
    fmt: str,
    camera: list[str] | None = None,
    state: str | None = None,
    action: str | None = None,
    image_size: int | None = None,
    image_codec: str | None = None,
) -> None:
    root = Path(src)
    info = load_info(root)
    mapping = map_features(info["features"], camera or [], state or STATE, action or ACTION, image_size)
    episodes = load_episodes(root, info, mapping)
    check_paths(root, info, mapping, episodes)  # every file named, inside the folder, before dst is created
    fps = info["fps"]
    real_state, real_action = (info["features"][k]["shape"][0] for k in (mapping.state, mapping.action))
    f1 = _f1_info(info, mapping, real_state, real_action)
    spec = StoreSpec(
        image_hw=mapping.image_hw,
        cameras=tuple(slot for slot in CAMERA_SLOTS[::-1] if slot in mapping.cameras),  # ("head", "wrist") as f1 collects
        state_dim=f1.get("state_dim", max(PADDED_DIMS, real_state)),
        action_dim=f1.get("action_dim", max(PADDED_DIMS, real_action)),
        real_state_dims=real_state,
        real_action_dims=real_action,
        control_mode=f1.get("control_mode", "lerobot"),
        control_freq=fps,
        object_slots=mapping.object_slots,
        camera_geometry=bool(mapping.camera_names),
    )
    tasks = sorted({t for e in episodes for t in e.get("tasks") or []})
    config = {
        "environment": {"task_name": tasks[0] if len(tasks) == 1 else "; ".join(tasks), "embodiment": info.get("robot_type")},
        "lerobot": {"source": str(root.resolve()), "fps": fps, "cameras": mapping.cameras, "state": mapping.state, "action": mapping.action},
    }
    writer = open_writer(dst, fmt, spec, "n0w0", config, EPISODES_PER_SHARD, image_codec=image_codec)
    steps = 0
    with writer, count_bar("import", len(episodes)) as advance:
        for arrays, meta in iter_episodes(root, info, mapping, spec, episodes):
            writer.add_episode(arrays, meta)
            steps += meta.length
            advance()
    print(f"wrote {dst}: {len(episodes)} episodes, {steps} steps at {fps} fps, cameras {dict(mapping.cameras)}, format {fmt}")


def _f1_info(info: dict[str, Any], mapping: Mapping, real_state: int, real_action: int) -> dict[str, Any]:
    """The padded sizes and control mode an f1 export recorded, when they fit the mapped features; else {}."""
    f1 = info.get(F1_INFO)
    if not isinstance(f1, dict) or (mapping.state, mapping.action) != (STATE, ACTION):
        return {}
    sizes_fit = all(
        isinstance(f1.get(key), int) and real <= f1[key] <= MAX_VECTOR_DIMS for key, real in (("state_dim", real_state), ("action_dim", real_action))
    )
    return f1 if sizes_fit and isinstance(f1.get("control_mode"), str) else {}


# -- the header -------------------------------------------------------------------------------


def is_lerobot_dataset(path: str) -> bool:
    return not str(path).startswith("s3://") and (Path(path) / INFO_PATH).is_file()


def load_info(root: Path) -> dict[str, Any]:
    """meta/info.json, checked: version, fps, bounded totals, safe path templates, well-formed features."""
    path = root / INFO_PATH
    if not path.is_file():
        raise LeRobotError(f"{root} has no {INFO_PATH}; pass a LeRobot v3.0 dataset folder")
    if path.stat().st_size > MAX_INFO_BYTES:
        raise LeRobotError(f"{path} is larger than {MAX_INFO_BYTES >> 20} MB; not a LeRobot info.json")
    try:
        info = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise LeRobotError(f"{path} is not valid JSON ({exc}); re-export the dataset") from None
    if not isinstance(info, dict):
        raise LeRobotError(f"{path} is not a JSON object; re-export the dataset")
    version = info.get("codebase_version")
    if version != CODEBASE_VERSION:
        raise LeRobotError(
            f"{root} is LeRobot {version}, f1 reads {CODEBASE_VERSION}; convert it with LeRobot's "
            "convert_dataset_v21_to_v30 first"
        )
    _bounded_int(info, "fps", 1, MAX_FPS)
    _bounded_int(info, "total_frames", 0, MAX_FRAMES)
    _bounded_int(info, "total_episodes", 0, MAX_EPISODES)
    check_template("data_path", info.get("data_path"))
    if not isinstance(info.get("features"), dict) or not info["features"]:
        raise LeRobotError(f"{path} has no features; re-export the dataset")
    for key, feature in info["features"].items():
        _check_feature(key, feature)
    if any(f["dtype"] == "video" for f in info["features"].values()):
        check_template("video_path", info.get("video_path"))
    return info


def _bounded_int(info: dict[str, Any], key: str, lo: int, hi: int) -> int:
    value = info.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise LeRobotError(f"info.json's {key} is {value!r}, not an integer in [{lo}, {hi}]; re-export the dataset")
    return value


def _check_feature(key: str, feature: Any) -> None:
    """A feature's dtype and shape, bounded: an image at most MAX_IMAGE_SIDE a side, a vector MAX_VECTOR_DIMS."""
    if not isinstance(feature, dict) or not isinstance(feature.get("shape"), list) or not isinstance(feature.get("dtype"), str):
        raise LeRobotError(f"info.json's feature {key!r} has no dtype and shape list; re-export the dataset")
    shape = feature["shape"]
    if not shape or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape):
        raise LeRobotError(f"info.json's feature {key!r} has shape {shape}, not positive integers; re-export the dataset")
    if feature["dtype"] in ("video", "image"):
        if len(shape) != 3 or shape[2] != 3 or max(shape[:2]) > MAX_IMAGE_SIDE:
            raise LeRobotError(
                f"info.json's camera {key!r} has shape {shape}; f1 reads (height, width, 3) frames up to {MAX_IMAGE_SIDE} a side"
            )
    elif int(np.prod(shape)) > MAX_VECTOR_DIMS:
        raise LeRobotError(f"info.json's feature {key!r} has shape {shape}, over {MAX_VECTOR_DIMS} values a frame; refusing it")


def map_features(
    features: dict[str, Any], camera: list[str], state: str, action: str, image_size: int | None
) -> Mapping:
    """Which LeRobot features fill f1's cameras, state and action; LeRobotError naming what is missing."""
    videos = [k for k, f in features.items() if f["dtype"] == "video"]
    if any(f["dtype"] == "image" for f in features.values()) and not videos:
        raise LeRobotError("the dataset stores its cameras as images in Parquet; f1 reads video features (re-record with videos)")
    cameras: dict[str, str] = {}
    for item in camera:
        slot, sep, key = item.partition("=")
        if not sep or slot not in CAMERA_SLOTS:
            raise LeRobotError(f"--camera {item!r}: write SLOT=FEATURE with SLOT one of {list(CAMERA_SLOTS)}, e.g. wrist={IMAGE_PREFIX}wrist")
        if key not in videos:
            raise LeRobotError(f"--camera {item!r}: the dataset has no video feature {key!r}; its cameras are {videos}")
        cameras[slot] = key
    if not camera:
        cameras = {slot: IMAGE_PREFIX + slot for slot in CAMERA_SLOTS if IMAGE_PREFIX + slot in videos}
        if not cameras and len(videos) == 1:
            cameras = {"wrist": videos[0]}
    if "wrist" not in cameras:
        raise LeRobotError(
            f"no camera for f1's wrist slot (the dataset's cameras: {videos or 'none'}); pass --camera wrist=FEATURE"
        )
    for role, key, flag in (("state", state, "--state"), ("action", action, "--action")):
        feature = features.get(key)
        if feature is None or feature["dtype"] not in ("float32", "float64") or len(feature["shape"]) != 1:
            vectors = [k for k, f in features.items() if f["dtype"] in ("float32", "float64") and len(f["shape"]) == 1]
            raise LeRobotError(f"no 1-D float feature {key!r} for f1's {role} (the dataset's: {vectors}); pass {flag} FEATURE")
    source_hw = {slot: tuple(features[key]["shape"][:2]) for slot, key in cameras.items()}
    image_hw = (image_size, image_size) if image_size else source_hw["wrist"]
    if min(image_hw) < 1 or max(image_hw) > MAX_IMAGE_SIDE:
        raise LeRobotError(f"--image-size {image_size} must be between 1 and {MAX_IMAGE_SIDE}")
    slots = _object_slots(features)
    extra = [k for k in ("is_first", "is_terminal", "object_pose", "object_valid", "object_contact") if k in features]
    extra = extra if slots else [k for k in extra if not k.startswith("object")]
    # f1's camera poses and intrinsics come along when every mapped camera has them (an f1 export's).
    names = {slot: key.removeprefix(IMAGE_PREFIX) for slot, key in cameras.items()}
    names = names if camera_features(features, list(names.values())) else {}
    extra += [f"{name}{suffix}" for name in names.values() for suffix in ("_pose", "_intrinsics")]
    return Mapping(cameras, state, action, image_hw, source_hw, slots, extra, names)


def _object_slots(features: dict[str, Any]) -> int:
    """f1's clutter slots when the dataset carries f1's object features, consistently shaped; else 0."""
    pose, valid = features.get("object_pose"), features.get("object_valid")
    if not (pose and valid and "object_contact" in features) or valid["dtype"] != "bool" or pose["dtype"] != "float32":
        return 0
    slots = valid["shape"][0]
    return slots if pose["shape"] == [slots * OBJECT_POSE_DIM] else 0


# -- the episodes table -----------------------------------------------------------------------


def load_episodes(root: Path, info: dict[str, Any], mapping: Mapping) -> list[dict[str, Any]]:
    """meta/episodes rows (the columns f1 needs), in episode order, checked against info.json's claims."""
    import pyarrow.parquet as pq

    folder = resolve_inside(root, "meta/episodes")
    paths = sorted(p for p in folder.glob("*/*.parquet")) if folder.is_dir() else []
    if not paths:
        raise LeRobotError(f"{root} has no meta/episodes/*/*.parquet; re-export the dataset")
    wanted = ["episode_index", "length", "dataset_from_index", "dataset_to_index", "data/chunk_index", "data/file_index", "tasks"]
    for key in mapping.cameras.values():
        wanted += [f"videos/{key}/{c}" for c in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")]
    rows: list[dict[str, Any]] = []
    for path in paths:
        path = resolve_inside(root, str(path.relative_to(root)))
        meta = pq.ParquetFile(path)
        if len(rows) + meta.metadata.num_rows > MAX_EPISODES:
            raise LeRobotError(f"{root}'s meta/episodes list more than {MAX_EPISODES} episodes; refusing it")
        names = set(meta.schema_arrow.names)
        missing = [c for c in wanted if c not in names]
        if missing:
            raise LeRobotError(f"{path} lacks the columns {missing}; re-export the dataset")
        table = meta.read(columns=wanted + [c for c in F1_COLUMNS if c in names])
        rows += table.to_pylist()
    rows.sort(key=lambda r: r["episode_index"])
    total = 0
    for i, row in enumerate(rows):
        n = row["length"]
        if row["episode_index"] != i or not isinstance(n, int) or not 1 <= n <= MAX_FRAMES:
            raise LeRobotError(f"meta/episodes row {i}: episode_index {row['episode_index']}, length {n}; re-export the dataset")
        if row["dataset_to_index"] - row["dataset_from_index"] != n:
            raise LeRobotError(f"episode {i}: dataset_from/to_index span {row['dataset_to_index'] - row['dataset_from_index']} frames, length says {n}")
        total += n
    if total != info["total_frames"] or len(rows) != info["total_episodes"]:
        raise LeRobotError(
            f"meta/episodes hold {len(rows)} episodes, {total} frames; info.json claims {info['total_episodes']}, "
            f"{info['total_frames']}; re-export the dataset"
        )
    return rows


def data_path(root: Path, info: dict[str, Any], row: dict[str, Any]) -> Path:
    return resolve_inside(root, info["data_path"].format(chunk_index=row["data/chunk_index"], file_index=row["data/file_index"]))


def video_path(root: Path, info: dict[str, Any], key: str, row: dict[str, Any]) -> Path:
    fields = {"chunk_index": row[f"videos/{key}/chunk_index"], "file_index": row[f"videos/{key}/file_index"]}
    return resolve_inside(root, info["video_path"].format(video_key=key, **fields))


def check_paths(root: Path, info: dict[str, Any], mapping: Mapping, episodes: list[dict[str, Any]]) -> None:
    """LeRobotError unless every data and video file the episodes name lies inside `root` and exists."""
    for row in episodes:
        for path in [data_path(root, info, row), *(video_path(root, info, key, row) for key in mapping.cameras.values())]:
            if not path.is_file():
                raise LeRobotError(f"{path} is named by meta/episodes but missing; re-download the dataset")


# -- frames -----------------------------------------------------------------------------------


def iter_episodes(
    root: Path, info: dict[str, Any], mapping: Mapping, spec: StoreSpec, episodes: list[dict[str, Any]]
) -> Iterator[tuple[dict[str, np.ndarray], EpisodeMeta]]:
    """(arrays, meta) of each episode in order, one in memory at a time."""
    rows = FrameRows(root, info, mapping)
    cursors = {slot: VideoCursor(root, info, key, mapping.source_hw[slot]) for slot, key in mapping.cameras.items()}
    for row in episodes:
        n = row["length"]
        columns = rows.take(row)
        arrays: dict[str, np.ndarray] = {}
        for slot, key in mapping.cameras.items():
            frames = cursors[slot].take(row, n)
            arrays[f"{slot}_rgb"] = resize_frames(frames, mapping.image_hw)
        arrays["state"] = _padded(columns[mapping.state], spec.state_dim)
        arrays["action"] = _padded(columns[mapping.action], spec.action_dim)
        k = np.arange(n)
        arrays["is_first"] = k == 0
        arrays["is_last"] = k == n - 1
        terminal = bool(columns["is_terminal"][-1]) if "is_terminal" in columns else False
        arrays["is_terminal"] = (k == n - 1) & terminal
        if spec.object_slots:
            arrays["object_pose"] = columns["object_pose"].reshape(n, spec.object_slots, OBJECT_POSE_DIM).astype(np.float32)
            arrays["object_valid"] = columns["object_valid"].astype(bool)
            arrays["object_contact"] = columns["object_contact"].reshape(n).astype(bool)
        for slot, name in mapping.camera_names.items():
            arrays[f"{slot}_pose"] = columns[f"{name}_pose"].reshape(n, 4, 4).astype(np.float32)
            arrays[f"{slot}_intrinsics"] = scaled_intrinsics(
                columns[f"{name}_intrinsics"].reshape(n, 3, 3).astype(np.float32), mapping.source_hw[slot], mapping.image_hw
            )
        yield arrays, _episode_meta(row, n)


def scaled_intrinsics(k: np.ndarray, source_hw: tuple[int, int], image_hw: tuple[int, int]) -> np.ndarray:
    """(n, 3, 3) K of `source_hw` pictures for the same pictures resized to `image_hw` (pixel centres on integers)."""
    if tuple(source_hw) == tuple(image_hw):
        return k
    sy, sx = image_hw[0] / source_hw[0], image_hw[1] / source_hw[1]
    out = k.astype(np.float64)
    out[:, 0, :2] *= sx  # fx, skew
    out[:, 1, 1] *= sy
    out[:, 0, 2] = (out[:, 0, 2] + 0.5) * sx - 0.5
    out[:, 1, 2] = (out[:, 1, 2] + 0.5) * sy - 0.5
    return out.astype(np.float32)


def _padded(values: np.ndarray, dim: int) -> np.ndarray:
    out = np.zeros((len(values), dim), np.float32)
    out[:, : values.shape[1]] = values
    return out


def _episode_meta(row: dict[str, Any], n: int) -> EpisodeMeta:
    index = row["episode_index"]
    episode_id = row.get("episode_id")
    if not isinstance(episode_id, str) or not EPISODE_ID_RE.match(episode_id):
        episode_id = f"lerobot-e{index:07d}"
    try:
        randomization = json.loads(row["randomization"]) if isinstance(row.get("randomization"), str) else {}
    except ValueError:
        randomization = {}
    if not isinstance(randomization, dict):
        randomization = {}
    seed = row.get("seed") if isinstance(row.get("seed"), int) else index
    scene_id = row.get("scene_id") if isinstance(row.get("scene_id"), int) else index
    return EpisodeMeta(episode_id, seed, scene_id, randomization or {"lerobot_episode_index": index}, n)


class FrameRows:
    """Reads data/ Parquet files in order, hands out one episode's columns at a time."""

    def __init__(self, root: Path, info: dict[str, Any], mapping: Mapping):
        self.root, self.info = root, info
        self.columns = [mapping.state, mapping.action, "episode_index", "frame_index", *mapping.extra]
        self.widths = {k: int(np.prod(info["features"][k]["shape"])) for k in self.columns}
        self._path: Path | None = None
        self._batches: Iterator[Any] | None = None
        self._pending: dict[str, np.ndarray] | None = None  # decoded rows not handed out yet

    def take(self, row: dict[str, Any]) -> dict[str, np.ndarray]:
        """{column: (n, width)} of the episode `row` describes; LeRobotError when the file disagrees."""
        index, n = row["episode_index"], row["length"]
        path = data_path(self.root, self.info, row)
        if path != self._path:
            self._open(path)
        parts: list[dict[str, np.ndarray]] = []
        have = 0
        while have < n:
            if self._pending is None or len(self._pending["episode_index"]) == 0:
                self._pending = self._next_batch(path, index)
            ep = self._pending["episode_index"]
            skip = int(np.argmax(ep == index)) if (ep == index).any() else len(ep)
            if skip and have:
                break  # the episode ended early: fewer rows than its length
            take = skip + int(np.sum(np.cumprod(ep[skip:] == index)))
            parts.append({k: v[skip:take] for k, v in self._pending.items()})
            have += take - skip
            self._pending = {k: v[take:] for k, v in self._pending.items()}
        columns = {k: np.concatenate([p[k] for p in parts]) for k in self.columns}
        if len(columns["episode_index"]) != n or not np.array_equal(columns["frame_index"].reshape(-1), np.arange(n)):
            raise LeRobotError(f"{path}: episode {index}'s rows are not its {n} frames 0..{n - 1} in order; re-export the dataset")
        return columns

    def _open(self, path: Path) -> None:
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        missing = [c for c in self.columns if c not in parquet.schema_arrow.names]
        if missing:
            raise LeRobotError(f"{path} lacks the columns {missing}; re-export the dataset")
        self._path, self._pending = path, None
        self._batches = parquet.iter_batches(batch_size=ROW_BATCH, columns=self.columns)

    def _next_batch(self, path: Path, index: int) -> dict[str, np.ndarray]:
        import pyarrow as pa

        batch = next(self._batches, None)
        if batch is None:
            raise LeRobotError(f"{path} ends before episode {index}'s rows do; re-export the dataset")
        out = {}
        for name in self.columns:
            column = batch.column(name)
            width = self.widths[name]
            nested = pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type) or pa.types.is_large_list(column.type)
            values = (column.flatten() if nested else column).to_numpy(zero_copy_only=False)
            if len(values) != len(batch) * width:
                raise LeRobotError(f"{path}: column {name} holds {len(values) // max(len(batch), 1)} values a row, info.json says {width}")
            out[name] = values.reshape(len(batch), width) if width > 1 or name in (STATE, ACTION) else values.reshape(len(batch))
        return out


class VideoCursor:
    """One camera's frames, episode after episode, decoding each video file once when read in order."""

    def __init__(self, root: Path, info: dict[str, Any], key: str, hw: tuple[int, int]):
        self.root, self.info, self.key, self.fps, self.hw = root, info, key, info["fps"], hw
        self._path: Path | None = None
        self._frames: Iterator[tuple[int, np.ndarray]] | None = None
        self._next = 0  # the frame number the iterator yields next

    def take(self, row: dict[str, Any], n: int) -> np.ndarray:
        """The episode's n frames (n, H, W, 3) uint8, from its from_timestamp on."""
        path = video_path(self.root, self.info, self.key, row)
        start = int(round(row[f"videos/{self.key}/from_timestamp"] * self.fps))
        if path != self._path or start < self._next:
            self._path, self._next = path, 0
            self._frames = read_frames(path, self.fps, self.hw, MAX_FRAMES)
        out = np.empty((n, *self.hw, 3), np.uint8)
        got = 0
        for number, image in self._frames:
            self._next = number + 1
            if number < start:
                continue
            if number != start + got:
                raise LeRobotError(f"{path}: frame {start + got} of episode {row['episode_index']} is missing; re-export the dataset")
            out[got] = image
            got += 1
            if got == n:
                return out
        raise LeRobotError(f"{path} ends after {got} of episode {row['episode_index']}'s {n} frames; re-export the dataset")


def resize_frames(frames: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(n, h, w, 3) -> (n, H, W, 3) uint8; box filter when shrinking, bicubic when growing."""
    if frames.shape[1:3] == tuple(hw):
        return frames
    from PIL import Image

    shrink = hw[0] <= frames.shape[1] and hw[1] <= frames.shape[2]
    method = Image.Resampling.BOX if shrink else Image.Resampling.BICUBIC
    return np.stack([np.asarray(Image.fromarray(f).resize((hw[1], hw[0]), method)) for f in frames])
