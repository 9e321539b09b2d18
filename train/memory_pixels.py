"""Memory pixels: what a frame shows that the short history does not, but the episode saw before.

For frame t+1 of the wrist camera, a pixel is a *memory pixel* when the surface it shows is visible
in none of the history frames t-h+1 .. t, and visible in at least one earlier frame 0 .. t-h of the
same episode: the short context cannot supply it, a memory could. Visibility is decided by
reprojection with the store's format-4 keys (`wrist_depth`, `wrist_pose`, `wrist_intrinsics`):

1. unproject every pixel of frame t+1 with its depth, intrinsics and pose to a world point;
2. project the point into frame j with frame j's pose and intrinsics;
3. it is visible in frame j if it lands inside the picture, in front of the camera, and frame j's
   depth at the nearest pixel agrees with the point's depth there (within `tol_m` metres or
   `tol_rel` of the depth, whichever is larger): otherwise something else hid it, or frame j
   looked elsewhere.

Pixels without depth (0: nothing drawn) are never memory pixels. The table plane alone would
mislabel the clutter (objects stand above it), which is where a memory matters; reprojecting the
rendered depth does not. Conventions as the store's (datasets/schema.py): poses camera-to-world in
OpenCV axes, K with pixel centres on integers, depth uint16 millimetres along the camera's z.
Pure numpy, no simulator.
"""

from __future__ import annotations

import numpy as np

MM = 1e-3  # metres per depth unit


def unproject(depth_mm: np.ndarray, pose: np.ndarray, k: np.ndarray) -> np.ndarray:
    """(H, W) uint16 mm depth, (4, 4) camera-to-world, (3, 3) K -> (H, W, 3) world points (float64)."""
    h, w = depth_mm.shape
    v, u = np.mgrid[0:h, 0:w]  # (H, W) row, column
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(np.asarray(k, np.float64)).T  # (H, W, 3), z = 1
    cam = rays * (depth_mm.astype(np.float64) * MM)[..., None]  # (H, W, 3) in the camera
    pose = np.asarray(pose, np.float64)
    return cam @ pose[:3, :3].T + pose[:3, 3]


def project(points: np.ndarray, pose: np.ndarray, k: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """World points (..., 3) into a camera (pose, k) of picture `shape` (H, W) -> (inside, row, col, z), each (...):
    inside the picture and in front of the camera, the nearest pixel (0 where not inside), the depth along z."""
    h, w = shape
    pose = np.asarray(pose, np.float64)
    cam = (points - pose[:3, 3]) @ pose[:3, :3]  # (..., 3) world -> camera: R^T (p - t)
    z = cam[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uvw = cam @ np.asarray(k, np.float64).T  # (..., 3)
        u, v = uvw[..., 0] / z, uvw[..., 1] / z
    col, row = np.rint(u), np.rint(v)
    inside = (z > 0) & (col >= 0) & (col <= w - 1) & (row >= 0) & (row <= h - 1)  # NaN compares False
    return inside, np.where(inside, row, 0).astype(np.intp), np.where(inside, col, 0).astype(np.intp), z


def visible_in(
    points: np.ndarray, depth_mm: np.ndarray, pose: np.ndarray, k: np.ndarray, tol_m: float = 0.01, tol_rel: float = 0.03
) -> np.ndarray:
    """Which world points (..., 3) frame (depth_mm (H, W), pose, k) saw: (...) bool."""
    return seen_where(points, depth_mm, pose, k, tol_m, tol_rel)[0]


def seen_where(
    points: np.ndarray, depth_mm: np.ndarray, pose: np.ndarray, k: np.ndarray, tol_m: float = 0.01, tol_rel: float = 0.03
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`visible_in` and where: -> (seen (...) bool, row, col (...) the pixel of frame (depth_mm, pose, k) that shows each point)."""
    inside, row, col, z = project(points, pose, k, depth_mm.shape)
    drawn = depth_mm[row, col].astype(np.float64) * MM  # (...) what the frame drew there
    agrees = (drawn > 0) & (np.abs(drawn - z) <= np.maximum(tol_m, tol_rel * z))
    return inside & agrees, row, col


def memory_pixel_mask(
    depth_mm: np.ndarray,
    pose: np.ndarray,
    k: np.ndarray,
    target: int,
    history: int,
    tol_m: float = 0.01,
    tol_rel: float = 0.03,
) -> np.ndarray:
    """Memory pixels of frame `target` (= t+1) of one episode: (H, W) bool.

    depth_mm (N, H, W) uint16, pose (N, 4, 4), k (N, 3, 3): the episode's wrist frames. History
    frames are target-history .. target-1 (t-h+1 .. t, clipped at 0); earlier ones 0 .. target-history-1.
    """
    n = len(depth_mm)
    if not (0 < target < n and history >= 1):
        raise ValueError(f"target {target} must be in 1..{n - 1} and history {history} >= 1")
    points = unproject(depth_mm[target], pose[target], k[target])  # (H, W, 3)
    valid = depth_mm[target] > 0  # (H, W)
    first_history = max(target - history, 0)
    in_history = np.zeros_like(valid)
    for j in range(first_history, target):
        in_history |= visible_in(points, depth_mm[j], pose[j], k[j], tol_m, tol_rel)
    earlier = np.zeros_like(valid)
    for j in range(first_history):
        earlier |= visible_in(points, depth_mm[j], pose[j], k[j], tol_m, tol_rel)
    return valid & ~in_history & earlier


def episode_memory_pixels(depth_mm: np.ndarray, pose: np.ndarray, k: np.ndarray, history: int, **tol: float) -> np.ndarray:
    """memory_pixel_mask for every frame of an episode: (N, H, W) bool, frame 0 all False (nothing came before)."""
    out = np.zeros(depth_mm.shape, bool)  # (N, H, W)
    for target in range(1, len(depth_mm)):
        out[target] = memory_pixel_mask(depth_mm, pose, k, target, history, **tol)
    return out


def last_seen(
    frames: np.ndarray, depth_mm: np.ndarray, pose: np.ndarray, k: np.ndarray, target: int, history: int, mask: np.ndarray,
    tol_m: float = 0.01, tol_rel: float = 0.03,
) -> np.ndarray:
    """The geometric oracle of a memory: frame `target`'s memory pixels (mask (H, W)) coloured as the latest frame
    before the history saw them, reprojected -> (H, W, C) of frames' dtype, frame `target`'s own pixels off the mask.

    frames (N, H, W, C) the episode's pictures; depth_mm, pose, k as `memory_pixel_mask`. A memory that kept
    every earlier frame and the geometry exactly, and no better: it cannot know what changed since.
    """
    out = frames[target].copy()
    points = unproject(depth_mm[target], pose[target], k[target])  # (H, W, 3)
    todo = mask.copy()
    for j in range(max(target - history, 0) - 1, -1, -1):  # the latest earlier frame first
        if not todo.any():
            break
        hit, row, col = seen_where(points[todo], depth_mm[j], pose[j], k[j], tol_m, tol_rel)  # (M,) each
        where = np.flatnonzero(todo)[hit]  # flat pixel indices of frame target that frame j saw
        out.reshape(-1, out.shape[-1])[where] = frames[j][row[hit], col[hit]]
        todo.reshape(-1)[where] = False
    return out
