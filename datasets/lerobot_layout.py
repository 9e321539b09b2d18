"""LeRobot's dataset format v3.0 (lerobot 0.4.x): its paths, constants and the checks on a stranger's info.json.

```
<dataset>/
├── meta/
│   ├── info.json                          codebase_version "v3.0", fps, features, totals, chunks_size,
│   │                                      data_path / video_path (format templates), splits
│   ├── stats.json                         per feature: min max mean std count q01 q10 q50 q90 q99
│   ├── tasks.parquet                      index: the task string; column task_index
│   └── episodes/chunk-000/file-000.parquet  one row per episode: episode_index, tasks, length,
│                                          data/{chunk,file}_index, dataset_{from,to}_index,
│                                          videos/<key>/{chunk_index,file_index,from_timestamp,to_timestamp},
│                                          stats/<feature>/<stat>, and f1's own columns (seed, scene_id, ...)
├── data/chunk-000/file-000.parquet        one row per frame: the features plus timestamp, frame_index,
│                                          episode_index, index, task_index; many episodes a file
└── videos/<key>/chunk-000/file-000.mp4    one stream per file, many episodes one after another
```

File i of a kind lives in chunk i // chunks_size as file i % chunks_size.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

from f1.shared.errors import UserError

CODEBASE_VERSION = "v3.0"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
CHUNK_FILE_PATTERN = "chunk-{chunk_index:03d}/file-{file_index:03d}"
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE_PATTERN + ".parquet"
DATA_PATH = "data/" + CHUNK_FILE_PATTERN + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE_PATTERN + ".mp4"
CHUNKS_SIZE = 1000  # files per chunk folder
DATA_FILE_MB = 100  # LeRobot's defaults: a data file, a video file grow to about this size
VIDEO_FILE_MB = 200
# Columns every frame row has besides the features (LeRobot's DEFAULT_FEATURES).
INDEX_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
F1_INFO = "f1"  # info.json key f1 adds: {state_dim, action_dim, control_mode} of the exported store
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)  # stats.json's q01 ... q99

# What a header from a stranger may claim before f1 allocates anything for it.
MAX_FRAMES = 1 << 31
MAX_EPISODES = 1 << 24
MAX_IMAGE_SIDE = 4096
MAX_VECTOR_DIMS = 4096
MAX_FPS = 1000
TEMPLATE_FIELDS = {"data_path": {"chunk_index", "file_index"}, "video_path": {"video_key", "chunk_index", "file_index"}}


class LeRobotError(UserError):
    """A LeRobot dataset is malformed, unsafe or cannot be mapped; one line naming what and the fix."""


def chunk_file(file_number: int, chunks_size: int = CHUNKS_SIZE) -> dict[str, int]:
    """The n-th file of a kind as template fields: {'chunk_index': n // chunks_size, 'file_index': n % chunks_size}."""
    return {"chunk_index": file_number // chunks_size, "file_index": file_number % chunks_size}


def check_template(name: str, template: Any) -> str:
    """`template` (info.json's data_path or video_path) when it uses only its documented fields, the
    integers with an integer format (`{chunk_index:03d}`) and nothing else: no attribute or item access
    (`{chunk_index.__class__}`), no conversions (`!r`), no positional fields. LeRobotError otherwise."""
    allowed = TEMPLATE_FIELDS[name]
    if not isinstance(template, str) or not template:
        raise LeRobotError(f"info.json's {name} is {template!r}, not a path template; the dataset is not LeRobot v3.0")
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise LeRobotError(f"info.json's {name} {template!r} is not a valid template ({exc}); fix or re-export the dataset") from None
    for _, field, spec, conversion in parts:
        if field is None:
            continue
        if field not in allowed:
            raise LeRobotError(
                f"info.json's {name} {template!r} uses the field {{{field}}}; only {sorted(allowed)} are allowed "
                "(no attribute or item access); fix the template or re-export the dataset"
            )
        if conversion is not None:
            raise LeRobotError(f"info.json's {name} {template!r} uses the conversion !{conversion}; remove it")
        if "{" in spec:
            raise LeRobotError(f"info.json's {name} {template!r} nests a field in a format spec; remove it")
        if field != "video_key" and not _is_integer_format(spec):
            raise LeRobotError(f"info.json's {name} {template!r} formats {field} as {spec!r}; use an integer format like 03d")
        if field == "video_key" and spec:
            raise LeRobotError(f"info.json's {name} {template!r} formats video_key as {spec!r}; use plain {{video_key}}")
    return template


def _is_integer_format(spec: str) -> bool:
    """'', 'd', '03d', '>5d': a width and fill at most, and the integer type."""
    if spec in ("", "d"):
        return True
    return spec.endswith("d") and len(spec) <= 8 and all(c.isdigit() or c in "<>=^0 " for c in spec[:-1])


def resolve_inside(root: Path, relative: str) -> Path:
    """root / relative, resolved; LeRobotError when it lies outside root (`..`, an absolute path, a symlink out)."""
    base = root.resolve()
    path = (base / relative).resolve()
    if not path.is_relative_to(base):
        raise LeRobotError(f"{relative!r} resolves to {path}, outside the dataset folder {base}; refusing to read it")
    return path
