"""Camera poses, intrinsics and depth (store format 4) in real SAPIEN scenes (24x32 pictures, a few steps).

What proves the axes: a clutter object's position from the env's privileged poses, projected with the
stored pose and intrinsics, lands on that object in SAPIEN's segmentation picture (rendered independently
of f1's conversion); the wrist depth unprojected with the stored pose lands the table's pixels on the
table's plane (z = 0) and agrees with SAPIEN's own position picture. Non-square pictures catch a swap of
height and width; a turning arm, a pose that does not follow the camera.
"""

from __future__ import annotations

import numpy as np
import pytest

from f1.shared.config import load_config

pytestmark = pytest.mark.filterwarnings("ignore:Numcodecs codecs are not in the Zarr version 3 specification")

H, W = 24, 32
T = 6
SEED = 7  # three objects on the table, in the head camera's view


@pytest.fixture(scope="module")
def cfg():
    return load_config(
        overrides=[f"environment.image_size=[{H},{W}]", f"training.steps_per_episode={T}", "environment.depth=true"]
    )


@pytest.fixture(scope="module")
def env(cfg):
    from f1.collect.env import F1RLEnv

    env = F1RLEnv(cfg)
    yield env
    env.close()


def turn(env, t: int) -> np.ndarray:
    """The scripted action of step t: the base joint turns one way, then back (the wrist view sweeps)."""
    action = np.zeros(env.action_dim, np.float32)
    action[0] = 1.0 if t < T // 2 else -1.0
    return action


def run_episode(env, seed: int = SEED):
    """(EpisodeBuffer arrays, infos, the segmentation picture of each camera at each step)."""
    from f1.collect.episode_buffer import EpisodeBuffer, camera_keys_in

    obs, info = env.reset(seed=seed)
    buf = EpisodeBuffer(T, env.action_dim, env.object_slots, camera_keys_in(info))
    infos, segs = [info], [segmentation(env)]
    for t in range(T):
        buf.add(obs, turn(env, t), info)
        obs, _, terminated, _, info = env.step(turn(env, t))
        infos.append(info)
        segs.append(segmentation(env))
    buf.finish(obs, bool(terminated), info)
    return buf.arrays(), infos, segs


def segmentation(env) -> dict[str, np.ndarray]:
    """Per camera, (H, W) the SAPIEN entity id (per_scene_id) drawn at each pixel, from the last pictures."""
    return {name: cam.get_picture("PositionSegmentation")[..., 3] for name, cam in env.scene.cameras.items()}


