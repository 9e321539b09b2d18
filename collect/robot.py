"""The fixed-base Franka Panda: loading, joint position drives, state readout.

Light meshes: panda_v2's visual meshes hold ~150k triangles; its collision
meshes hold ~2.3k. On lavapipe the render cost grows with the triangles drawn,
so by default (`environment.robot_meshes: light`) the collision meshes are drawn
as the visual shapes, in the Panda's white and dark grey: frames cost ~10x
less and the arm keeps its shape. `full` keeps the detailed meshes (for a
GPU renderer, where they are cheap).

Gravity is switched off on the robot's links: with it on, the PD drives sag
and the commanded deltas would not be what the joints do (ManiSkill instead
adds passive forces every step, which costs a call per substep).
"""

from __future__ import annotations

from typing import Literal, Optional

import numpy as np
import sapien

from f1.collect.assets import panda_urdf_path
from f1.collect.layout import GRIPPER_OPEN

ARM_JOINTS = 7
FINGER_JOINTS = 2
TCP_LINK = "panda_hand_tcp"
HAND_LINK = "panda_hand"
# PD gains. ManiSkill's (1e3, 1e2) lag ~0.09 rad behind an OU target stream at 20 Hz; these track it
# within ~0.04 rad and settle within ~3% without overshoot (measured over the 7 joints).
ARM_STIFFNESS, ARM_DAMPING, ARM_FORCE_LIMIT = 1e4, 5e2, 100.0
FINGER_STIFFNESS, FINGER_DAMPING, FINGER_FORCE_LIMIT = 1e3, 1e2, 100.0
# Colours of the light meshes: the Panda is white with dark joints and fingers.
WHITE = (0.9, 0.92, 0.93)
DARK = (0.12, 0.12, 0.13)
DARK_LINKS = ("panda_link0", "panda_link7", "panda_leftfinger", "panda_rightfinger")

RobotMeshes = Literal["light", "full"]


def _light_shapes(link, tint: np.ndarray, roughness: float) -> list[sapien.render.RenderShape]:
    """The link's collision shapes (STL meshes, finger boxes) as visual shapes, in the Panda's colours."""
    color = np.asarray(DARK if link.name in DARK_LINKS else WHITE) * tint
    material = sapien.render.RenderMaterial(base_color=[*color, 1.0], roughness=roughness)
    shapes = []
    for record in link.collision_records:
        if record.type == "convex_mesh":  # the URDF's STL, not the convex hull PhysX builds from it
            shape = sapien.render.RenderShapeTriangleMesh(record.filename, record.scale, material)
        elif record.type == "box":
            shape = sapien.render.RenderShapeBox(record.scale, material)  # scale holds the half size
        else:
            raise AssertionError(("unexpected Panda collision shape", link.name, record.type))
        shape.local_pose = record.pose
        shapes.append(shape)
    return shapes


def _full_shapes(visual_records, tint: np.ndarray, roughness: float) -> list[sapien.render.RenderShape]:
    """The detailed visual meshes, each part copied with a tinted material of its own.

    SAPIEN caches loaded meshes with their materials across scenes, so tinting
    those materials in place would tint every later scene again.
    """
    shapes = []
    for record in visual_records:
        assert record.type == "file", ("unexpected Panda visual shape", record.type)
        source = sapien.render.RenderShapeTriangleMesh(record.filename, record.scale)
        for part in source.parts:
            base = part.material
            color = [*(np.asarray(base.base_color[:3]) * tint), base.base_color[3]]
            material = sapien.render.RenderMaterial(base_color=color, roughness=roughness, metallic=base.metallic)
            shape = sapien.render.RenderShapeTriangleMesh(
                part.vertices, part.triangles, part.get_vertex_normal(), part.get_vertex_uv(), material
            )
            shape.local_pose = record.pose
            shapes.append(shape)
    return shapes


class PandaRobot:
    """The Panda in `scene`, base at the origin, driven by joint position targets."""

    def __init__(
        self, scene: sapien.Scene, meshes: RobotMeshes, tint: list[float], roughness: float,
        assets_dir: Optional[str] = None,
    ):  # fmt: skip
        loader = scene.create_urdf_loader()
        loader.fix_root_link = True
        # assets_dir: environment.robot_assets_dir; None falls back to F1_ROBOT_ASSETS, then mani-skill.
        builder = loader.load_file_as_articulation_builder(str(panda_urdf_path(assets_dir)))
        # Build without visuals, then give each link freshly made shapes and materials.
        visuals = {link.name: link.visual_records for link in builder.link_builders}
        link_builders = {link.name: link for link in builder.link_builders}
        for link in builder.link_builders:
            link.visual_records = []
        self.articulation = builder.build(fix_root_link=True)
        self.articulation.name = "panda"
        tint_array = np.asarray(tint)
        for link in self.articulation.links:
            if meshes == "light":
                shapes = _light_shapes(link_builders[link.name], tint_array, roughness)
            else:
                shapes = _full_shapes(visuals[link.name], tint_array, roughness)
            if shapes:
                render = sapien.render.RenderBodyComponent()
                for shape in shapes:
                    render.attach(shape)
                link.entity.add_component(render)
        for link in self.articulation.links:
            link.disable_gravity = True
        self.joints = self.articulation.active_joints
        assert len(self.joints) == ARM_JOINTS + FINGER_JOINTS, [j.name for j in self.joints]
        for joint in self.joints[:ARM_JOINTS]:
            joint.set_drive_properties(ARM_STIFFNESS, ARM_DAMPING, ARM_FORCE_LIMIT)
        for joint in self.joints[ARM_JOINTS:]:
            joint.set_drive_properties(FINGER_STIFFNESS, FINGER_DAMPING, FINGER_FORCE_LIMIT)
        limits = self.articulation.get_qlimit()  # (9, 2)
        self.lower = limits[:, 0].astype(np.float32)
        self.upper = limits[:, 1].astype(np.float32)
        links = {link.name: link for link in self.articulation.links}
        self.tcp = links[TCP_LINK]
        self.hand = links[HAND_LINK]

    def reset(self, arm_qpos: np.ndarray, gripper: float) -> None:
        """Put the joints at `arm_qpos` (clipped to the limits) at rest, with targets there too."""
        qpos = np.clip(np.append(arm_qpos, [gripper, gripper]).astype(np.float32), self.lower, self.upper)
        self.articulation.set_qpos(qpos)
        self.articulation.set_qvel(np.zeros_like(qpos))
        self.set_targets(qpos)

    def set_targets(self, qpos_targets: np.ndarray) -> None:
        """Drive targets for the 9 active joints (arm, then both fingers)."""
        for joint, target in zip(self.joints, qpos_targets.tolist()):
            joint.set_drive_target(target)

    def qpos(self) -> np.ndarray:
        return self.articulation.get_qpos()  # (9,) float32

    def qvel(self) -> np.ndarray:
        return self.articulation.get_qvel()  # (9,) float32, rad/s

    def tcp_pose(self) -> sapien.Pose:
        """The tool centre point between the finger tips, in the world (= robot base) frame."""
        return self.tcp.entity_pose


def gripper_command_to_finger(command: float) -> float:
    """[-1, 1] -> per-finger target: -1 closed (0 m), +1 open (GRIPPER_OPEN), linear between."""
    return (min(max(command, -1.0), 1.0) + 1.0) * 0.5 * GRIPPER_OPEN
