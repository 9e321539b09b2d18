"""Contacts with the clutter and object displacement, on scripted episodes in real SAPIEN scenes (64x64, wrist only).

The scripted policy presses the hand straight down (joint 2, the shoulder, at full
speed: from the rest pose the tool centre point drops ~5 cm a step and stays where
it meets something). Seed PRESS_ON_OBJECT puts an object under the hand; seed
PRESS_ON_EMPTY_TABLE has no object within 25 cm of it, so the hand hits only
the table, which must not count as clutter contact.
"""

from __future__ import annotations

import numpy as np
import pytest

from f1.collect.env_spec import STATE_LAYOUT
from f1.datasets.exploration import (
    TCP_POS_STATE_DIMS,
    exploration_summary,
    object_contact_fraction,
    object_displacement,
    objects_moved,
    union_voxels,
)
from f1.shared.config import load_config

pytestmark = pytest.mark.filterwarnings("ignore:Numcodecs codecs are not in the Zarr version 3 specification")

T = 12
PRESS_ON_OBJECT, PRESS_ON_EMPTY_TABLE = 7, 6


@pytest.fixture(scope="module")
def cfg():
    return load_config(overrides=["environment.image_size=[64,64]", f"training.steps_per_episode={T}"])


@pytest.fixture(scope="module")
def env(cfg):
    from f1.collect.env import F1RLEnv

    env = F1RLEnv(cfg, cameras=("wrist",))
    yield env
    env.close()


def press_down(env, seed: int):
    """One episode pressing the hand down; returns its EpisodeBuffer (the store's arrays) and the infos."""
    from f1.collect.episode_buffer import EpisodeBuffer

    press = np.zeros(env.action_dim, np.float32)
    press[1] = 1.0
    def with_head(info):  # the store's head camera keys, copied from the wrist's (a wrist-only env is faster)
        return {**info, "head_pose": info["wrist_pose"], "head_intrinsics": info["wrist_intrinsics"]}

    buf = EpisodeBuffer(T, env.action_dim, env.object_slots, ("head_pose", "head_intrinsics", "wrist_pose", "wrist_intrinsics"))
    obs, info = env.reset(seed=seed)
    infos = [info]
    for _ in range(T):
        buf.add({**obs, "head_rgb": obs["wrist_rgb"]}, press, with_head(info))
        obs, _, terminated, _, info = env.step(press)
        infos.append(info)
    buf.finish({**obs, "head_rgb": obs["wrist_rgb"]}, bool(terminated), with_head(info))
    return buf.arrays(), infos


def nearest_object_xy(info) -> float:
    distance = np.linalg.norm(info["object_pose"][:, :2] - info["ee_pos"][:2], axis=1)
    return float(np.where(info["object_valid"], distance, np.inf).min())


def test_tcp_dims_of_the_store_state_match_the_env_layout():
    assert TCP_POS_STATE_DIMS == STATE_LAYOUT["tcp_pos"]


def test_info_reports_the_clutter_in_fixed_slots(env, cfg):
    obs, info = env.reset(seed=PRESS_ON_OBJECT)
    slots = cfg.environment.domain_randomization.max_objects
    pose, valid = info["object_pose"], info["object_valid"]
    assert pose.shape == (slots, 7) and pose.dtype == np.float32 and valid.shape == (slots,)
    on_table = [bool(p) for p in info["randomization"]["episode"]["object_poses"]]
    assert valid.tolist() == on_table + [False] * (slots - len(on_table))
    start = np.array([p[:2] for p in info["randomization"]["episode"]["object_poses"] if p])
    np.testing.assert_allclose(pose[valid, :2], start, atol=1e-6)  # where place() put them
    np.testing.assert_allclose(np.linalg.norm(pose[valid, 3:], axis=1), 1.0, atol=1e-5)
    assert not pose[~valid].any()
    assert info["object_contact"] is False  # nothing has moved yet


def test_a_hand_pressed_onto_an_object_touches_and_displaces_it(env):
    arrays, infos = press_down(env, PRESS_ON_OBJECT)
    assert nearest_object_xy(infos[0]) < 0.06, "the scene sampler changed: pick a seed with an object under the hand"
    contact = arrays["object_contact"]
    assert not contact[0] and contact[1:].any(), contact
    assert object_contact_fraction(contact) == contact[1:].mean() > 0
    assert objects_moved(arrays["object_pose"], arrays["object_valid"]) >= 1
    moved = int(np.argmax(object_displacement(arrays["object_pose"], arrays["object_valid"])))
    # The object knocked is the one under the hand, and only that one.
    distance = np.linalg.norm(infos[0]["object_pose"][:, :2] - infos[0]["ee_pos"][:2], axis=1)
    assert moved == int(np.argmin(np.where(infos[0]["object_valid"], distance, np.inf)))
    assert objects_moved(arrays["object_pose"], arrays["object_valid"]) == 1


