"""SAPIEN's renderer for f1: the Vulkan device check, the fast camera settings, uint8 pixel reads.

On a CPU machine SAPIEN renders with Mesa's software Vulkan (lavapipe), where
each frame costs CPU time that grows with the triangles drawn (DESIGN.md
section 6). So every camera uses SAPIEN's "minimal" shader (one G-buffer pass
and a composite, no shadows or ray tracing) and the "Color" output is
rendered as RGBA8 (`r8g8b8a8unorm`), so pixels come back as uint8 with no
float conversion in Python. bench/bench_env.py measures each choice on lavapipe
at 128x128, two cameras, physics included (bench/RESULTS.md): SAPIEN's default
shader runs at ~0.65x the speed, its float32 output converted to uint8 at
~0.9x, and the full robot meshes (f1.collect.robot) at ~0.12x.

Camera geometry for the store (format 4): `camera_pose_cv` and `camera_intrinsics_cv` give a camera's pose
and intrinsics in OpenCV's convention, and `read_depth_mm` its depth from the minimal shader's
"PositionSegmentation" picture, which the G-buffer pass renders anyway (int16 millimetres, OpenGL camera axes).

`create_render_system` turns SAPIEN's bare "failed to find a rendering device"
into a UserError that says how to install one.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import sapien

from f1.shared.errors import UserError
from f1.shared.gpu import sapien_render_device

CAMERA_SHADER = "minimal"
COLOR_PICTURE = "Color"
COLOR_FORMAT = "r8g8b8a8unorm"
VULKAN_FIX = (
    "install one with `make system` (on Debian 12: "
    "`apt-get install -t bookworm-backports mesa-vulkan-drivers libvulkan1`) or a GPU driver with Vulkan"
)

POSITION_PICTURE = "PositionSegmentation"
# OpenGL camera axes (x right, y up, z backward, what get_model_matrix maps to the world) -> OpenCV's
# (x right, y down, z forward): flip y and z. SAPIEN's own camera frame (x forward, y left, z up) is neither.
GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])
_RGB = np.array([0, 1, 2])
_configured = False
# One render system per device kept for the life of the process: when the last one is freed, SAPIEN
# drops its compiled pipelines, and the next scene's first picture compiles them again (~10 s on
# lavapipe). Envs rebuild their scene every few episodes, so this keeps that rebuild at ~20 ms.
_keepalive: dict[str, sapien.render.RenderSystem] = {}


class NoVulkanDevice(UserError):
    """SAPIEN found no Vulkan device to render with."""


def configure_renderer() -> None:
    """Process-wide camera settings; call before the first camera is created (idempotent)."""
    global _configured
    if _configured:
        return
    sapien.render.set_log_level("error")
    sapien.render.set_camera_shader_dir(CAMERA_SHADER)
    sapien.render.set_picture_format(COLOR_PICTURE, COLOR_FORMAT)
    _configured = True


def create_render_system(device: Optional[str] = None) -> sapien.render.RenderSystem:
    """A render system on `device` ("cuda:0" for a pinned GPU worker; None: the default, lavapipe on a CPU box).

    By default the device comes from the process's pinning (`f1.shared.gpu.sapien_render_device`).
    """
    configure_renderer()
    device = device if device is not None else sapien_render_device()
    try:
        system = sapien.render.RenderSystem(device) if device else sapien.render.RenderSystem()
    except RuntimeError as exc:
        where = f"render device {device!r}" if device else "a Vulkan rendering device"
        raise NoVulkanDevice(f"SAPIEN could not open {where} ({exc}); {VULKAN_FIX}") from None
    _keepalive.setdefault(device or "default", system)
    return system


def read_rgb(camera: sapien.render.RenderCameraComponent) -> np.ndarray:
    """The last picture `camera` took, as a fresh contiguous (H, W, 3) uint8 array (alpha dropped)."""
    rgba = camera.get_picture(COLOR_PICTURE)  # (H, W, 4) uint8, waits for the render to finish
    assert rgba.dtype == np.uint8, ("configure_renderer() must run before cameras are made", rgba.dtype)
    # Gathering the channels by index is ~6x faster than a strided copy (np.ascontiguousarray(rgba[..., :3])):
    # 19 vs 110 us at 128x128.
    return rgba[..., _RGB]


def camera_pose_cv(camera: sapien.render.RenderCameraComponent) -> np.ndarray:
    """Camera-to-world (4, 4) float32, OpenCV axes (x right, y down, z forward), as of the last update_render()."""
    model = np.asarray(camera.get_model_matrix(), np.float64)  # (4, 4) OpenGL camera -> world
    return (model @ GL_TO_CV).astype(np.float32)


def camera_intrinsics_cv(camera: sapien.render.RenderCameraComponent) -> np.ndarray:
    """(3, 3) float32 K in pixels, OpenCV's convention: pixel (row v, column u) is centred on integer (u, v).

    SAPIEN's K puts pixel centres at +0.5 (cx = width / 2 for a centred camera; measured against its
    position picture in tests/test_cameras.py), so the principal point moves half a pixel.
    """
    k = np.asarray(camera.get_intrinsic_matrix(), np.float64)  # (3, 3)
    k[:2, 2] -= 0.5
    return k.astype(np.float32)


def read_depth_mm(camera: sapien.render.RenderCameraComponent) -> np.ndarray:
    """The last picture's depth along the viewing axis (OpenCV z), (H, W) uint16 millimetres; 0 where nothing was drawn."""
    position = camera.get_picture(POSITION_PICTURE)  # (H, W, 4) int: x, y, z in mm (OpenGL axes), segmentation
    return np.clip(-position[..., 2], 0, np.iinfo(np.uint16).max).astype(np.uint16)
