"""The online phases: rewards, GAE/PPO, rollouts in real SAPIEN envs, student, adversarial, evaluate, resume.

The teacher is a freshly initialised world model + tokenizer saved in the
teacher's checkpoint layout (training one is the teacher tests' job); the
envs are real, 32x32, episodes of T = 6 actions in 2 envs. The phases run
in this process, so SAPIEN compiles its shaders once for the whole module.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from f1.shared.config import load_config
from f1.shared.errors import UserError
from f1.train.checkpoint import CheckpointError
from f1.train.online.coverage import coverage_curve, distinct_voxels
from f1.train.online.ppo import compute_gae, ppo_loss
from f1.train.online.rewards import StepSignals, StudentReward, memory_divergence, prediction_error, wm_uncertainty
from f1.train.run_outputs import read_metrics

from conftest import save_fresh_teacher

SIZE = 32  # env camera and tokenizer side: 4x4 tokens a frame
T = 6  # actions per episode
ENVS = 2
H, S = 3, 2  # history length and stride: the stride exercises the history gather


def online_config_sets(tmp: Path, *sets: str) -> list[str]:
    return [
        f"environment.image_size=[{SIZE},{SIZE}]",
        f"model.tokenizer_image_size={SIZE}",
        f"training.n_obs_img_steps={H}",
        f"training.obs_img_stride={S}",
        f"training.steps_per_episode={T}",
        "training.bptt_length=4",
        "training.log_every=1",
        "training.save_every=1",
        "training.sample_every=1000",
        f"student.envs={ENVS}",
        "student.num_minibatches=2",
        "adversarial.wm_updates_per_iteration=1",
        "logging.tensorboard=false",
        f"student.output_dir={tmp / 'student'}",
        f"adversarial.output_dir={tmp / 'adversarial'}",
        *sets,
    ]


def online_config(tmp: Path, *sets: str):
    return load_config(overrides=online_config_sets(tmp, *sets))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("online")


@pytest.fixture(scope="module")
def teacher_path(work: Path) -> Path:
    """A fresh world model + tokenizer in the teacher's checkpoint layout (f1.train.offline.teacher)."""
    return save_fresh_teacher(work, online_config(work))


def run_phase(module: str, *args, **kwargs):
    """A phase's real `main`, in this process, with a fresh Accelerate state (other tests may have made one)."""
    import importlib

    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    package = "f1.train" if module == "evaluate" else "f1.train.online"
    return importlib.import_module(f"{package}.{module}").main(*args, **kwargs)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict, after: dict) -> set[str]:
    assert before.keys() == after.keys(), sorted(set(before) ^ set(after))
    return {k for k in before if not torch.equal(before[k], after[k])}


# --------------------------------------------------------------------------- rewards, GAE, PPO (no simulator)


