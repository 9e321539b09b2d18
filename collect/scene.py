"""The SAPIEN 3 tabletop scene: table, wall, floor, lights, clutter, the Panda and its cameras.

A `TabletopScene` is built from `SceneParams` (f1.collect.randomization), so
everything it shows comes from one seed; `place(EpisodeParams)` puts the robot
and the objects where an episode starts. Cameras:
- `head`: fixed in front of the table, looking back at the robot and the clutter;
- `wrist`: mounted on panda_hand, looking along the gripper towards the finger tips.
Only the cameras asked for are created (a wrist-only env renders one view).
Geometry lives in f1.collect.layout; render settings in f1.collect.rendering.

For exploration metrics the scene also reports the clutter's poses
(`object_poses`) and whether a robot link touches a clutter object
(`robot_touches_objects`, from SAPIEN's contacts: a contact point between a
link and an object closer than TOUCH_SEPARATION_M, or pushing with an impulse).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import sapien

from f1.collect import layout
from f1.collect.randomization import EpisodeParams, ObjectSpec, SceneParams, SurfaceSpec
from f1.collect.rendering import camera_intrinsics_cv, camera_pose_cv, create_render_system, read_depth_mm, read_rgb
from f1.collect.robot import PandaRobot, RobotMeshes

CAMERA_NAMES = ("head", "wrist")
TEXTURE_PIXELS = 128
# Cylinders in SAPIEN lie along x; this turns them upright (90 degrees about y).
UPRIGHT = sapien.Pose(q=[np.sqrt(0.5), 0.0, np.sqrt(0.5), 0.0])
DROP_GAP = 1e-3  # objects start this far above the table, never in it
# An object that found no free spot waits on the floor under the table, out of every camera's view.
PARKING = (layout.WALL_X + 0.3, 0.0, layout.FLOOR_Z)
# PhysX reports contact points up to the shapes' contact offsets apart (positive separation, no force):
# a link and an object touch when a point is this close, or when it carries an impulse.
TOUCH_SEPARATION_M = 1e-3


def look_at(eye: Sequence[float], target: Sequence[float], up: Sequence[float] = (0.0, 0.0, 1.0)) -> sapien.Pose:
    """Pose of a SAPIEN camera (x forward, y left, z up) at `eye` looking at `target`."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    forward = (target - eye) / np.linalg.norm(target - eye)
    left = np.cross(up, forward)
    assert np.linalg.norm(left) > 1e-6, ("up is parallel to the viewing direction", up, forward)
    left /= np.linalg.norm(left)
    matrix = np.eye(4)
    matrix[:3, :3] = np.column_stack([forward, left, np.cross(forward, left)])
    matrix[:3, 3] = eye
    return sapien.Pose(matrix.astype(np.float32))


def surface_texture(spec: SurfaceSpec, pixels: int = TEXTURE_PIXELS) -> Optional[np.ndarray]:
    """A (pixels, pixels, 4) uint8 procedural texture for `spec`, or None for a plain colour."""
    if spec.texture == "plain":
        return None
    cell = np.arange(pixels) * spec.tiles // pixels  # (pixels,) tile index along one axis
    if spec.texture == "checker":
        second = (cell[:, None] + cell[None, :]) % 2 == 1  # (pixels, pixels)
    else:  # stripes
        second = np.broadcast_to(cell[:, None] % 2 == 1, (pixels, pixels))
    rgb = np.where(second[..., None], spec.color2, spec.color)  # (pixels, pixels, 3)
    alpha = np.ones((pixels, pixels, 1))
    return np.round(np.concatenate([rgb, alpha], axis=-1) * 255).astype(np.uint8)


def surface_material(spec: SurfaceSpec) -> sapien.render.RenderMaterial:
    material = sapien.render.RenderMaterial(base_color=[*spec.color, 1.0], roughness=0.8)
    texture = surface_texture(spec)
    if texture is not None:
        material.base_color = [1.0, 1.0, 1.0, 1.0]  # the texture carries the colours
        material.base_color_texture = sapien.render.RenderTexture2D(texture, "R8G8B8A8Unorm", filter_mode="nearest")
    return material


