"""What an f1 step becomes in a LeRobot v3.0 dataset, and back: feature names, shapes, dtypes, dim names.

| f1 store (per step)          | LeRobot feature            | dtype, shape                                      |
|------------------------------|----------------------------|---------------------------------------------------|
| <camera>_rgb (H, W, 3) uint8 | observation.images.<camera>| video, [H, W, 3]                                  |
| state[:real_state_dims]      | observation.state          | float32, [real_state_dims], named                 |
| action[:real_action_dims]    | action                     | float32, [real_action_dims], named                |
| is_last (see the exporter)   | next.done                  | bool, [1]: the episode's last frame               |
| is_first, is_terminal        | is_first, is_terminal      | bool, [1]                                         |
| object_pose (slots, 7)       | object_pose                | float32, [slots * 7], named object<i>.<x..qz>     |
| object_valid (slots,)        | object_valid               | bool, [slots]                                     |
| object_contact ()            | object_contact             | bool, [1]                                         |
| <camera>_pose (4, 4)         | <camera>_pose              | float32, [16], row-major, named r<i>c<j>          |
| <camera>_intrinsics (3, 3)   | <camera>_intrinsics        | float32, [9], row-major, named r<i>c<j>           |
| <camera>_depth (H, W) uint16 | (not exported)             | LeRobot has no lossless 16-bit video feature      |

The extra keys carry no `observation.` or `action` prefix, so LeRobot's policies do not take them
for inputs. The dim names of a Panda store are f1's env layout (collect/env_spec.py; a test keeps the
two equal, since f1.datasets does not import f1.collect); other stores get state_0, state_1, ...
"""

from __future__ import annotations

from typing import Any

from f1.datasets.schema import OBJECT_POSE_DIM, StoreSpec

IMAGE_PREFIX = "observation.images."
STATE = "observation.state"
ACTION = "action"
DONE = "next.done"
FLAG_FEATURES = ("is_first", "is_terminal")

PANDA_ACTION_NAMES = [f"joint{i}_delta" for i in range(1, 8)] + ["gripper"]
PANDA_STATE_NAMES = (
    [f"joint{i}_pos" for i in range(1, 8)] + ["gripper_width"] + ["tcp_x", "tcp_y", "tcp_z"] + ["tcp_qw", "tcp_qx", "tcp_qy", "tcp_qz"]
)
POSE_NAMES = ("x", "y", "z", "qw", "qx", "qy", "qz")


def _names(prefix: str, count: int, panda: list[str], spec: StoreSpec) -> list[str]:
    if spec.control_mode == "delta_qpos" and count == len(panda):
        return list(panda)
    return [f"{prefix}_{i}" for i in range(count)]


def export_features(spec: StoreSpec, video_info: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """info.json's features for a store of `spec` (the index columns excepted)."""
    h, w = spec.image_hw
    features: dict[str, dict[str, Any]] = {}
    for camera in spec.cameras:
        features[IMAGE_PREFIX + camera] = {
            "dtype": "video",
            "shape": [h, w, 3],
            "names": ["height", "width", "channels"],
            "info": video_info,
        }
    features[STATE] = {
        "dtype": "float32",
        "shape": [spec.real_state_dims],
        "names": _names("state", spec.real_state_dims, PANDA_STATE_NAMES, spec),
    }
    features[ACTION] = {
        "dtype": "float32",
        "shape": [spec.real_action_dims],
        "names": _names("action", spec.real_action_dims, PANDA_ACTION_NAMES, spec),
    }
    for key in (DONE, *FLAG_FEATURES):
        features[key] = {"dtype": "bool", "shape": [1], "names": None}
    if spec.object_slots:
        slots = spec.object_slots
        features["object_pose"] = {
            "dtype": "float32",
            "shape": [slots * OBJECT_POSE_DIM],
            "names": [f"object{i}.{p}" for i in range(slots) for p in POSE_NAMES],
        }
        features["object_valid"] = {"dtype": "bool", "shape": [slots], "names": [f"object{i}" for i in range(slots)]}
        features["object_contact"] = {"dtype": "bool", "shape": [1], "names": None}
    for key in spec.camera_keys:
        side = 4 if key.endswith("_pose") else 3
        features[key] = {"dtype": "float32", "shape": [side * side], "names": [f"r{i}c{j}" for i in range(side) for j in range(side)]}
    return features


def camera_features(features: dict[str, Any], names: list[str]) -> bool:
    """Whether a dataset carries f1's pose and intrinsics features for each camera named (its video keys' suffixes)."""
    want = {f"{name}_pose": [16] for name in names} | {f"{name}_intrinsics": [9] for name in names}
    return bool(names) and all(k in features and features[k]["dtype"] == "float32" and features[k]["shape"] == s for k, s in want.items())