def project(points: np.ndarray, pose: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points (P, 3) -> pixels (P, 2) as (u, v) and camera z (P,), with an OpenCV pose and K."""
    cam = (points - pose[:3, 3]) @ pose[:3, :3]  # (P, 3) world -> camera: R^T (p - t)
    uvw = cam @ k.T  # (P, 3)
    return uvw[:, :2] / uvw[:, 2:], cam[:, 2]


def unproject(depth_mm: np.ndarray, pose: np.ndarray, k: np.ndarray) -> np.ndarray:
    """(H, W) uint16 mm -> (H, W, 3) world points, pixel (v, u) centred on integer (u, v)."""
    v, u = np.mgrid[0 : depth_mm.shape[0], 0 : depth_mm.shape[1]]
    z = depth_mm.astype(np.float64) / 1000
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(k).T  # (H, W, 3), z = 1
    return (rays * z[..., None]) @ pose[:3, :3].T + pose[:3, 3]


@pytest.fixture(scope="module")
def episode(env):
    return run_episode(env)


def test_info_carries_each_cameras_pose_intrinsics_and_the_wrist_depth(env, episode):
    arrays, infos, _ = episode
    for name in ("head", "wrist"):
        pose, k = arrays[f"{name}_pose"], arrays[f"{name}_intrinsics"]
        assert pose.shape == (T + 1, 4, 4) and pose.dtype == np.float32
        assert k.shape == (T + 1, 3, 3) and k.dtype == np.float32
        rot = pose[:, :3, :3].astype(np.float64)
        assert np.allclose(rot @ rot.transpose(0, 2, 1), np.eye(3), atol=1e-5) and np.allclose(np.linalg.det(rot), 1, atol=1e-5)
        # Square pixels, the principal point at the centre of the H x W picture in OpenCV's pixel-centre convention.
        assert np.allclose(k[:, 0, 2], (W - 1) / 2) and np.allclose(k[:, 1, 2], (H - 1) / 2)
        assert np.allclose(k[:, 0, 0], k[:, 1, 1])
    fovy = 2 * np.arctan(H / 2 / arrays["wrist_intrinsics"][0, 1, 1])
    assert fovy == pytest.approx(np.deg2rad(75.0), rel=1e-5)  # layout.WRIST_FOVY
    assert np.ptp(arrays["head_pose"], axis=0).max() == 0  # the head camera is fixed
    moved = np.linalg.norm(arrays["wrist_pose"][1:, :3, 3] - arrays["wrist_pose"][:-1, :3, 3], axis=1)
    assert moved.min() > 0.005  # the wrist camera rides the turning arm
    depth = arrays["wrist_depth"]
    assert depth.shape == (T + 1, H, W) and depth.dtype == np.uint16 and depth.min() > 0
    assert all(np.array_equal(i["wrist_depth"], d) for i, d in zip(infos, depth))


def test_a_projected_object_position_lands_on_that_object_in_the_segmentation(env, episode):
    """The proof of the axes and the intrinsics: project the clutter's privileged positions and find them drawn there."""
    arrays, infos, segs = episode
    ids = [entity.per_scene_id for entity in env.scene.objects]
    found = 0
    for name in ("head", "wrist"):
        for k, (info, seg) in enumerate(zip(infos, segs)):
            for slot in np.flatnonzero(info["object_valid"]):
                mask = seg[name] == ids[slot]
                if mask.sum() < 4:  # out of view, hidden, or too small to say
                    continue
                (u, v), z = (a[0] for a in project(info["object_pose"][None, slot, :3], arrays[f"{name}_pose"][k], arrays[f"{name}_intrinsics"][k]))
                assert z > 0, (name, k, slot)
                if not (0 <= u <= W - 1 and 0 <= v <= H - 1):  # cut by the picture's edge, its centre outside
                    continue
                # Within a pixel: the object is drawn at the nearest pixel or one of its neighbours.
                r, c = int(round(v)), int(round(u))
                window = seg[name][max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2]
                assert (window == ids[slot]).any(), (name, k, slot, (u, v), np.argwhere(mask).mean(0)[::-1])
                # The object's drawn pixels centre on the projection (perspective shifts it a little).
                edge = mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()
                assert edge or np.linalg.norm(np.argwhere(mask).mean(0)[::-1] - (u, v)) < 2.0, (name, k, slot)
                found += 1
    assert found >= 3, found  # the check ran on real views, not on none


def test_wrist_depth_unprojects_onto_the_table_plane_and_sapiens_own_geometry(env, episode):
    arrays, _, segs = episode
    table = next(e.per_scene_id for e in env.scene.scene.entities if e.name == "table")
    on_table = 0
    for k in range(T + 1):
        points = unproject(arrays["wrist_depth"][k], arrays["wrist_pose"][k], arrays["wrist_intrinsics"][k])  # (H, W, 3)
        mask = segs[k]["wrist"] == table
        if mask.any():
            # The table's top is z = 0; millimetre depth at up to ~1.2 m leaves a few mm.
            assert np.abs(points[mask][:, 2]).max() < 0.006, (k, np.abs(points[mask][:, 2]).max())
            on_table += int(mask.sum())
    assert on_table > 50, on_table
    # The last step against SAPIEN's position picture, mapped to the world by its OpenGL model matrix.
    camera = env.scene.cameras["wrist"]
    position = camera.get_picture("PositionSegmentation")[..., :3].astype(np.float64) / 1000  # (H, W, 3) OpenGL camera
    model = camera.get_model_matrix()
    sapien_world = position @ model[:3, :3].T + model[:3, 3]
    assert np.abs(points - sapien_world).max() < 0.004


@pytest.mark.parametrize("fmt", ["zarr", "webdataset"])
def test_poses_intrinsics_and_depth_round_trip_through_a_store(env, cfg, episode, tmp_path, fmt):
    """EpisodeBuffer -> the collector's spec and writer -> a reader: the env's values, bit for bit, after a convert too."""
    from f1.collect.store_spec import collection_spec
    from f1.datasets import FORMAT_VERSION, EpisodeMeta, open_store, open_writer, verify_store
    from f1.datasets.convert import main as convert

    arrays, infos, _ = episode
    spec = collection_spec(cfg)
    assert spec.camera_geometry and spec.depth_cameras == ("wrist",)
    with open_writer(tmp_path / "s", fmt, spec, "n0w0", {}, 2) as writer:
        writer.add_episode(arrays, EpisodeMeta("e0", SEED, SEED, {}, T + 1))
    other = {"zarr": "webdataset", "webdataset": "zarr"}[fmt]
    convert(tmp_path / "s", tmp_path / "c", other)
    for store in (tmp_path / "s", tmp_path / "c"):
        reader = open_store(store)
        assert reader.manifest["format_version"] == FORMAT_VERSION and verify_store(store) == []
        got = reader.read_episode(reader.episodes[0])
        assert set(got) == set(spec.keys)
        for k, info in enumerate(infos):
            for key in ("head_pose", "head_intrinsics", "wrist_pose", "wrist_intrinsics", "wrist_depth"):
                assert got[key].dtype == info[key].dtype and np.array_equal(got[key][k], info[key]), (store, key, k)


def test_depth_off_by_default_leaves_it_out_of_info_and_spec(env):
    from f1.collect.env import StudentEnv
    from f1.collect.store_spec import collection_spec

    off = load_config(overrides=[f"environment.image_size=[{H},{W}]"])
    assert not off.environment.depth
    spec = collection_spec(off)
    assert spec.camera_geometry and spec.depth_keys == () and "wrist_depth" not in spec.keys
    assert "wrist_pose" in spec.keys and "head_intrinsics" in spec.keys
    student = StudentEnv(off)  # wrist only; renders fast now that the module's env compiled the shaders
    _, info = student.reset(seed=SEED)
    assert "wrist_depth" not in info and "head_pose" not in info and info["wrist_pose"].shape == (4, 4)
    student.close()


def test_intrinsics_follow_a_resize_on_lerobot_import():
    """A picture resized from 24x32 to 48x96: the same ray lands on the same place of the picture."""
    from f1.datasets.lerobot_import import scaled_intrinsics

    k = np.array([[[15.6, 0, 15.5], [0, 15.6, 11.5], [0, 0, 1]]], np.float32)
    big = scaled_intrinsics(k, (24, 32), (48, 96))[0]
    ray = np.array([0.3, -0.2, 1.0])
    u, v = (k[0] @ ray)[:2]
    u2, v2 = (big @ ray)[:2]
    # Pixel centres on integers: continuous coordinate u + 0.5 scales with the picture.
    assert (u2 + 0.5) == pytest.approx((u + 0.5) * 3) and (v2 + 0.5) == pytest.approx((v + 0.5) * 2)
    assert np.array_equal(scaled_intrinsics(k, (24, 32), (24, 32)), k)
