"""Domain randomisation parameters, drawn from explicit seeds (pure numpy, no SAPIEN).

Two levels, matching how scenes are reused (DESIGN.md section 2):
- `sample_scene(dr, scene_seed)`: what a scene is made of: the clutter objects
  (shape, size, colour), table/wall/floor colours and procedural textures, the
  lights and the material tints. Drawn once per scene.
- `sample_episode(scene, episode_seed, home_noise)`: what changes at every
  reset: the robot's start pose (home + noise) and where the objects start
  (rejection sampling on circular footprints, so none starts in collision).

Both return plain dataclasses whose `to_dict()` is JSON-able: it goes into the
env's `info["randomization"]` and from there into the store's episode metadata.
A feature switched off in the config gets fixed neutral values, so the same
code builds every scene.
"""

from __future__ import annotations

import colorsys
import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from f1.collect.layout import CLUTTER_MARGIN, CLUTTER_REGION, GRIPPER_OPEN, HOME_ARM_QPOS
from f1.shared.config import DomainRandomizationConfig

Shape = Literal["box", "cylinder", "sphere"]
TextureKind = Literal["plain", "checker", "stripes"]
SHAPES: tuple[Shape, ...] = ("box", "cylinder", "sphere")
TEXTURES: tuple[TextureKind, ...] = ("plain", "checker", "stripes")
PLACEMENT_TRIES = 200  # per object; an object that finds no free spot is left off the table for this episode


@dataclass
class ObjectSpec:
    shape: Shape
    half_size: list[float]
    """box: (hx, hy, hz); cylinder: (radius, radius, half height); sphere: (r, r, r)."""
    color: list[float]

    @property
    def footprint(self) -> float:
        """Radius of the circle the object covers on the table, whatever its yaw."""
        hx, hy, _ = self.half_size
        return float(np.hypot(hx, hy)) if self.shape == "box" else float(hx)


@dataclass
class SurfaceSpec:
    color: list[float]
    texture: TextureKind = "plain"
    color2: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    tiles: int = 1
    """Texture periods across the surface (checker squares or stripe pairs)."""


@dataclass
class LightSpec:
    ambient: list[float]
    direction: list[float]
    color: list[float]
    """Directional light colour times intensity."""