def room_panels() -> list[tuple[tuple[float, float, float], tuple[float, float, float]]]:
    """(half size, centre) of the four walls and the ceiling: thin boxes around the floor."""
    (x0, x1), (y0, y1), z0, z1 = layout.ROOM_X, layout.ROOM_Y, layout.FLOOR_Z, layout.CEILING_Z
    cx, cy, cz = (x0 + x1) / 2, (y0 + y1) / 2, (z0 + z1) / 2
    hx, hy, hz, t = (x1 - x0) / 2, (y1 - y0) / 2, (z1 - z0) / 2, 0.01
    return [
        ((t, hy, hz), (x0, cy, cz)),  # behind the robot
        ((t, hy, hz), (x1, cy, cz)),  # behind the head camera
        ((hx, t, hz), (cx, y0, cz)),
        ((hx, t, hz), (cx, y1, cz)),
        ((hx, hy, t), (cx, cy, z1)),  # ceiling
    ]


def _visual_only_box(scene: sapien.Scene, half_size, pose: sapien.Pose, material) -> sapien.Entity:
    entity = sapien.Entity()
    render = sapien.render.RenderBodyComponent()
    render.attach(sapien.render.RenderShapeBox(half_size, material))
    entity.add_component(render)
    entity.set_pose(pose)
    scene.add_entity(entity)
    return entity


def _build_object(scene: sapien.Scene, spec: ObjectSpec, index: int) -> sapien.Entity:
    builder = scene.create_actor_builder()
    material = sapien.render.RenderMaterial(base_color=[*spec.color, 1.0], roughness=0.6)
    hx, hy, hz = spec.half_size
    if spec.shape == "box":
        builder.add_box_collision(half_size=[hx, hy, hz])
        builder.add_box_visual(half_size=[hx, hy, hz], material=material)
    elif spec.shape == "cylinder":
        builder.add_cylinder_collision(UPRIGHT, radius=hx, half_length=hz)
        builder.add_cylinder_visual(UPRIGHT, radius=hx, half_length=hz, material=material)
    else:
        builder.add_sphere_collision(radius=hx)
        builder.add_sphere_visual(radius=hx, material=material)
    return builder.build(name=f"object{index}")


