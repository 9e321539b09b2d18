"""`f1 dataset convert STORE DIR --format lerobot`: an f1 store as a LeRobot v3.0 dataset, without LeRobot.

Frames: an f1 episode has N = T + 1 steps and its last step's action is padding, so by default that
step is not exported (T frames, each with a real action); `--keep-last` keeps it (N frames, the last
with a zero action). `next.done` marks an episode's last exported frame, and `is_terminal` is set there
when the episode ended in a terminal state (its last f1 step's flag, carried to that frame when the
step itself is dropped). lerobot_features.py lists what maps to what.

Streaming: one episode in memory at a time; its frames go to the current data file (Parquet, a row
group per episode) and the current video file of each camera, which hold many episodes each and
roll over near LeRobot's sizes (100 MB of frame rows, 200 MB of video). Episode rows go to
meta/episodes in batches; the stats are running sums. Crash safety: everything is written into
`<dst>.partial` beside `dst` and renamed onto `dst` only when finished, so a half-written dataset is
never where a finished one is expected (a rerun deletes the leftover `.partial`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from f1.datasets.lerobot_features import ACTION, DONE, IMAGE_PREFIX, STATE, export_features
from f1.datasets.lerobot_layout import (
    CHUNKS_SIZE,
    CODEBASE_VERSION,
    DATA_FILE_MB,
    F1_INFO,
    DATA_PATH,
    EPISODES_PATH,
    INDEX_FEATURES,
    INFO_PATH,
    STATS_PATH,
    TASKS_PATH,
    VIDEO_FILE_MB,
    VIDEO_PATH,
    LeRobotError,
    chunk_file,
)
from f1.datasets.lerobot_stats import StatsAggregate, image_stats, vector_stats
from f1.datasets.lerobot_video import CODECS, VideoFileWriter, check_codec
from f1.datasets.progress import count_bar
from f1.datasets.reader import open_store
from f1.datasets.s3 import is_s3, store_path
from f1.datasets.schema import OBJECT_POSE_DIM, EpisodeMeta, StoreSpec

EPISODE_ROWS_PER_WRITE = 256  # meta/episodes rows buffered before a write
EPISODES_PER_META_FILE = 10_000
PARTIAL_SUFFIX = ".partial"


def main(
    src: str,
    dst: str,
    lossless: bool = False,
    keep_last: bool = False,
    task: str | None = None,
    max_file_frames: int | None = None,
) -> None:
    """Write the store at `src` (a folder or s3://) as a LeRobot v3.0 dataset in the new folder `dst`.

    max_file_frames: roll data and video files over after this many frames (the default rolls by size).
    """
    if is_s3(dst):
        raise LeRobotError(f"{dst}: a LeRobot dataset is written to a local folder; upload it afterwards (e.g. `huggingface-cli upload`)")
    dst_path = Path(dst)
    if dst_path.exists() and (not dst_path.is_dir() or any(dst_path.iterdir())):
        raise LeRobotError(f"{dst_path} exists and is not empty; convert into a new directory")
    reader = open_store(store_path(src))
    spec = reader.spec
    codec = "lossless" if lossless else "av1"
    check_codec(codec, *spec.image_hw)
    config = reader.manifest.get("collection_config") or {}
    environment = config.get("environment", {})
    task = task or environment.get("task_name") or "f1"
    partial = dst_path.with_name(dst_path.name + PARTIAL_SUFFIX)
    shutil.rmtree(partial, ignore_errors=True)  # left by a killed run: ours by name, never finished
    partial.mkdir(parents=True)
    writer = DatasetWriter(partial, spec, codec, task, environment.get("embodiment", "panda"), keep_last, max_file_frames)
    started = time.perf_counter()
    try:
        with count_bar("export", len(reader.episodes), remaining=True) as advance:
            for shard in reader.shards:
                for meta, arrays in reader.iter_shard(shard["name"]):
                    writer.add_episode(arrays, meta)
                    advance()
        writer.finalize()
    except BaseException:
        writer.abort()
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if dst_path.exists():
        dst_path.rmdir()  # empty (checked above)
    os.rename(partial, dst_path)
    seconds = time.perf_counter() - started
    skipped = f", {writer.skipped} one-step episodes skipped (no action)" if writer.skipped else ""
    if writer.spec.depth_keys:
        skipped += f"; {', '.join(writer.spec.depth_keys)} not exported (LeRobot has no lossless 16-bit video feature)"
    print(
        f"wrote {dst_path}: LeRobot {CODEBASE_VERSION}, {writer.episode_index} episodes, {writer.frame_index} frames "
        f"({writer.frame_index / max(seconds, 1e-9):.0f} frames/s), video {CODECS[codec][0]}{skipped}"
    )


class DatasetWriter:
    """Episodes in, a LeRobot v3.0 dataset out under `root`; `finalize()` writes the meta files."""

    def __init__(
        self,
        root: Path,
        spec: StoreSpec,
        codec: str,
        task: str,
        robot_type: str,
        keep_last: bool,
        max_file_frames: int | None,
    ):
        import pyarrow as pa

        self.pa = pa
        self.root, self.spec, self.codec, self.task = root, spec, codec, task
        self.robot_type, self.keep_last = robot_type, keep_last
        self.fps = spec.control_freq
        self.features = export_features(spec, self._video_info())
        self.video_keys = [IMAGE_PREFIX + c for c in spec.cameras]
        self.frame_bytes = 8 * 4 + 4 * (spec.real_state_dims + spec.real_action_dims) + 3 + spec.object_slots * (4 * OBJECT_POSE_DIM + 1)
        self.frame_bytes += 4 * 25 * len(spec.cameras) if spec.camera_geometry else 0
        self.max_file_frames = max_file_frames
        self.episode_index = self.frame_index = self.skipped = 0
        self.file_number = 0  # data and video files roll over together
        self.file_frames = 0
        self.data_writer = None
        self.videos: dict[str, VideoFileWriter] = {}
        self.meta_writer = None
        self.meta_rows: list[dict[str, Any]] = []
        self.stats = {key: StatsAggregate() for key in [*self.features, *INDEX_FEATURES]}

    def _video_info(self) -> dict[str, Any]:
        """The `info` LeRobot's writer records for a video feature (what get_video_info reads back)."""
        name, pix_fmt, _ = CODECS[self.codec]
        canonical = {"libsvtav1": "av1", "libx264rgb": "h264"}[name]
        h, w = self.spec.image_hw
        return {
            "video.height": h,
            "video.width": w,
            "video.codec": canonical,
            "video.pix_fmt": pix_fmt,
            "video.is_depth_map": False,
            "video.fps": self.spec.control_freq,
            "video.channels": 3,
            "has_audio": False,
        }

    # -- one episode ------------------------------------------------------------------------

    def add_episode(self, arrays: dict[str, np.ndarray], meta: EpisodeMeta) -> None:
        steps = len(arrays["state"])
        n = steps if self.keep_last else steps - 1  # frames exported
        if n < 1:
            self.skipped += 1
            return
        if self.data_writer is not None and self._file_full(n):
            self._close_files()
            self.file_number += 1
        if self.data_writer is None:
            self._open_files()
        columns = self._frame_columns(arrays, n)
        self.data_writer.write_table(self._frame_table(columns))
        video_from = self.file_frames / self.fps
        for camera, key in zip(self.spec.cameras, self.video_keys):
            self.videos[key].add(arrays[f"{camera}_rgb"][:n])
        episode_stats = {key: vector_stats(values) for key, values in columns.items()}
        episode_stats.update({key: image_stats(arrays[f"{c}_rgb"][:n]) for c, key in zip(self.spec.cameras, self.video_keys)})
        for key, stats in episode_stats.items():
            self.stats[key].add(stats)
        self._add_episode_row(meta, n, video_from, episode_stats)
        self.episode_index += 1
        self.frame_index += n
        self.file_frames += n

    def _frame_columns(self, arrays: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        """Every non-video feature and index column of the episode's n exported frames: {key: (n, d) or (n,)}."""
        spec, k = self.spec, np.arange(n)
        done = k == n - 1
        columns: dict[str, np.ndarray] = {
            STATE: arrays["state"][:n, : spec.real_state_dims],
            ACTION: arrays["action"][:n, : spec.real_action_dims],
            DONE: done,
            "is_first": arrays["is_first"][:n],
            "is_terminal": done & bool(arrays["is_terminal"][-1]),  # the episode's end, on its last frame
        }
        if spec.object_slots:
            columns["object_pose"] = arrays["object_pose"][:n].reshape(n, -1)
            columns["object_valid"] = arrays["object_valid"][:n]
            columns["object_contact"] = arrays["object_contact"][:n]
        for key in spec.camera_keys:
            columns[key] = arrays[key][:n].reshape(n, -1)  # (n, 16) or (n, 9), row-major
        columns.update(
            timestamp=(k / self.fps).astype(np.float32),
            frame_index=k.astype(np.int64),
            episode_index=np.full(n, self.episode_index, np.int64),
            index=(self.frame_index + k).astype(np.int64),
            task_index=np.zeros(n, np.int64),
        )
        return columns

    def _frame_table(self, columns: dict[str, np.ndarray]):
        """A Parquet table: (n, d) columns as fixed-size lists (Hugging Face's List of length d), (n,) as scalars."""
        pa = self.pa
        arrays, names = [], []
        for key, values in columns.items():
            if values.ndim == 2:
                flat = pa.array(np.ascontiguousarray(values).reshape(-1))
                arrays.append(pa.FixedSizeListArray.from_arrays(flat, values.shape[1]))
            else:
                arrays.append(pa.array(values))
            names.append(key)
        return pa.Table.from_arrays(arrays, names=names)

    def _add_episode_row(self, meta: EpisodeMeta, n: int, video_from: float, stats: dict[str, dict[str, np.ndarray]]) -> None:
        meta_file = chunk_file(self.episode_index // EPISODES_PER_META_FILE, CHUNKS_SIZE)
        data_file = chunk_file(self.file_number, CHUNKS_SIZE)
        row: dict[str, Any] = {
            "episode_index": self.episode_index,
            "tasks": [self.task],
            "length": n,
            "data/chunk_index": data_file["chunk_index"],
            "data/file_index": data_file["file_index"],
            "dataset_from_index": self.frame_index,
            "dataset_to_index": self.frame_index + n,
        }
        for key in self.video_keys:
            row.update(
                {
                    f"videos/{key}/chunk_index": data_file["chunk_index"],
                    f"videos/{key}/file_index": data_file["file_index"],
                    f"videos/{key}/from_timestamp": video_from,
                    f"videos/{key}/to_timestamp": video_from + n / self.fps,
                }
            )
        for key, feature_stats in stats.items():
            row.update({f"stats/{key}/{name}": value.tolist() for name, value in feature_stats.items()})
        row.update(
            {
                "meta/episodes/chunk_index": meta_file["chunk_index"],
                "meta/episodes/file_index": meta_file["file_index"],
                # f1's own: the episode as f1 knows it, so `convert --format zarr` gives it back.
                "episode_id": meta.episode_id,
                "seed": meta.seed,
                "scene_id": meta.scene_id,
                "randomization": json.dumps(meta.randomization, sort_keys=True),
            }
        )
        self.meta_rows.append(row)
        if len(self.meta_rows) >= EPISODE_ROWS_PER_WRITE or (self.episode_index + 1) % EPISODES_PER_META_FILE == 0:
            self._flush_meta_rows()

    # -- files ------------------------------------------------------------------------------

    def _file_full(self, n: int) -> bool:
        if self.max_file_frames is not None:
            return self.file_frames + n > self.max_file_frames
        video_bytes = max(v.bytes for v in self.videos.values())
        return (self.file_frames + n) * self.frame_bytes > DATA_FILE_MB << 20 or video_bytes > VIDEO_FILE_MB << 20

    def _open_files(self) -> None:
        import pyarrow.parquet as pq

        fields = chunk_file(self.file_number, CHUNKS_SIZE)
        path = self.root / DATA_PATH.format(**fields)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.data_writer = pq.ParquetWriter(path, self._frame_schema(), compression="snappy")
        h, w = self.spec.image_hw
        for key in self.video_keys:
            self.videos[key] = VideoFileWriter(self.root / VIDEO_PATH.format(video_key=key, **fields), self.fps, self.codec, h, w)
        self.file_frames = 0

    def _frame_schema(self):
        pa = self.pa
        types = {"float32": pa.float32(), "bool": pa.bool_(), "int64": pa.int64()}
        fields = []
        for key, feature in {**self.features, **INDEX_FEATURES}.items():
            if feature["dtype"] == "video":
                continue
            scalar = types[feature["dtype"]]
            if key in (STATE, ACTION, "object_pose", "object_valid", *self.spec.camera_keys):
                fields.append(pa.field(key, pa.list_(scalar, feature["shape"][0])))
            else:
                fields.append(pa.field(key, scalar))
        return pa.schema(fields)

    def _close_files(self) -> None:
        if self.data_writer is not None:
            self.data_writer.close()
            self.data_writer = None
        for video in self.videos.values():
            video.close()
        self.videos = {}

    def _flush_meta_rows(self) -> None:
        import pyarrow.parquet as pq

        if not self.meta_rows:
            return
        table = self.pa.Table.from_pylist(self.meta_rows)
        first = self.meta_rows[0]
        path = self.root / EPISODES_PATH.format(
            chunk_index=first["meta/episodes/chunk_index"], file_index=first["meta/episodes/file_index"]
        )
        if self.meta_writer is None or Path(self.meta_writer.where) != path:
            if self.meta_writer is not None:
                self.meta_writer.close()
            path.parent.mkdir(parents=True, exist_ok=True)
            self.meta_writer = pq.ParquetWriter(path, table.schema, compression="snappy")
        self.meta_writer.write_table(table)
        self.meta_rows = []

    def abort(self) -> None:
        """Close what is open after a failure (the caller deletes the folder)."""
        try:
            self._close_files()
            if self.meta_writer is not None:
                self.meta_writer.close()
        except Exception:  # noqa: BLE001 - the original error is the one to report
            pass

    def finalize(self) -> None:
        """Close the last files; write info.json, stats.json and tasks.parquet."""
        import pyarrow.parquet as pq

        if self.episode_index == 0:
            raise LeRobotError("the store has no episode with an action to export; collect some first")
        self._close_files()
        self._flush_meta_rows()
        self.meta_writer.close()
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": self.robot_type,
            "total_episodes": self.episode_index,
            "total_frames": self.frame_index,
            "total_tasks": 1,
            "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": DATA_FILE_MB,
            "video_files_size_in_mb": VIDEO_FILE_MB,
            "fps": self.fps,
            "splits": {"train": f"0:{self.episode_index}"},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH,
            "features": {**self.features, **INDEX_FEATURES},
            # f1's own (LeRobot ignores it): the padded sizes and control mode, so an import gives the same spec back.
            F1_INFO: {"state_dim": self.spec.state_dim, "action_dim": self.spec.action_dim, "control_mode": self.spec.control_mode},
        }
        (self.root / INFO_PATH).write_text(json.dumps(info, indent=4))
        stats = {key: aggregate.result() for key, aggregate in self.stats.items()}
        (self.root / STATS_PATH).write_text(json.dumps(stats, indent=4))
        tasks = self.pa.table({"task_index": self.pa.array([0], self.pa.int64()), "__index_level_0__": [self.task]})
        # pandas' index column, as LeRobot's DataFrame.to_parquet writes it: the task string is the index.
        pandas_meta = {
            "index_columns": ["__index_level_0__"],
            "column_indexes": [],
            "columns": [
                {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64", "metadata": None},
                {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
            ],
            "pandas_version": "2.2.0",
        }
        tasks = tasks.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})
        pq.write_table(tasks, self.root / TASKS_PATH)
