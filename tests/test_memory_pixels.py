"""Memory pixels (f1.train.memory_pixels): on a known plane, then on scripted SAPIEN episodes (32x40 wrist, depth on).

Synthetic: a camera 1 m above a plane, looking straight down, slides along x and back; the
pixels of the returning view that left the last h frames but were seen at the start are exactly
the memory pixels, and a nearer surface in the earlier frame (an occluder) takes them away.
SAPIEN: the arm's base turns away for 10 steps and back for 10; the returning view has memory
pixels, the outgoing one (almost) none, and a still arm none at all.
"""

from __future__ import annotations

import numpy as np
import pytest

from f1.train.memory_pixels import episode_memory_pixels, memory_pixel_mask, unproject, visible_in

H, W, F = 16, 16, 20.0  # picture and focal length (pixels): a 0.8 m footprint at 1 m
K = np.array([[F, 0, (W - 1) / 2], [0, F, (H - 1) / 2], [0, 0, 1]], np.float32)
DOWN = np.array([[1, 0, 0], [0, -1, 0], [0, 0, -1]], np.float64)  # OpenCV camera looking down -z: x right, y down


def slide(xs: list[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Depth (N, H, W) mm, poses (N, 4, 4), K (N, 3, 3) of a camera at (x, 0, 1) over the plane z = 0."""
    pose = np.tile(np.eye(4, dtype=np.float32), (len(xs), 1, 1))
    pose[:, :3, :3] = DOWN
    pose[:, 0, 3], pose[:, 2, 3] = xs, 1.0
    depth = np.full((len(xs), H, W), 1000, np.uint16)
    return depth, pose, np.tile(K, (len(xs), 1, 1))


def test_unproject_then_project_is_the_identity_where_the_frame_sees_itself():
    depth, pose, k = slide([0.2])
    points = unproject(depth[0], pose[0], k[0])  # (H, W, 3)
    assert np.allclose(points[..., 2], 0, atol=1e-9)  # on the plane
    assert points[0, 0, 0] == pytest.approx(0.2 + (0 - 7.5) / F) and points[0, 0, 1] == pytest.approx(-(0 - 7.5) / F)
    assert visible_in(points, depth[0], pose[0], k[0]).all()


def test_a_view_returning_after_it_left_the_history_has_memory_pixels_exactly_where_expected():
    xs = [0.0, 0.3, 0.6, 0.9, 1.2, 0.9, 0.6, 0.3]  # out to 1.2 m and back; the footprint is 0.8 m wide
    depth, pose, k = slide(xs)
    mask = memory_pixel_mask(depth, pose, k, target=7, history=2)  # history: frames 5, 6 (x = 0.9, 0.6)
    # Frame 7 covers x in [-0.1, 0.7]; frames 5 and 6 cover [0.2, 1.3]; frame 0 covered [-0.4, 0.4].
    world_x = 0.3 + (np.arange(W) - 7.5) / F  # (W,) each column's x on the plane
    assert mask[:, world_x < 0.17].all() and not mask[:, world_x > 0.23].any()
    assert (mask == mask[:1]).all()  # whole columns: the motion is along x
    # The outgoing view: what the history does not hold was never seen before.
    masks = episode_memory_pixels(depth, pose, k, history=2)
    assert not masks[:5].any() and masks[6:].any()
    # A still camera: everything is in the history.
    assert not episode_memory_pixels(*slide([0.3] * 5), history=2).any()
    # Seen earlier only if it was not hidden then: a surface 0.5 m nearer in frames 0-4 hides the plane.
    occluded = depth.copy()
    occluded[:5] = 500
    assert not memory_pixel_mask(occluded, pose, k, target=7, history=2).any()
    # Pixels without depth are never memory pixels.
    holes = depth.copy()
    holes[7, :, :3] = 0
    assert not memory_pixel_mask(holes, pose, k, target=7, history=2)[:, :3].any()


def test_bad_targets_are_refused():
    depth, pose, k = slide([0.0, 0.1])
    for target, history in ((0, 2), (2, 2), (1, 0)):
        with pytest.raises(ValueError, match="target"):
            memory_pixel_mask(depth, pose, k, target, history)


# -- scripted SAPIEN episodes ---------------------------------------------------------------------

T = 20


@pytest.fixture(scope="module")
def env():
    from f1.collect.env import F1RLEnv
    from f1.shared.config import load_config

    cfg = load_config(overrides=["environment.image_size=[32,40]", f"training.steps_per_episode={T}", "environment.depth=true"])
    env = F1RLEnv(cfg, cameras=("wrist",))
    yield env
    env.close()


def wrist_episode(env, turning: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Depth, pose, K (N = T + 1) of an episode: the base joint turns away for T/2 steps and back, or holds still."""
    obs, info = env.reset(seed=7)
    frames = [info]
    for t in range(T):
        action = np.zeros(env.action_dim, np.float32)
        action[0] = (1.0 if t < T // 2 else -1.0) if turning else 0.0
        _, _, _, _, info = env.step(action)
        frames.append(info)
    return tuple(np.stack([f[f"wrist_{key}"] for f in frames]) for key in ("depth", "pose", "intrinsics"))


def test_an_arm_turning_away_and_back_sees_memory_pixels_on_its_return_and_a_still_arm_none(env):
    depth, pose, k = wrist_episode(env, turning=True)
    assert np.linalg.norm(pose[T // 2, :3, 3] - pose[0, :3, 3]) > 0.4  # the view went far away
    share = episode_memory_pixels(depth, pose, k, history=2).mean(axis=(1, 2))  # (N,)
    # Outgoing: new ground, nothing to remember (a few pixels where nearest-pixel depth misses at grazing angles).
    assert share[: T // 2 + 1].max() < 0.03, share.round(3)
    # Returning: the leading edge re-enters what the first steps saw, beyond the 2-frame history.
    assert (share[T // 2 + 2 :] > 0.1).all(), share.round(3)
    still = episode_memory_pixels(*wrist_episode(env, turning=False), history=2)
    assert not still.any()
