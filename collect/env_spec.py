"""The env's action and state layout, importable without SAPIEN (the collect parent process and the
store manifest read it; DESIGN.md section 6 keeps SAPIEN out of the parent).

Actions and states are zero-padded to training.action_dim / training.state_dim;
only the first REAL_ACTION_DIMS / REAL_STATE_DIMS entries mean anything.
"""

from __future__ import annotations

REAL_ACTION_DIMS = 8
REAL_STATE_DIMS = 15
ACTION_LAYOUT = {
    "arm_delta_qpos": slice(0, 7),  # joint deltas in [-1, 1], times environment.action_scale radians
    "gripper": slice(7, 8),  # -1 closed .. +1 open
}
STATE_LAYOUT = {
    "arm_qpos": slice(0, 7),  # radians
    "gripper_width": slice(7, 8),  # metres between the fingers (sum of both finger joints)
    "tcp_pos": slice(8, 11),  # tool centre point, metres, robot base frame
    "tcp_quat_wxyz": slice(11, 15),
}
STATE_BOUND = 10.0  # every state entry (radians, metres, quaternion) lies well inside [-10, 10]
assert max(s.stop for s in STATE_LAYOUT.values()) == REAL_STATE_DIMS
assert max(s.stop for s in ACTION_LAYOUT.values()) == REAL_ACTION_DIMS
