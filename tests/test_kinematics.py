"""Panda forward kinematics (f1.train.models.panda_kinematics) against SAPIEN's Panda as the env builds it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from f1.train.models.panda_kinematics import tcp_pose


def rotation_angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle (rad) between the rotations of unit quaternions a, b (..., 4), signs compared too: -q reads as 2 pi."""
    return 4 * np.arctan2(np.linalg.norm(a - b, axis=-1), np.linalg.norm(a + b, axis=-1))


def test_tcp_pose_matches_sapiens_tcp_link():
    sapien = pytest.importorskip("sapien")
    from f1.collect.rendering import create_render_system
    from f1.collect.robot import ARM_JOINTS, PandaRobot

    scene = sapien.Scene([sapien.physx.PhysxCpuSystem(), create_render_system()])
    robot = PandaRobot(scene, "light", [1.0, 1.0, 1.0], 0.5)
    rng = np.random.default_rng(0)
    lower, upper = robot.lower[:ARM_JOINTS], robot.upper[:ARM_JOINTS]
    configs = rng.uniform(lower, upper, size=(8, ARM_JOINTS)).astype(np.float32)
    configs[0, 5] = 3.5  # joint 6 past pi: PhysX wraps it, which flips the quaternion's sign
    want_pos, want_quat = [], []
    for q in configs:
        robot.reset(q, 0.04)
        np.testing.assert_allclose(robot.qpos()[:ARM_JOINTS], q, atol=1e-6)
        pose = robot.tcp_pose()
        want_pos.append(pose.p)
        want_quat.append(pose.q)
    pos, quat = tcp_pose(torch.from_numpy(configs))
    assert pos.dtype == quat.dtype == torch.float32
    pos_err = np.linalg.norm(pos.numpy() - np.array(want_pos), axis=-1)
    angle_err = rotation_angle(quat.double().numpy(), np.array(want_quat, dtype=np.float64))
    assert pos_err.max() < 1e-4, pos_err
    assert angle_err.max() < 1e-3, angle_err  # the same sign as SAPIEN's, not only the same rotation


def test_tcp_pose_batches_and_differentiates():
    q = torch.rand(2, 3, 7, generator=torch.Generator().manual_seed(0)) * 2 - 1
    q.requires_grad_(True)
    pos, quat = tcp_pose(q)
    assert pos.shape == (2, 3, 3) and quat.shape == (2, 3, 4)
    assert pos.dtype == quat.dtype == torch.float32
    for i in range(2):
        for j in range(3):
            one_pos, one_quat = tcp_pose(q[i, j].detach())
            torch.testing.assert_close(pos[i, j].detach(), one_pos)
            torch.testing.assert_close(quat[i, j].detach(), one_quat)
    torch.testing.assert_close(quat.norm(dim=-1), torch.ones(2, 3))
    (pos.sum() + quat.sum()).backward()
    assert q.grad is not None and torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0