def test_a_hand_pressed_onto_the_empty_table_registers_no_contact(env):
    arrays, infos = press_down(env, PRESS_ON_EMPTY_TABLE)
    assert nearest_object_xy(infos[0]) > 0.25, "the scene sampler changed: pick a seed with no object near the hand"
    assert arrays["state"][:, TCP_POS_STATE_DIMS][:, 2].min() < 0.02  # the hand did reach the table top
    assert not arrays["object_contact"].any()
    assert object_displacement(arrays["object_pose"], arrays["object_valid"]).max() < 0.005
    assert objects_moved(arrays["object_pose"], arrays["object_valid"]) == 0


@pytest.mark.parametrize("fmt", ["zarr", "webdataset"])
def test_recorded_episodes_keep_their_contacts_through_a_store(env, cfg, tmp_path, fmt):
    """EpisodeBuffer -> the collector's writer -> a reader: the same figures from the store as from the env."""
    from f1.collect.store_spec import collection_spec
    from f1.datasets import FORMAT_VERSION, EpisodeMeta, open_store, open_writer, verify_store
    from f1.datasets.stats import compute_stats

    episodes = [press_down(env, seed)[0] for seed in (PRESS_ON_OBJECT, PRESS_ON_EMPTY_TABLE)]
    spec = collection_spec(cfg)
    assert spec.object_slots == cfg.environment.domain_randomization.max_objects
    with open_writer(tmp_path / "s", fmt, spec, "n0w0", {}, 4) as writer:
        for i, arrays in enumerate(episodes):
            writer.add_episode(arrays, EpisodeMeta(f"e{i}", i, i, {}, T + 1))
    store = open_store(tmp_path / "s")
    assert store.manifest["format_version"] == FORMAT_VERSION and verify_store(tmp_path / "s") == []
    for info, arrays in zip(store.episodes, episodes):
        got = store.read_episode(info, keys=("object_pose", "object_valid", "object_contact"))
        for key, value in got.items():
            assert np.array_equal(value, arrays[key]), key
    e = compute_stats(store, sample_images=1)["exploration"]
    expected = exploration_summary(
        [a["state"][:, TCP_POS_STATE_DIMS] for a in episodes], [a["object_contact"] for a in episodes],
        [a["object_pose"] for a in episodes], [a["object_valid"] for a in episodes],
    )  # fmt: skip
    assert e["object_contact_fraction"] == pytest.approx(expected["object_contact_fraction"])
    assert e["object_contact_fraction"] > 0
    assert e["objects_moved"] == 0.5 and e["episodes_with_contact"] == 0.5
    assert e["union_voxels"] == union_voxels([a["state"][:, TCP_POS_STATE_DIMS] for a in episodes])


def test_exploration_figures_on_known_arrays():
    rest = np.zeros((5, 2, 7), np.float32)
    rest[..., 3] = 1.0
    valid = np.array([[True, False]] * 5)
    rest[:, 1] = 0.0
    pushed = rest.copy()
    pushed[3:, 0, 0] += 0.025  # 2.5 cm: moved
    nudged = rest.copy()
    nudged[2:, 0, 1] += 0.015  # 1.5 cm: not moved
    assert objects_moved(pushed, valid) == 1 and objects_moved(nudged, valid) == 0
    contact = np.array([True, False, True, True, False])  # step 0 never counts: 2 of 4 acted steps
    assert object_contact_fraction(contact) == 0.5
    a = np.array([[0.01, 0.01, 0.01], [0.06, 0.01, 0.01]])
    b = np.array([[0.06, 0.01, 0.01], [0.11, 0.01, 0.01]])
    assert union_voxels([a, b]) == 3
    summary = exploration_summary([a, b], [contact, ~contact], [pushed, nudged], [valid, valid])
    assert summary["object_contact_fraction"] == 0.5 and summary["objects_moved"] == 0.5
    assert summary["ee_voxels"] == 2.0 and summary["union_voxels"] == 3.0