def test_reward_terms_match_their_definitions():
    before = torch.zeros(2, 3, 4)  # (num_layers, B, hidden)
    after = before.clone()
    after[:, 1] = 0.5  # lane 1 moves every unit by 0.5: RMS change 0.5
    assert torch.allclose(memory_divergence(before, after), torch.tensor([0.0, 0.5, 0.0]))

    from f1.train.models.world_model import FactorizedCodes

    codes = FactorizedCodes((4, 4))  # K = 16 codes, two digits of 4 levels: logits (B, n, 8)
    k = 16
    uniform = torch.zeros(2, 5, 8)  # every code equally likely
    peaked = torch.full((2, 5, 8), -30.0)
    peaked[..., [3, 4 + 0]] = 30.0  # code 3 = digits (3, 0)
    assert torch.allclose(wm_uncertainty(codes, uniform), torch.ones(2), atol=1e-6)
    assert torch.all(wm_uncertainty(codes, peaked) < 1e-6)
    logits = torch.randn(3, 5, 8)
    joint = (logits[..., :4].log_softmax(-1)[..., :, None] + logits[..., 4:].log_softmax(-1)[..., None, :])  # (3,5,4,4) [d0,d1]
    joint = joint.transpose(-1, -2).flatten(-2)  # code = d0 + 4 d1
    entropy = -(joint.exp() * joint).sum(-1).mean(-1)  # (3,) nats, brute force over the 16 codes
    assert torch.allclose(wm_uncertainty(codes, logits), entropy / math.log(k), atol=1e-5)
    targets = torch.full((2, 5), 3)
    assert torch.allclose(prediction_error(codes, uniform, targets), torch.ones(2), atol=1e-6)
    assert torch.all(prediction_error(codes, peaked, targets) < 1e-6)
    assert torch.allclose(prediction_error(codes, logits, torch.full((3, 5), 6)), -joint[..., 6].mean(-1) / math.log(k), atol=1e-5)

    def signals(before, after, logits, next_tokens, warped=None, next_frame=None, objects=None, next_objects=None, valid=None):
        b = logits.shape[0]
        frame, still = torch.zeros(b, 3, 4, 4), torch.zeros(b, 2, 3)
        return StepSignals(
            before, after, logits, next_tokens, frame if warped is None else warped, frame if next_frame is None else next_frame,
            still if objects is None else objects, still if next_objects is None else next_objects,
            torch.ones(b, 2, dtype=torch.bool) if valid is None else valid,
        )  # fmt: skip

    next_tokens = torch.full((3, 5), 6)
    # Without the world model's prediction only the terms that need none are computed, and only they may be paid.
    objects, moved = torch.zeros(3, 2, 3), torch.full((3, 2, 3), 0.005)
    full = StudentReward(codes, 2.0, 0.0, clutter_motion_weight=1.0)
    with_prediction = full(signals(before, after, logits, next_tokens, objects=objects, next_objects=moved))
    without = full(replace(signals(before, after, logits, next_tokens, objects=objects, next_objects=moved), logits=None, warped=None))
    assert set(without) == {"reward/memory_divergence", "reward/clutter_motion", "reward/total"} and not full.needs_prediction
    assert torch.equal(without["reward/total"], with_prediction["reward/total"])
    assert StudentReward(codes, 0.0, 0.5).needs_prediction and StudentReward(codes, 0, 0, unexplained_change_weight=1).needs_prediction
    with pytest.raises(AssertionError, match="needs the world model"):
        StudentReward(codes, 0.0, 0.5)(replace(signals(before, after, logits, next_tokens), logits=None, warped=None))
    seed_reward = StudentReward(codes, 2.0, 0.5)(signals(before, after, logits, next_tokens))
    assert torch.allclose(seed_reward["reward/total"], 2.0 * seed_reward["reward/memory_divergence"] + 0.5 * seed_reward["reward/wm_uncertainty"])
    # Every term is logged, weighted or not; surprise is error - uncertainty.
    assert torch.allclose(seed_reward["reward/surprise"], prediction_error(codes, logits, next_tokens) - wm_uncertainty(codes, logits))
    terms = StudentReward(codes, 0.0, 0.0, 0.5, 3.0)(signals(before, after, logits, next_tokens))
    assert torch.allclose(terms["reward/total"], 0.5 * terms["reward/prediction_error"] + 3.0 * terms["reward/surprise"])
    # Confidently wrong is surprising; a uniform guess is not (it expected to be wrong).
    assert torch.all(StudentReward(codes, 0, 0)(signals(before[:, :2], after[:, :2], peaked, torch.full((2, 5), 5)))["reward/surprise"] > 10)
    assert torch.allclose(StudentReward(codes, 0, 0)(signals(before[:, :2], after[:, :2], uniform, targets))["reward/surprise"], torch.zeros(2), atol=1e-5)
    # Unexplained change: 0 where the frame arrived as the motion warped it; the mean |difference| otherwise.
    warped = torch.rand(3, 3, 4, 4)
    moved = warped.clone()
    moved[1, :, :2] = 1 - moved[1, :, :2]  # env 1: half its rows changed beyond the motion's guess
    terms = StudentReward(codes, 0, 0, unexplained_change_weight=2.0)(signals(before, after, logits, next_tokens, warped, moved))
    expected = (moved - warped).abs().flatten(1).mean(1)
    assert terms["reward/unexplained_change"][0] == 0 and terms["reward/unexplained_change"][1] > 0.1
    assert torch.allclose(terms["reward/unexplained_change"], expected) and torch.allclose(terms["reward/total"], 2.0 * expected)
    # Clutter motion: objects moved this step, each up to once (at 2 cm); empty slots and still objects pay nothing.
    objects = torch.zeros(3, 2, 3)
    moved = objects.clone()
    moved[0, 0, 0] = 0.01  # env 0: one object 1 cm -> half an object
    moved[1, :, 1] = 0.5  # env 1: both objects far -> 2
    moved[2, 1, 2] = 0.5  # env 2: a far move, but of an empty slot -> 0
    valid = torch.tensor([[True, True], [True, True], [True, False]])
    terms = StudentReward(codes, 0, 0, clutter_motion_weight=3.0)(signals(before, after, logits, next_tokens, objects=objects, next_objects=moved, valid=valid))
    assert torch.allclose(terms["reward/clutter_motion"], torch.tensor([0.5, 2.0, 0.0]))
    assert torch.allclose(terms["reward/total"], 3.0 * terms["reward/clutter_motion"])
    # Without the objects' poses (environment.privileged_info off) clutter motion is neither computed nor payable.
    blind = replace(signals(before, after, logits, next_tokens), object_pos=None, next_object_pos=None, object_valid=None)
    blind_terms = StudentReward(codes, 2.0, 0.5)(blind)
    assert "reward/clutter_motion" not in blind_terms and torch.equal(blind_terms["reward/total"], seed_reward["reward/total"])
    with pytest.raises(AssertionError, match="hides the objects"):
        StudentReward(codes, 0, 0, clutter_motion_weight=1.0)(blind)