@dataclass
class SceneParams:
    scene_seed: int
    objects: list[ObjectSpec]
    table: SurfaceSpec
    wall: SurfaceSpec
    floor: SurfaceSpec
    light: LightSpec
    robot_tint: list[float]
    robot_roughness: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class EpisodeParams:
    arm_qpos: list[float]
    gripper: float
    """Start opening per finger (metres)."""
    object_poses: list[list[float]]
    """Per object (x, y, yaw), or [] when it found no free spot and stays off the table."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _floats(values) -> list[float]:
    return [float(v) for v in values]


def _hsv(rng: np.random.Generator, s: tuple[float, float], v: tuple[float, float]) -> list[float]:
    return _floats(colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(*s), rng.uniform(*v)))


def _surface(rng: np.random.Generator, s: tuple[float, float], v: tuple[float, float], tiles: tuple[int, int]) -> SurfaceSpec:
    return SurfaceSpec(
        color=_hsv(rng, s, v),
        texture=TEXTURES[rng.integers(len(TEXTURES))],
        color2=_hsv(rng, s, v),
        tiles=int(rng.integers(*tiles)),
    )


def _object(rng: np.random.Generator) -> ObjectSpec:
    shape = SHAPES[rng.integers(len(SHAPES))]
    if shape == "box":
        half = rng.uniform([0.02, 0.02, 0.015], [0.05, 0.05, 0.045])
    elif shape == "cylinder":
        radius, half_height = rng.uniform(0.02, 0.04), rng.uniform(0.025, 0.07)
        half = np.array([radius, radius, half_height])
    else:
        half = np.full(3, rng.uniform(0.02, 0.04))
    return ObjectSpec(shape, _floats(half), _hsv(rng, (0.5, 1.0), (0.35, 1.0)))


def sample_scene(dr: DomainRandomizationConfig, scene_seed: int) -> SceneParams:
    """A scene's content from its seed alone: the same seed gives the same scene."""
    # One child stream per feature, so switching one feature off leaves the others' draws unchanged.
    objects_rng, background_rng, light_rng, appearance_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(scene_seed).spawn(4)
    )
    objects = []
    if dr.cluttered_table:
        count = int(objects_rng.integers(dr.min_objects, dr.max_objects + 1))
        objects = [_object(objects_rng) for _ in range(count)]

    if dr.random_background:
        table = _surface(background_rng, (0.0, 0.6), (0.3, 0.9), (4, 17))
        wall = _surface(background_rng, (0.0, 0.5), (0.3, 0.95), (4, 25))
        floor = _surface(background_rng, (0.0, 0.5), (0.15, 0.6), (4, 16))
    else:
        table = SurfaceSpec(color=[0.62, 0.47, 0.33])
        wall = SurfaceSpec(color=[0.8, 0.8, 0.78])
        floor = SurfaceSpec(color=[0.35, 0.35, 0.35])

    if dr.random_light:
        ambient = light_rng.uniform(0.25, 0.55) * light_rng.uniform(0.85, 1.0, 3)
        azimuth, elevation = light_rng.uniform(0, 2 * np.pi), light_rng.uniform(np.deg2rad(35), np.deg2rad(85))
        # Points from the light into the scene: downwards, from a random side.
        direction = -np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])
        color = light_rng.uniform(0.6, 1.4) * light_rng.uniform(0.8, 1.0, 3)
        light = LightSpec(_floats(ambient), _floats(direction), _floats(color))
    else:
        light = LightSpec([0.4, 0.4, 0.4], _floats(np.array([-0.3, 0.4, -1.0]) / np.sqrt(1.25)), [1.0, 1.0, 1.0])

    if dr.random_appearance:
        robot_tint = _floats(appearance_rng.uniform(0.7, 1.0, 3))
        robot_roughness = float(appearance_rng.uniform(0.3, 0.9))
        table_tint = appearance_rng.uniform(0.8, 1.0, 3)
        table.color = _floats(np.asarray(table.color) * table_tint)
        table.color2 = _floats(np.asarray(table.color2) * table_tint)
    else:
        robot_tint, robot_roughness = [1.0, 1.0, 1.0], 0.5
    return SceneParams(int(scene_seed), objects, table, wall, floor, light, robot_tint, robot_roughness)


def place_objects(rng: np.random.Generator, objects: list[ObjectSpec]) -> list[list[float]]:
    """(x, y, yaw) per object inside CLUTTER_REGION with no two footprints overlapping; [] when none fits."""
    x0, x1, y0, y1 = CLUTTER_REGION
    placed: list[tuple[float, float, float]] = []  # (x, y, footprint) of the objects on the table
    poses: list[list[float]] = []
    for obj in objects:
        r = obj.footprint
        pose: list[float] = []
        for _ in range(PLACEMENT_TRIES):
            x, y = rng.uniform(x0 + r, x1 - r), rng.uniform(y0 + r, y1 - r)
            if all(np.hypot(x - px, y - py) >= r + pr + CLUTTER_MARGIN for px, py, pr in placed):
                pose = [float(x), float(y), float(rng.uniform(-np.pi, np.pi))]
                placed.append((x, y, r))
                break
        poses.append(pose)
    return poses


def sample_episode(scene: SceneParams, episode_seed: int, home_noise: float) -> EpisodeParams:
    """The robot's start pose and the objects' start poses for one episode of `scene`."""
    rng = np.random.default_rng(episode_seed)
    arm = HOME_ARM_QPOS + rng.normal(0.0, home_noise, HOME_ARM_QPOS.shape)
    return EpisodeParams(_floats(arm), GRIPPER_OPEN, place_objects(rng, scene.objects))
