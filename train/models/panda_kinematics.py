"""Franka Panda forward kinematics in torch: 7 arm joint angles -> the tool centre point's pose.

The imagination phase predicts joint positions, while the world model's state
input also holds the tool pose (STATE_LAYOUT tcp_pos 8:11, tcp_quat_wxyz 11:15);
`tcp_pose` fills those from the predicted joints as the env reports them: the
pose of the link "panda_hand_tcp" in the world frame, which is the robot base
frame (collect/robot.py puts the fixed base at the origin).

The chain is that of mani-skill's assets/robots/panda/panda_v2.urdf, the file
the env loads (collect/assets.py). Its arm joint origins are the Panda's
modified (Craig) DH parameters (a, d, alpha): origin xyz = (a, -d sin alpha,
d cos alpha), rpy = (alpha, 0, 0), joint axis z; then panda_joint8 (z 0.107),
panda_hand_joint (yaw -pi/4) and panda_hand_tcp_joint (z 0.1034). The numbers
are copied, not read, so that this works without SAPIEN or mani-skill;
tests/test_kinematics.py checks them against SAPIEN.

The quaternion's sign is SAPIEN's (PhysX's), not a canonical one: the product
of the per-joint quaternions, each joint's angle wrapped into [-pi, pi) first.
So the stored quaternion is matched exactly, not just up to sign (its w takes
both signs: the hand points down, w ~ 0). Batched and differentiable; no SAPIEN.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

DH_A = (0.0, 0.0, 0.0, 0.0825, -0.0825, 0.0, 0.088)
DH_D = (0.333, 0.0, 0.316, 0.0, 0.384, 0.0, 0.0)
DH_ALPHA = (0.0, -math.pi / 2, math.pi / 2, math.pi / 2, -math.pi / 2, math.pi / 2, math.pi / 2)
FLANGE_D = 0.107  # panda_joint8: panda_link7 -> panda_link8
HAND_YAW = -math.pi / 4  # panda_hand_joint: panda_link8 -> panda_hand
TCP_D = 0.1034  # panda_hand_tcp_joint: panda_hand -> panda_hand_tcp


def _quat_mul(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product of (..., 4) wxyz quaternions (broadcast)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], -1)  # fmt: skip


def _rotate(q: Tensor, v: Tensor) -> Tensor:
    """(..., 3) vectors `v` rotated by the unit quaternions `q` (..., 4)."""
    u = q[..., 1:].expand(*torch.broadcast_shapes(q.shape[:-1], v.shape[:-1]), 3)
    t = 2 * torch.linalg.cross(u, v.expand_as(u))
    return v + q[..., :1] * t + torch.linalg.cross(u, t)


def tcp_pose(q: Tensor) -> tuple[Tensor, Tensor]:
    """q (..., 7) arm joint angles (rad) -> (pos (..., 3) metres, quat_wxyz (..., 4)), in q's dtype and device.

    The pose of panda_hand_tcp in the robot base frame: what the env stores as state[8:11] and state[11:15].
    """
    const = dict(dtype=q.dtype, device=q.device)
    half = (torch.remainder(q + math.pi, 2 * math.pi) - math.pi) / 2  # PhysX's wrap, hence its sign
    joint_quats = torch.stack([torch.cos(half), *[torch.zeros_like(half)] * 2, torch.sin(half)], -1)  # (..., 7, 4)
    pos = torch.zeros(*q.shape[:-1], 3, **const)
    quat = torch.tensor([1.0, 0.0, 0.0, 0.0], **const).expand(*q.shape[:-1], 4)
    for i, (a, d, alpha) in enumerate(zip(DH_A, DH_D, DH_ALPHA)):
        pos = pos + _rotate(quat, torch.tensor([a, -d * math.sin(alpha), d * math.cos(alpha)], **const))
        quat = _quat_mul(quat, torch.tensor([math.cos(alpha / 2), math.sin(alpha / 2), 0.0, 0.0], **const))
        quat = _quat_mul(quat, joint_quats[..., i, :])
    pos = pos + _rotate(quat, torch.tensor([0.0, 0.0, FLANGE_D], **const))
    quat = _quat_mul(quat, torch.tensor([math.cos(HAND_YAW / 2), 0.0, 0.0, math.sin(HAND_YAW / 2)], **const))
    pos = pos + _rotate(quat, torch.tensor([0.0, 0.0, TCP_D], **const))
    return pos, quat