def test_gae_matches_a_direct_sum_and_stops_at_terminal_steps():
    gamma, lam = 0.9, 0.8
    rewards = torch.tensor([[1.0], [0.0], [2.0]])  # (T=3, M=1)
    values = torch.tensor([[0.5], [0.2], [0.1]])
    next_value = torch.tensor([0.7])
    advantages, returns = compute_gae(rewards, values, torch.zeros(3, 1, dtype=torch.bool), next_value, gamma, lam)
    v_after = [0.2, 0.1, 0.7]
    deltas = [float(rewards[t, 0] + gamma * v_after[t] - values[t, 0]) for t in range(3)]
    expected = [sum((gamma * lam) ** (j - t) * deltas[j] for j in range(t, 3)) for t in range(3)]
    assert torch.allclose(advantages[:, 0], torch.tensor(expected)), (advantages, expected)
    assert torch.allclose(returns, advantages + values)

    terminated = torch.tensor([[False], [True], [False]])
    advantages, _ = compute_gae(rewards, values, terminated, next_value, gamma, lam)
    assert torch.isclose(advantages[1, 0], rewards[1, 0] - values[1, 0])  # no value after a terminal step


def test_ppo_loss_clips_the_ratio_and_reports_it():
    new = torch.tensor([0.0, 0.5, -0.5, 0.0], requires_grad=True)  # log-ratios 0, +0.5, -0.5, 0
    old = torch.zeros(4)
    advantages = torch.tensor([1.0, 1.0, -1.0, -1.0])
    loss, stats = ppo_loss(new, old, torch.zeros(4), torch.zeros(4), advantages, torch.zeros(4),
                           clip_coef=0.2, vf_coef=0.5, ent_coef=0.0, norm_adv=False)  # fmt: skip
    loss.backward()
    assert stats.clip_fraction == 0.5, stats
    # samples 1 and 2 sit beyond the clip on the side their advantage pushes: no gradient
    assert new.grad[1] == 0 and new.grad[2] == 0 and new.grad[0] != 0 and new.grad[3] != 0, new.grad
    assert stats.approx_kl > 0


def test_coverage_counts_distinct_5cm_voxels():
    path = np.array([[0.01, 0.01, 0.01], [0.02, 0.03, 0.04], [0.06, 0.01, 0.01], [0.01, 0.01, 0.01], [-0.01, 0.0, 0.0]])
    assert distinct_voxels(path) == 3
    assert coverage_curve(path).tolist() == [1, 1, 2, 2, 3]


