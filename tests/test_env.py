"""The SAPIEN exploration env (f1.collect): scene, robot control, observations, histories, vector form, policies.

Real SAPIEN at 64x64. One env is shared by the module (the first picture of a
process compiles shaders, seconds on lavapipe); tests that need a second env
build one (a later scene costs ~20-50 ms).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from f1.collect.env_spec import REAL_ACTION_DIMS, REAL_STATE_DIMS, STATE_LAYOUT
from f1.collect.history import HistoryOutOfStep, ObservationHistory
from f1.collect.policies import OUPolicy, RandomPolicy, make_policy
from f1.collect.randomization import sample_episode, sample_scene
from f1.shared.config import load_config
from f1.shared.errors import UserError

H = 3  # history length
S = 2  # history stride
T = 10  # actions per episode
SIZE = 64


def tiny_config(**overrides):
    sets = [
        f"environment.image_size=[{SIZE},{SIZE}]",
        f"training.n_obs_img_steps={H}",
        f"training.obs_img_stride={S}",
        f"training.steps_per_episode={T}",
        "environment.scene_reset_interval=3",
    ] + [f"{k}={v}" for k, v in overrides.items()]
    return load_config(overrides=sets)


@pytest.fixture(scope="module")
def cfg():
    return tiny_config()


@pytest.fixture(scope="module")
def env(cfg):
    from f1.collect.env import F1RLEnv

    env = F1RLEnv(cfg)
    yield env
    env.close()


def rollout(env, seed, actions, scene_seed=7):
    obs, info = env.reset(seed=seed, options={"scene_seed": scene_seed})
    out = [obs]
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        out.append(obs)
    return out, info


def ou_actions(n, seed=0, action_dim=32):
    policy = OUPolicy(action_dim, seed=seed)
    return [policy.act() for _ in range(n)]


def assert_same_obs(a, b, where=""):
    assert a.keys() == b.keys(), (where, sorted(a), sorted(b))
    for key in a:
        assert np.array_equal(a[key], b[key]), (where, key)


# ---------------------------------------------------------------- no simulator


def test_history_raises_when_frames_and_actions_fall_out_of_step():
    history = ObservationHistory(3, 1, (2, 2, 3), 4)
    history.reset(np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(HistoryOutOfStep):
        history.record_frame(np.ones((2, 2, 3), np.uint8))  # a frame with no action before it
    history.record_action(np.ones(4, np.float32))
    with pytest.raises(HistoryOutOfStep):
        history.record_action(np.ones(4, np.float32))  # two actions for one frame


def test_history_ring_keeps_stride_and_padding():
    history = ObservationHistory(3, 2, (1, 1, 3), 2)
    frames = [np.full((1, 1, 3), k, np.uint8) for k in range(8)]
    history.reset(frames[0])
    for k in range(1, 8):
        history.record_action(np.full(2, k - 1, np.float32))
        history.record_frame(frames[k])
        images, actions, pad = history.arrays()
        expect_steps = [k - 4, k - 2, k]
        for i, step in enumerate(expect_steps):
            assert pad[i] == (step < 0), (k, i, pad)
            assert images[i, 0, 0, 0] == max(step, 0), (k, i, images[:, 0, 0, 0])
            expected_action = 0.0 if step < 0 or step == k else float(step)
            assert np.all(actions[i] == expected_action), (k, i, actions)


def test_policies_are_seeded_bounded_and_pad_with_zeros():
    for name in ("random", "ou", "lookaway"):
        a, b = make_policy(name, 32, seed=4), make_policy(name, 32, seed=4)
        xs = np.stack([a.act() for _ in range(50)])  # (50, 32)
        assert xs.dtype == np.float32 and xs.shape == (50, 32)
        assert np.array_equal(xs, np.stack([b.act() for _ in range(50)])), name
        assert np.all(xs[:, REAL_ACTION_DIMS:] == 0.0), name
        assert np.all(np.abs(xs) <= 1.0) and xs[:, :REAL_ACTION_DIMS].std() > 0.1, name
        a.reset(5)
        assert not np.array_equal(a.act(), xs[0]), name


def test_ou_actions_persist_and_random_ones_do_not():
    def lag1(policy):
        xs = np.stack([policy.act()[:REAL_ACTION_DIMS] for _ in range(400)])
        return np.mean([np.corrcoef(xs[:-1, d], xs[1:, d])[0, 1] for d in range(REAL_ACTION_DIMS)])

    assert lag1(OUPolicy(32, seed=0)) > 0.7
    assert abs(lag1(RandomPolicy(32, seed=0))) < 0.2


def test_lookaway_turns_the_base_away_and_back_to_where_it_started():
    policy = make_policy("lookaway", 32, seed=1)
    base = np.array([policy.act()[0] for _ in range(200)])
    yaw = np.cumsum(base)  # the base joint's commanded angle, in action units
    returns = np.flatnonzero(np.abs(yaw) < 1e-5)  # back where it started: once per away-and-back cycle
    assert len(returns) >= 200 // (2 * 12), returns
    assert np.abs(yaw).max() >= 0.7 * 5  # each leg turns at least L = 5 steps at speed 0.7


def test_unknown_policy_is_a_user_error():
    with pytest.raises(UserError, match="unknown exploration policy"):
        make_policy("brownian", 32, seed=0)


def test_scene_parameters_come_from_the_seed_alone():
    dr = tiny_config().environment.domain_randomization
    assert sample_scene(dr, 3).to_dict() == sample_scene(dr, 3).to_dict()
    assert sample_scene(dr, 3).to_dict() != sample_scene(dr, 4).to_dict()
    json.dumps(sample_scene(dr, 3).to_dict())  # JSON-able as it goes into info and the store
    counts = {len(sample_scene(dr, s).objects) for s in range(60)}
    assert counts <= set(range(dr.min_objects, dr.max_objects + 1)) and len(counts) > 1, counts


def test_objects_start_apart_and_switched_off_features_are_neutral():
    cfg = tiny_config(**{"environment.domain_randomization.max_objects": 8, "environment.domain_randomization.min_objects": 8})
    scene = sample_scene(cfg.environment.domain_randomization, 11)
    for seed in range(20):
        poses = sample_episode(scene, seed, 0.1).object_poses
        placed = [(p, o.footprint) for p, o in zip(poses, scene.objects) if p]
        assert len(placed) == 8, seed
        for i, ((xi, yi, _), ri) in enumerate(placed):
            for (xj, yj, _), rj in placed[i + 1 :]:
                assert np.hypot(xi - xj, yi - yj) >= ri + rj, (seed, xi, yi, xj, yj)
    off = tiny_config(
        **{f"environment.domain_randomization.{k}": "false" for k in ("cluttered_table", "random_background", "random_light", "random_appearance")}
    )
    a, b = (sample_scene(off.environment.domain_randomization, s) for s in (1, 2))
    assert a.objects == [] and a.table == b.table and a.light == b.light and a.robot_tint == b.robot_tint == [1.0, 1.0, 1.0]


def test_panda_assets_are_found_without_importing_mani_skill(monkeypatch):
    from f1.collect import assets

    urdf = assets.panda_urdf_path()
    assert urdf.name == "panda_v2.urdf" and (urdf.parent / "franka_description").is_dir()
    assert "mani_skill" not in sys.modules
    monkeypatch.setattr(assets.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(assets.PandaAssetsMissing, match="pip install"):
        assets.panda_urdf_path()


# ---------------------------------------------------------------- simulator


@pytest.mark.slow
def test_no_vulkan_device_is_a_one_line_user_error():
    code = (
        "from f1.collect.rendering import create_render_system\n"
        "from f1.shared.errors import UserError\n"
        "try:\n    create_render_system()\nexcept UserError as e:\n    print('USERERROR', e)\n"
    )
    env = {**os.environ, "VK_ICD_FILENAMES": "/nonexistent/icd.json"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    lines = [line for line in out.stdout.splitlines() if line.startswith("USERERROR")]
    assert len(lines) == 1, (out.stdout, out.stderr)
    assert "make system" in lines[0] and "mesa-vulkan-drivers" in lines[0], lines[0]


@pytest.mark.slow
def test_check_env_passes(env):
    from gymnasium.utils.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the checker warns that it cannot try other render modes without a spec
        check_env(env)


@pytest.mark.slow
def test_observations_match_the_declared_spaces_and_images_are_not_blank(env):
    obs, info = env.reset(seed=2, options={"scene_seed": 5})
    assert env.observation_space.contains(obs)
    assert obs["head_rgb"].shape == obs["wrist_rgb"].shape == (SIZE, SIZE, 3)
    assert obs["image_history"].shape == (H, SIZE, SIZE, 3) and obs["action_history"].shape == (H, 32)
    assert obs["state"].dtype == np.float32 and np.all(obs["state"][REAL_STATE_DIMS:] == 0)
    for name in ("head_rgb", "wrist_rgb"):
        std = obs[name].reshape(-1, 3).std(axis=0).max()
        assert std > 10, (name, std)  # a blank or black frame has ~0
        assert 20 < obs[name].mean() < 235, (name, obs[name].mean())  # neither black nor washed out
    json.dumps(info["randomization"])
    assert info["scene_seed"] == info["scene_id"] == 5 and info["episode_seed"] == 2
    assert np.allclose(info["ee_pos"], obs["state"][STATE_LAYOUT["tcp_pos"]])


@pytest.mark.slow
def test_same_seeds_give_identical_frames_and_states_whatever_ran_before(env, cfg):
    from f1.collect.env import F1RLEnv

    actions = ou_actions(6, seed=3)
    rollout(env, 1, ou_actions(6, seed=9))  # the shared env runs another episode in the scene first
    reused, _ = rollout(env, 5, actions)
    fresh_env = F1RLEnv(cfg)
    fresh, _ = rollout(fresh_env, 5, actions)
    fresh_env.close()
    for k, (a, b) in enumerate(zip(reused, fresh)):
        assert_same_obs(a, b, f"step {k}")


@pytest.mark.slow
def test_different_seeds_give_different_scenes_and_starts(env):
    a, info_a = env.reset(seed=1, options={"scene_seed": 1})
    b, info_b = env.reset(seed=1, options={"scene_seed": 2})
    assert info_a["randomization"]["scene"] != info_b["randomization"]["scene"]
    assert np.abs(a["head_rgb"].astype(int) - b["head_rgb"]).mean() > 5
    c, info_c = env.reset(seed=2, options={"scene_seed": 2})  # same scene, another episode
    assert info_c["randomization"]["scene"] == info_b["randomization"]["scene"]
    assert info_c["randomization"]["episode"]["object_poses"] != info_b["randomization"]["episode"]["object_poses"]
    assert not np.array_equal(b["state"], c["state"])


@pytest.mark.slow
def test_actions_move_the_joints_the_commanded_way(env):
    for joint in range(7):
        for sign in (1.0, -1.0):
            obs, _ = env.reset(seed=4, options={"scene_seed": 7})
            start = obs["state"][:7].copy()
            action = np.zeros(32, np.float32)
            action[joint] = sign
            for _ in range(2):
                obs, *_ = env.step(action)
            moved = obs["state"][:7] - start
            assert sign * moved[joint] > 0.12, (joint, sign, moved)  # 2 steps of 0.1 rad, the drives lag a little
            others = np.delete(moved, joint)
            assert np.abs(others).max() < 0.05, (joint, sign, moved)
    close = np.zeros(32, np.float32)
    close[7] = -1.0
    obs, _ = env.reset(seed=4, options={"scene_seed": 7})
    assert obs["state"][7] > 0.07, obs["state"][7]  # starts open: ~0.08 m between the fingers
    for _ in range(3):
        obs, *_ = env.step(close)
    assert obs["state"][7] < 0.03, obs["state"][7]


@pytest.mark.slow
def test_padding_dims_are_ignored(env):
    actions = ou_actions(3, seed=6)
    clean, _ = rollout(env, 8, actions)
    junk = [a.copy() for a in actions]
    for a in junk:
        a[REAL_ACTION_DIMS:] = np.random.default_rng(0).uniform(-5, 5, a.size - REAL_ACTION_DIMS)
    noisy, _ = rollout(env, 8, junk)
    for k, (a, b) in enumerate(zip(clean, noisy)):
        assert_same_obs(a, b, f"step {k}")


@pytest.mark.slow
def test_history_alignment_over_an_episode(env):
    obs, _ = env.reset(seed=3, options={"scene_seed": 7})
    frames, applied = [obs["wrist_rgb"]], []
    truncated = False
    for t in range(1, T + 1):
        assert not truncated, t
        action = ou_actions(T, seed=1)[t - 1]
        obs, reward, terminated, truncated, info = env.step(action)
        frames.append(obs["wrist_rgb"])
        applied.append(action)
        assert np.array_equal(obs["image_history"][-1], obs["wrist_rgb"]), t
        for i in range(H):
            k = t - (H - 1 - i) * S  # the step slot i shows
            assert obs["history_pad_mask"][i] == (k < 0), (t, i)
            assert np.array_equal(obs["image_history"][i], frames[max(k, 0)]), (t, i, k)
            # image_history[i] is the frame before action_history[i]; the current step's action is unknown.
            expected = applied[k] if 0 <= k < t else np.zeros(32, np.float32)
            assert np.array_equal(obs["action_history"][i], expected), (t, i, k)
        assert not terminated and reward == 0.0
    assert truncated and info["elapsed_steps"] == T


@pytest.mark.slow
def test_an_ou_episode_moves_the_arm_and_the_wrist_view(env, cfg):
    # A checkered table, so that the wrist view changes wherever the hand goes.
    dr = cfg.environment.domain_randomization
    scene_seed = next(s for s in range(100) if sample_scene(dr, s).table.texture == "checker")
    obs, info = env.reset(seed=0, options={"scene_seed": scene_seed})
    first_wrist, first_ee = obs["wrist_rgb"].astype(int), info["ee_pos"]
    policy = OUPolicy(32, seed=0)
    for _ in range(T):
        obs, _, _, _, info = env.step(policy.act())
    assert np.linalg.norm(info["ee_pos"] - first_ee) > 0.05, (first_ee, info["ee_pos"])
    assert np.abs(obs["wrist_rgb"] - first_wrist).mean() > 10


@pytest.mark.slow
def test_scene_is_rebuilt_every_interval_or_when_the_scene_seed_changes(env):
    env.reset(seed=100, options={"scene_seed": 42})
    scene = env.scene
    env.reset(seed=101, options={"scene_seed": 42})
    assert env.scene is scene  # same scene seed: only re-placed
    infos = [env.reset()[1] for _ in range(4)]  # unseeded: interval 3
    seeds = [info["scene_seed"] for info in infos]
    assert seeds[0] == 42, seeds  # the third episode in scene 42
    assert seeds[1] == seeds[2] == seeds[3] == infos[1]["episode_seed"] != 42, seeds  # rebuilt from that episode's seed
    assert env.reset(seed=9)[1]["scene_seed"] == 9  # a seeded reset takes its scene from its seed


@pytest.mark.slow
def test_student_env_has_no_head_camera(cfg):
    from f1.collect.env import StudentEnv

    student = StudentEnv(cfg)
    obs, _ = student.reset(seed=0)
    assert "head_rgb" not in obs and "head_rgb" not in student.observation_space.spaces
    assert set(student.scene.cameras) == {"wrist"}
    assert student.observation_space.contains(obs)
    student.close()


@pytest.mark.slow
def test_vector_env_steps_chosen_envs_like_single_envs(cfg, env):
    from f1.collect.vector import make_vector_env

    venv = make_vector_env(cfg, 2)
    options = [{"scene_seed": 7, "scene_id": "a"}, {"scene_seed": 8, "scene_id": "b"}]
    obs, infos = venv.reset(seeds=[5, 6], options=options)
    assert [i["scene_id"] for i in infos] == ["a", "b"]
    actions = np.stack(ou_actions(2, seed=3))  # (M, action_dim)
    obs, rewards, terminated, truncated, infos = venv.step(actions)
    assert len(obs) == 2 and rewards.shape == terminated.shape == truncated.shape == (2,)
    single, _ = rollout(env, 5, [actions[0]], scene_seed=7)
    assert_same_obs(obs[0], single[-1], "env 0")
    obs, *_ = venv.step(actions[1:], env_indices=[1])  # env 0 is left alone
    assert len(obs) == 1
    assert [e._elapsed for e in venv.envs] == [1, 2]
    venv.close()


@pytest.mark.slow
def test_full_robot_meshes_render_and_their_tint_does_not_pile_up(cfg):
    from f1.collect.scene import TabletopScene

    params = sample_scene(cfg.environment.domain_randomization, 3)
    assert params.robot_tint != [1.0, 1.0, 1.0]
    frames = []
    for _ in range(2):  # SAPIEN caches loaded meshes: tinting their materials in place would tint twice
        scene = TabletopScene(params, (SIZE, SIZE), ("head",), 0.01, robot_meshes="full")
        scene.place(sample_episode(params, 0, 0.0))
        scene.take_pictures()
        frames.append(scene.read("head"))
    assert frames[0].reshape(-1, 3).std(axis=0).max() > 10
    assert np.array_equal(frames[0], frames[1])