class TabletopScene:
    """One SAPIEN scene built from `params`; `cameras` picks which of CAMERA_NAMES exist."""

    def __init__(
        self,
        params: SceneParams,
        image_size: Sequence[int],
        cameras: Sequence[str],
        timestep: float,
        robot_meshes: RobotMeshes = "light",
        render_device: Optional[str] = None,
        robot_assets_dir: Optional[str] = None,
    ):
        unknown = set(cameras) - set(CAMERA_NAMES)
        assert not unknown, ("unknown cameras", sorted(unknown), CAMERA_NAMES)
        self.params = params
        self.scene = sapien.Scene([sapien.physx.PhysxCpuSystem(), create_render_system(render_device)])
        self.scene.set_timestep(timestep)
        self._build_room(params)
        self.robot = PandaRobot(self.scene, robot_meshes, params.robot_tint, params.robot_roughness, robot_assets_dir)
        self.objects = [_build_object(self.scene, spec, i) for i, spec in enumerate(params.objects)]
        # The physics bodies, compared by identity (SAPIEN hands back the same Python objects for them).
        self._object_bodies = {e.find_component_by_type(sapien.physx.PhysxRigidDynamicComponent) for e in self.objects}
        self._robot_bodies = set(self.robot.articulation.links)
        self.on_table = np.zeros(len(self.objects), bool)  # which objects place() put on the table
        height, width = image_size
        self.cameras: dict[str, sapien.render.RenderCameraComponent] = {}
        if "head" in cameras:
            head = self.scene.add_camera("head", width, height, layout.HEAD_FOVY, layout.CAMERA_NEAR, layout.CAMERA_FAR)
            head.entity.set_pose(look_at(layout.HEAD_EYE, layout.HEAD_TARGET))
            self.cameras["head"] = head
        if "wrist" in cameras:
            mount = look_at(layout.WRIST_EYE, layout.WRIST_TARGET, up=(1.0, 0.0, 0.0))  # in the hand frame
            self.cameras["wrist"] = self.scene.add_mounted_camera(
                "wrist", self.robot.hand.entity, mount, width, height, layout.WRIST_FOVY,
                layout.CAMERA_NEAR, layout.CAMERA_FAR,
            )  # fmt: skip

    def _build_room(self, params: SceneParams) -> None:
        scene = self.scene
        scene.add_ground(layout.FLOOR_Z, render_material=surface_material(params.floor))
        table = scene.create_actor_builder()
        table.add_box_collision(half_size=layout.TABLE_HALF_SIZE)
        table.add_box_visual(half_size=layout.TABLE_HALF_SIZE, material=surface_material(params.table))
        table.initial_pose = sapien.Pose(layout.TABLE_CENTER)
        table.build_static(name="table")
        wall = surface_material(params.wall)
        for half_size, center in room_panels():
            _visual_only_box(scene, half_size, sapien.Pose(center), wall)
        scene.set_ambient_light(params.light.ambient)
        scene.add_directional_light(params.light.direction, params.light.color, shadow=False)

    def place(self, episode: EpisodeParams) -> None:
        """Robot to its start pose, objects to theirs, everything at rest."""
        self.robot.reset(np.asarray(episode.arm_qpos, dtype=np.float32), episode.gripper)
        for i, (entity, spec, pose) in enumerate(zip(self.objects, self.params.objects, episode.object_poses)):
            hz = spec.half_size[2]
            self.on_table[i] = bool(pose)
            if pose:
                x, y, yaw = pose
                position = [x, y, hz + DROP_GAP]
            else:
                x, y, yaw = PARKING[0], PARKING[1] + 0.15 * i, 0.0
                position = [x, y, PARKING[2] + hz + DROP_GAP]
            entity.set_pose(sapien.Pose(position, [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]))
            body = entity.find_component_by_type(sapien.physx.PhysxRigidDynamicComponent)
            body.set_linear_velocity([0.0, 0.0, 0.0])
            body.set_angular_velocity([0.0, 0.0, 0.0])

    def step_physics(self, substeps: int) -> bool:
        """Run `substeps` physics steps; returns whether a robot link touched a clutter object in any of them."""
        touched = False
        for _ in range(substeps):
            self.scene.step()
            touched = touched or self.robot_touches_objects()
        return touched

    def robot_touches_objects(self) -> bool:
        """Whether, after the last physics step, any robot link touches any clutter object."""
        robot, objects = self._robot_bodies, self._object_bodies
        for contact in self.scene.get_contacts():
            a, b = contact.bodies
            if (a in robot and b in objects) or (b in robot and a in objects):
                if any(p.separation <= TOUCH_SEPARATION_M or np.any(p.impulse) for p in contact.points):
                    return True
        return False

    def object_poses(self, slots: int) -> tuple[np.ndarray, np.ndarray]:
        """-> (poses (slots, 7) float32: position xyz + quaternion wxyz, world frame; valid (slots,) bool).

        Slot i holds object i when place() put it on the table; other slots (padding, parked objects) are zeros.
        """
        poses = np.zeros((slots, 7), np.float32)
        valid = np.zeros(slots, bool)
        for i, entity in enumerate(self.objects[:slots]):
            if self.on_table[i]:
                pose = entity.pose
                poses[i, :3], poses[i, 3:] = pose.p, pose.q
                valid[i] = True
        return poses, valid

    def take_pictures(self) -> None:
        """Start rendering every camera; `read` waits for the result (so physics can overlap rendering)."""
        self.scene.update_render()
        for camera in self.cameras.values():
            camera.take_picture()

    def read(self, name: str) -> np.ndarray:
        """The picture camera `name` took last, (H, W, 3) uint8."""
        return read_rgb(self.cameras[name])

    def read_depth(self, name: str) -> np.ndarray:
        """The depth of the picture camera `name` took last, (H, W) uint16 millimetres (OpenCV z)."""
        return read_depth_mm(self.cameras[name])

    def camera_geometry(self) -> dict[str, np.ndarray]:
        """Per camera, `<name>_pose` (4, 4) camera-to-world in OpenCV axes as of the last take_pictures(), and
        `<name>_intrinsics` (3, 3) in pixels (the store's format-4 keys)."""
        out = {}
        for name, camera in self.cameras.items():
            out[f"{name}_pose"] = camera_pose_cv(camera)
            out[f"{name}_intrinsics"] = camera_intrinsics_cv(camera)
        return out