def test_rollout_history_matches_the_teachers_chunks(work, teacher_path):
    """The world model sees online exactly the inputs and targets the teacher trained on from a store."""
    from f1.train.online.models import load_world_model
    from f1.train.online.rollout_wm import chunk_batch
    from f1.train.offline.teacher_batch import chunk_inputs, episode_chunk, window_tokens
    from f1.train.offline.token_cache import preprocess_frames

    bundle = load_world_model(teacher_path, "--teacher_path")
    rng = np.random.default_rng(0)
    n = T + 1
    arrays = {
        "wrist_rgb": rng.integers(0, 255, (n, SIZE, SIZE, 3), dtype=np.uint8),
        "action": rng.uniform(-1, 1, (n, 32)).astype(np.float32),
        "state": rng.normal(0, 1, (n, 32)).astype(np.float32),
    }
    arrays["action"][-1] = 0.0
    chunk, cpu = episode_chunk(arrays, H, S), torch.device("cpu")
    window = window_tokens(chunk, bundle.tokenizer, cpu, False)
    want, want_targets, _ = chunk_inputs(chunk, window, bundle.normalizers, cpu)
    wrist = torch.from_numpy(arrays["wrist_rgb"])
    rollout = {  # what collect_rollout keeps, one env
        "tokens": bundle.tokenizer.encode(wrist)[:, None],  # (N,1,n)
        "frames": preprocess_frames(bundle.tokenizer, wrist)[:, None],  # (N,1,3,S,S)
        "applied": torch.from_numpy(arrays["action"])[:, None],
        "states": torch.from_numpy(arrays["state"])[:, None],
    }
    got, got_targets, got_next_frames, _ = chunk_batch(rollout, torch.arange(T), H, S, bundle.normalizers)
    assert set(got) == set(want)  # the motion's frame included
    for key in want:
        assert torch.equal(got[key], want[key]), key
    assert torch.equal(got_targets, want_targets)
    assert torch.equal(got_next_frames, window.next_frame)


# --------------------------------------------------------------------------- the student


class Recorder:
    """on_iteration hook: snapshots of the models before the first iteration and after the last."""

    def __init__(self):
        self.first: dict = {}
        self.last: dict = {}
        self.per_iteration: list[dict] = []
        self.trainable: set[str] = set()
        self.predicted: list[bool] = []  # per iteration: whether its rollout ran the world model's prediction

    def __call__(self, record: dict) -> None:
        if record["buffer"] is not None:
            self.predicted.append(bool(record["buffer"].prediction_ce.abs().sum() > 0))
        shot = {name: snapshot(record[name]) for name in ("world_model", "tokenizer", "explorer")}
        if not self.first:
            self.first = shot
            self.trainable = {k for k, p in record["explorer"].named_parameters() if p.requires_grad}
        self.last = shot
        self.per_iteration.append(shot)


@pytest.fixture(scope="module")
def student_run(work, teacher_path):
    hook = Recorder()
    # logging every 2nd iteration: the 1st rollout runs without the world model's prediction (nothing paid needs it)
    sets = (f"student.teacher_path={teacher_path}", "student.total_iterations=3", "training.log_every=2")
    progress = run_phase("student", online_config(work, *sets), record=work / "recorded", on_iteration=hook)
    return {"progress": progress, "hook": hook, "sets": sets, "output_dir": work / "student"}


def resume_copy(output_dir: Path, step: int, into: Path) -> Path:
    """A new output dir holding only checkpoint-<step> of `output_dir`: a run killed after that checkpoint."""
    import shutil

    shutil.copytree(output_dir / f"checkpoint-{step}", into / f"checkpoint-{step}")
    return into / f"checkpoint-{step}"


@pytest.mark.slow
def test_student_rewards_are_finite_and_nonzero(student_run):
    assert student_run["progress"].iteration == 3 and student_run["progress"].episodes == 3 * ENVS
    records = read_metrics(student_run["output_dir"])
    assert [r["step"] for r in records] == [2, 3]  # every 2nd iteration and the last
    assert student_run["hook"].predicted == [False, True, True]  # the prediction where the terms are logged
    for r in records:
        # the seed's terms and the world model's error are logged though not paid (weight 0 by default)
        for key in ("reward/memory_divergence", "reward/wm_uncertainty", "reward/prediction_error", "reward/unexplained_change"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r[key])
        for key in ("policy/entropy", "policy/approx_kl", "policy/clip_fraction", "explore/ee_voxels", "reward/surprise", "policy/episode_return"):
            assert math.isfinite(r[key]), (key, r[key])
        assert r["reward/clutter_motion"] >= 0
        assert 0 <= r["explore/object_contact_fraction"] <= 1 and r["explore/objects_moved"] >= 0
        assert r["explore/ee_voxels"] <= r["explore/union_voxels"] and r["explore/objects_on_table"] >= 1
        for key in ("reward/ensemble_error", "reward/ensemble_disagreement", "reward/joint_residual", "curiosity/loss", "curiosity/return_std"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r[key])
        # the default reward: the ensemble's error over the running spread of its return (f1.train.online.curiosity)
        assert r["reward/total"] == pytest.approx(r["reward/ensemble_error"] / r["curiosity/return_std"], rel=1e-5)


