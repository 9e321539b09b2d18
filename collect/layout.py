"""The fixed geometry of the tabletop scene, in metres, world frame (z up, robot base at the origin).

```
        wall (x = WALL_X)          robot base (0, 0, 0) on the table top (z = 0)
   |                     +----------------------------------------------+
   |     y ^             |  o robot   .  .  CLUTTER_REGION  .  .         |   head camera
   |       |             |            .  objects start here  .         |   in front, above,
   |       +--> x        +----------------------------------------------+   looking back at the robot
```
"""

from __future__ import annotations

import numpy as np

# Table: a box whose top face is the plane z = 0.
TABLE_HALF_SIZE = (0.65, 0.75, 0.025)
TABLE_CENTER = (0.25, 0.0, -0.025)
FLOOR_Z = -0.76
# The room: walls on four sides and a ceiling, so that no camera looks into the black void
# (the wrist camera points anywhere). [x_min, x_max], [y_min, y_max], ceiling height.
WALL_X = -0.75  # the wall behind the robot, the head camera's background
ROOM_X = (WALL_X, 2.5)
ROOM_Y = (-2.0, 2.0)
CEILING_Z = 2.0

# Objects start inside this rectangle [x_min, x_max, y_min, y_max], within the Panda's reach.
CLUTTER_REGION = (0.30, 0.72, -0.32, 0.32)
CLUTTER_MARGIN = 0.015  # gap kept between two footprints at the start

# Panda's rest pose (ManiSkill's "rest" keyframe): the hand above the table, looking down.
HOME_ARM_QPOS = np.array([0.0, np.pi / 8, 0.0, -5 * np.pi / 8, 0.0, 3 * np.pi / 4, np.pi / 4], dtype=np.float32)
GRIPPER_OPEN = 0.04  # per finger; the gripper width is twice this

# Cameras: the head camera is fixed; the wrist camera rides on panda_hand. WRIST_EYE and WRIST_TARGET
# are in the hand frame (z towards the finger tips, fingers opening along y): the camera sits beside
# the hand and looks along the gripper, the finger tips at the bottom of its picture.
HEAD_EYE = (1.15, 0.55, 0.8)
HEAD_TARGET = (0.28, 0.0, 0.18)
HEAD_FOVY = np.deg2rad(55.0)
WRIST_EYE = (0.05, 0.0, 0.045)
WRIST_TARGET = (0.0, 0.0, 0.3)
WRIST_FOVY = np.deg2rad(75.0)
CAMERA_NEAR = 0.01
CAMERA_FAR = 10.0