@pytest.mark.slow
def test_student_trains_only_lora_and_heads(student_run):
    hook = student_run["hook"]
    assert not changed(hook.first["world_model"], hook.last["world_model"]), "the frozen world model changed"
    assert not changed(hook.first["tokenizer"], hook.last["tokenizer"]), "the frozen tokenizer changed"
    moved = changed(hook.first["explorer"], hook.last["explorer"])
    assert moved, "the explorer did not train"
    assert moved <= hook.trainable, sorted(moved - hook.trainable)
    assert any("lora_" in k for k in moved) and any(k.startswith(("mean_head", "value_head")) for k in moved), sorted(moved)
    assert all("lora_" in k or not k.startswith("backbone.") for k in hook.trainable), sorted(hook.trainable)


@pytest.mark.slow
def test_student_checkpoint_layout_and_record_store(student_run, work):
    from f1.datasets import open_store
    from f1.datasets.schema import validate_episode

    ckpt = student_run["output_dir"] / "checkpoint-3"
    for name in ("model.pt", "training_state.pt", "metrics.pt", "peft_adapter/adapter_config.json"):
        assert (ckpt / name).is_file(), name
    model = torch.load(ckpt / "model.pt", weights_only=False)
    assert model["model_config"]["phase"] == "student" and not any(k.startswith("backbone.") for k in model["model"])
    assert (student_run["output_dir"] / "samples").is_dir() and any((student_run["output_dir"] / "videos").glob("*.mp4"))

    store = open_store(work / "recorded")
    assert len(store.episodes) == 3 * ENVS and set(store.spec.cameras) == {"head", "wrist"}
    info = store.episodes[0]
    validate_episode(store.read_episode(info), store.episode_meta(info), store.spec)
    assert info.length == T + 1
    assert store.spec.object_slots > 0 and store.read_episode(info, keys=["object_valid"])["object_valid"].any()


@pytest.mark.slow
def test_student_resume_continues_exactly(student_run, work):
    """Resumed from checkpoint-2, iteration 3 gives the same figures as the run that went on without stopping."""
    resumed_dir = work / "student_resumed"
    checkpoint = resume_copy(student_run["output_dir"], 2, resumed_dir)
    run_phase("student", online_config(work, *student_run["sets"], f"student.output_dir={resumed_dir}"), resume=checkpoint)
    (resumed,), uninterrupted = read_metrics(resumed_dir), read_metrics(student_run["output_dir"])[-1]
    assert resumed["step"] == uninterrupted["step"] == 3
    for key in ("reward/total", "policy/loss", "policy/approx_kl", "explore/ee_voxels", "reward/ensemble_error", "curiosity/loss"):
        assert resumed[key] == uninterrupted[key], (key, resumed[key], uninterrupted[key])

    with pytest.raises(CheckpointError, match="--envs"):
        run_phase("student", online_config(work, *student_run["sets"], f"student.output_dir={resumed_dir}", "student.envs=1"), auto_resume=True)


@pytest.mark.slow
def test_the_default_student_runs_without_the_object_poses(student_run, work):
    """The env hiding the clutter's poses and contacts changes nothing but the privileged term and the explore/ figures."""
    out = work / "student_blind"
    sets = (*student_run["sets"], "environment.privileged_info=false", f"student.output_dir={out}")
    run_phase("student", online_config(work, *sets))
    seen, blind = read_metrics(student_run["output_dir"]), read_metrics(out)
    assert [r["step"] for r in blind] == [r["step"] for r in seen]
    for with_poses, without in zip(seen, blind):
        privileged = {k for k in with_poses if k.startswith("explore/") or k == "reward/clutter_motion"}
        assert privileged and set(without) == set(with_poses) - privileged, sorted(set(without) ^ set(with_poses))
        for key in without:
            if not key.startswith("perf/"):
                assert without[key] == with_poses[key], (key, without[key], with_poses[key])


def test_a_privileged_reward_needs_the_object_poses(work):
    with pytest.raises(UserError, match="privileged_info"):
        run_phase("student", online_config(work / "none", f"student.teacher_path={work}", "environment.privileged_info=false",
                                           "student.clutter_motion_weight=1"))  # fmt: skip


def test_student_needs_a_teacher(work):
    with pytest.raises(UserError, match="--teacher_path"):
        run_phase("student", online_config(work / "none"))
    with pytest.raises(UserError, match="not a directory"):
        run_phase("student", online_config(work / "none", f"student.teacher_path={work / 'missing'}"))


# --------------------------------------------------------------------------- adversarial


@pytest.fixture(scope="module")
def adversarial_run(work, teacher_path, student_run):
    hook = Recorder()
    sets = (
        f"adversarial.teacher_checkpoint={teacher_path}",
        f"adversarial.student_checkpoint={student_run['output_dir'] / 'checkpoint-3'}",
        "adversarial.total_iterations=3",
    )
    progress = run_phase("adversarial", online_config(work, *sets), on_iteration=hook)
    return {"progress": progress, "hook": hook, "sets": sets, "output_dir": work / "adversarial"}


@pytest.mark.slow
def test_adversarial_alternates_and_both_parts_train(adversarial_run):
    hook = adversarial_run["hook"]
    assert len(hook.per_iteration) == 4  # before the first iteration, then after each of 3
    for before, after in zip(hook.per_iteration, hook.per_iteration[1:]):
        assert changed(before["world_model"], after["world_model"]), "the world model did not train this iteration"
        moved = changed(before["explorer"], after["explorer"])
        assert moved and moved <= hook.trainable, sorted(moved)
        assert not changed(before["tokenizer"], after["tokenizer"])
    for r in read_metrics(adversarial_run["output_dir"]):
        for key in ("adv/wm_loss_explorer_data", "adv/wm_loss_random_data", "wm/loss", "reward/prediction_error", "policy/approx_kl"):
            assert math.isfinite(r[key]), (key, r[key])
        assert r["reward/prediction_error"] > 0
    ckpt = adversarial_run["output_dir"] / "checkpoint-3"
    assert (ckpt / "explorer.pt").is_file() and (ckpt / "peft_adapter" / "adapter_config.json").is_file()


@pytest.mark.slow
def test_adversarial_resume_continues_exactly(adversarial_run, work):
    resumed_dir = work / "adversarial_resumed"
    checkpoint = resume_copy(adversarial_run["output_dir"], 2, resumed_dir)
    run_phase("adversarial", online_config(work, *adversarial_run["sets"], f"adversarial.output_dir={resumed_dir}"), resume=checkpoint)
    (resumed,), uninterrupted = read_metrics(resumed_dir), read_metrics(adversarial_run["output_dir"])[-1]
    assert resumed["step"] == uninterrupted["step"] == 3
    for key in ("adv/wm_loss_explorer_data", "adv/wm_loss_random_data", "wm/loss", "policy/loss"):
        assert resumed[key] == uninterrupted[key], (key, resumed[key], uninterrupted[key])


# --------------------------------------------------------------------------- evaluate


@pytest.mark.slow
def test_evaluate_writes_its_report(student_run, work):
    out = work / "evaluate"
    cfg = online_config(work)
    report = run_phase("evaluate", cfg, student_run["output_dir"] / "checkpoint-3", data=work / "recorded", episodes=2, output_dir=out)
    for name in ("report.md", "report.json", "horizon.png", "rollout.png", "coverage.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "report.json").read_text())["phase"] == "student"
    one_step, open_loop = report["prediction"]["one_step"], report["prediction"]["open_loop"]
    for key in ("psnr_model", "psnr_copy_current", "psnr_tokenizer", "psnr_shuffled_actions", "ssim_model", "ssim_copy_current",
                "token_accuracy", "token_accuracy_copy_current"):  # fmt: skip
        assert math.isfinite(one_step[key]), key
    assert 0.0 <= one_step["token_accuracy"] <= 1.0
    assert [row["k"] for row in open_loop] == list(range(1, len(open_loop) + 1)) and len(open_loop) == min(16, T)
    for row in open_loop:
        assert {"k", "psnr_model", "psnr_copy_last", "psnr_shuffled_actions", "ssim_model"} <= set(row), row
    assert "Memory ablation" in (out / "report.md").read_text()
    policies = report["exploration"]["policies"]
    assert {"explorer (sampled)", "random", "ou"} <= set(policies)
    for result in policies.values():
        assert len(result["voxels_per_episode"]) == 2 and 1 <= result["mean_voxels"] <= T + 1
        assert result["mean_voxels"] <= result["union_voxels"] <= 2 * (T + 1)
        assert 0.0 <= result["object_contact_fraction"] <= 1.0 and result["objects_moved"] >= 0
        assert result["object_contact_fraction"] == pytest.approx(sum(result["contact_steps_per_episode"]) / (2 * T))
        assert result["objects_on_table"] >= 1  # min_objects is 2: something to touch
    text = (out / "report.md").read_text()
    assert "Explorer (sampled) / random coverage" in text and "Object contact fraction" in text


@pytest.mark.slow
def test_evaluate_gives_the_same_contact_figures_twice(student_run, work):
    cfg = online_config(work)
    reports = [
        run_phase("evaluate", cfg, student_run["output_dir"] / "checkpoint-3", episodes=2, output_dir=work / f"evaluate_twice{i}")
        for i in range(2)
    ]
    first, second = (r["exploration"]["policies"] for r in reports)
    for name in first:
        for key in ("contact_steps_per_episode", "objects_moved", "voxels_per_episode", "union_voxels"):
            assert first[name][key] == second[name][key], (name, key, first[name][key], second[name][key])


def test_a_new_scene_gives_the_same_physics_whatever_ran_before():
    """Evaluation episode 14 (EVAL_STREAM, seed 0): random touched the clutter for 19 steps in a fresh scene and for 17
    after an OU episode in the same scene (PhysX keeps contact state across resets); `new_scene` rebuilds it."""
    from f1.collect.env import StudentEnv
    from f1.collect.policies import make_policy
    from f1.train.evaluate import EVAL_STREAM
    from f1.train.online.rollout import plan_round

    cfg = load_config(overrides=[f"environment.image_size=[{SIZE},{SIZE}]", "training.steps_per_episode=40"])
    env = StudentEnv(cfg)
    (slot,) = plan_round(0, EVAL_STREAM, 14, 0, 1, 1, "evaluate")

    def run(policy_name: str) -> tuple[np.ndarray, np.ndarray]:
        _, info = env.reset(seed=slot.seed, options={"scene_seed": slot.scene_seed, "new_scene": True})
        policy = make_policy(policy_name, env.action_dim)
        policy.reset(slot.seed)
        poses, contact = [info["object_pose"]], []
        for _ in range(40):
            _, _, _, _, info = env.step(policy.act())
            poses.append(info["object_pose"])
            contact.append(info["object_contact"])
        return np.stack(poses), np.array(contact)

    try:
        first = run("random")
        assert first[1].sum() > 5, first[1].sum()  # contact-rich: where the physics state shows
        run("ou")
        again = run("random")
    finally:
        env.close()
    assert np.array_equal(first[1], again[1]) and np.array_equal(first[0], again[0])


def test_evaluate_needs_data_for_a_teacher(work, teacher_path):
    with pytest.raises(UserError, match="--data"):
        run_phase("evaluate", online_config(work), teacher_path, output_dir=work / "evaluate_teacher")


# --------------------------------------------------------------------------- ranks and the CLI


@pytest.mark.slow
def test_student_on_two_cpu_ranks_records_each_ranks_envs(work, teacher_path, f1_cli):
    """`accelerate launch --cpu --num_processes 2`: two ranks, each its own env, one checkpoint, one store."""
    import subprocess
    import sys

    out, store = work / "student_ddp", work / "recorded_ddp"
    sets = [a for s in online_config_sets(work) for a in ("--set", s)]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "-m", "f1",
               "train", "student", "--teacher_path", str(teacher_path), "--output-dir", str(out), "--envs", "1",
               "--total-iterations", "1", "--record", str(store), *sets]  # fmt: skip
    result = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    from f1.datasets import open_store
    from f1.train.checkpoint import load_checkpoint

    state = load_checkpoint(out / "checkpoint-1").training_state
    assert state["world_size"] == 2 and state["progress"]["episodes"] == 2, state["progress"]
    ids = [e.episode_id for e in open_store(store).episodes]
    assert len(ids) == len(set(ids)) == 2, ids

    refused = f1_cli("train", "student", "--teacher_path", str(teacher_path), "--output-dir", str(out), "--auto_resume", *sets)
    assert refused.returncode == 2 and refused.stderr.startswith("error:") and "processes" in refused.stderr, refused.stderr
