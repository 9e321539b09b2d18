"""`f1 train student --data STORE`: the explorer learns in a frozen world model's imagination (f1.train.offline.imagine).

The teacher is a freshly initialised tiny world model (GRU memory on, history 2 at stride 1) + tokenizer in the
teacher's checkpoint layout, as tests/test_online.py builds it; the store is written with the datasets writer:
4 wrist-only episodes of 3-5 steps, 32x32 frames, state and action padded to 32 (15 and 8 real). With 2 lanes of
8 steps and bptt 4 an epoch is 2 chunks, so a run of 3 iterations replays epoch 0 and the first chunk of epoch 1,
and a resume from checkpoint-2 starts at an epoch boundary. The run itself goes through the real `f1` CLI in a
subprocess that cannot import SAPIEN or mani_skill; only `f1 evaluate` and the online student (marked slow) need them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from f1.collect.env_spec import STATE_LAYOUT
from f1.collect.layout import GRIPPER_OPEN
from f1.datasets import EpisodeMeta, StoreSpec, open_writer
from f1.shared.config import load_config
from f1.shared.errors import UserError
from f1.train.checkpoint import CheckpointError
from f1.train.models.panda_kinematics import tcp_pose
from f1.train.run_outputs import read_metrics

from conftest import run_f1, save_fresh_teacher

pytestmark = pytest.mark.filterwarnings("ignore:Numcodecs codecs are not in the Zarr version 3 specification")

SIZE = 32
SCALE = 0.1  # environment.action_scale (the default)
LENGTHS = [3, 5, 4, 4]  # lanes {5, 3} and {4, 4}: 8 steps each, 2 chunks of 4; episode starts inside and at a chunk's start
SPEC = StoreSpec(image_hw=(SIZE, SIZE), cameras=("wrist",), state_dim=32, action_dim=32, real_state_dims=15, real_action_dims=8, control_freq=20)
MODEL = [
    f"environment.image_size=[{SIZE},{SIZE}]",
    f"model.tokenizer_image_size={SIZE}",
    "model.tokenizer_downsample=8",
    "model.tokenizer_channels=8",
    "model.tokenizer_levels=[4,4,2]",
    "model.code_dim=8",
    "model.hidden_size=32",
    "model.num_layers=1",
    "model.num_heads=2",
    "model.intermediate_size=64",
    "model.memory_enabled=true",
    "model.memory_hidden=16",
    "training.n_obs_img_steps=2",
    "training.obs_img_stride=1",
]
RUN = [  # the imagination phase's own sizes; the model's come from the teacher (its history too: said here to keep the log quiet)
    "training.n_obs_img_steps=2",
    "training.batch_size=2",
    "training.bptt_length=4",
    "training.log_every=1",
    "training.save_every=1",
    "training.sample_every=2",
    "training.prefetch_chunks=0",
    "student.imagine_horizon=3",
    "student.imagine_starts=4",
    "student.update_epochs=1",
    "student.num_minibatches=2",
    "student.ensemble_heads=3",
    "student.ensemble_hidden=16",
    "student.ensemble_replay=256",
    "student.ensemble_updates=2",
    "logging.tensorboard=false",
]
ITERATIONS = 3


def make_episode(i: int, n: int) -> tuple[dict[str, np.ndarray], EpisodeMeta]:
    """A gradient with a square moving a pixel a step; the arm moves as its actions command (plus a little slip)."""
    rng = np.random.default_rng(i)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    frames = np.empty((n, SIZE, SIZE, 3), np.uint8)
    for k in range(n):
        img = np.stack([xx * 6, yy * 5, np.full_like(xx, 30 * i)], axis=-1)
        img[4 + k : 12 + k, 6 + 2 * i : 14 + 2 * i] = (230, 40, 90)
        frames[k] = np.clip(img, 0, 255)
    action = np.zeros((n, 32), np.float32)
    action[:-1, :8] = rng.uniform(-1, 1, size=(n - 1, 8))
    q = np.zeros((n, 7), np.float32)
    q[0] = rng.normal(scale=0.5, size=7)
    for k in range(1, n):
        q[k] = q[k - 1] + SCALE * action[k - 1, :7] + rng.normal(scale=0.01, size=7)
    state = np.zeros((n, 32), np.float32)
    state[:, :7] = q
    state[0, 7] = 0.08
    state[1:, 7] = (action[:-1, 7] + 1) * GRIPPER_OPEN * 0.9
    pos, quat = tcp_pose(torch.from_numpy(q))
    state[:, 8:11], state[:, 11:15] = pos.numpy(), quat.numpy()
    k = np.arange(n)
    arrays = dict(wrist_rgb=frames, state=state, action=action, is_first=k == 0, is_last=k == n - 1, is_terminal=np.zeros(n, bool))
    return arrays, EpisodeMeta(f"ep{i:04d}", seed=i, scene_id=0, length=n)


def save_teacher(directory: Path, *sets: str) -> Path:
    """A fresh world model + tokenizer in the teacher's checkpoint layout, at this file's sizes (and `sets`)."""
    return save_fresh_teacher(directory, load_config(overrides=[*MODEL, *sets]))


def imagine_config(output_dir: Path, teacher: Path, *sets: str):
    return load_config(overrides=[*RUN, f"student.teacher_path={teacher}", f"student.output_dir={output_dir}", f"student.total_iterations={ITERATIONS}", *sets])


def run_imagine(cfg, store: Path, **kwargs):
    """The phase's real `main`, in this process, with a fresh Accelerate state."""
    from accelerate.state import AcceleratorState

    from f1.train.offline.imagine import main

    AcceleratorState._reset_state(reset_partial_state=True)
    return main(cfg, store, **kwargs)


def without_simulator(folder: Path) -> dict[str, str]:
    """An environment whose Python cannot import sapien or mani_skill (packages of those names that raise as a missing
    one does), with one torch thread (`one_thread`)."""
    for name in ("sapien", "mani_skill"):
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / "__init__.py").write_text(f"raise ModuleNotFoundError(\"No module named '{name}' (blocked by the test)\", name={name!r})\n")
    path = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def cli(store: Path, teacher: Path, output_dir: Path, *extra: str, env=None) -> subprocess.CompletedProcess:
    sets = [arg for s in RUN for arg in ("--set", s)]
    return run_f1("train", "student", "--data", store, "--teacher_path", teacher, "--output-dir", output_dir,
                  "--total-iterations", str(ITERATIONS), *sets, *extra, env=env, timeout=300)  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread here and in the subprocesses: the runs are tiny, and two threads on a busy 2-core machine are
    ~25x slower (OpenMP threads spinning against each other). The CLI run and the in-process resume then agree on it too."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("imagine")


@pytest.fixture(scope="module")
def teacher(work: Path) -> Path:
    return save_teacher(work)


@pytest.fixture(scope="module")
def store(work: Path) -> Path:
    with open_writer(work / "store", "zarr", SPEC, "n0w0", {"test": True}, episodes_per_shard=2) as writer:
        for i, n in enumerate(LENGTHS):
            writer.add_episode(*make_episode(i, n))
    return work / "store"


@pytest.fixture(scope="module")
def no_sim(work: Path) -> dict[str, str]:
    env = without_simulator(work / "no_sim")
    for name in ("sapien", "mani_skill"):
        probe = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True, env={**os.environ, **env})
        assert probe.returncode != 0 and "blocked by the test" in probe.stderr, (name, probe.stderr[-500:])
    return env


@pytest.fixture(scope="module")
def imagined_run(work, store, teacher, no_sim) -> Path:
    """`f1 train student --data STORE`, 3 iterations, a checkpoint each, in a Python without SAPIEN."""
    out = work / "student"
    result = cli(store, teacher, out, env=no_sim)
    assert result.returncode == 0, result.stderr[-4000:]
    return out


# --------------------------------------------------------------------------- 1. the phase, without a simulator


def test_the_phase_runs_without_sapien_and_writes_student_checkpoints(imagined_run, teacher, store):
    from f1.train.checkpoint import load_checkpoint

    assert sorted(p.name for p in imagined_run.glob("checkpoint-*")) == [f"checkpoint-{i}" for i in range(1, ITERATIONS + 1)]
    for step in range(1, ITERATIONS + 1):
        ckpt = imagined_run / f"checkpoint-{step}"
        for name in ("model.pt", "training_state.pt", "metrics.pt", "peft_adapter/adapter_config.json", "peft_adapter/adapter_model.safetensors"):
            assert (ckpt / name).is_file(), (step, name)
    checkpoint = load_checkpoint(imagined_run / f"checkpoint-{ITERATIONS}")
    model_config = checkpoint.model["model_config"]
    assert model_config["phase"] == "student" and model_config["mode"] == "imagination", model_config
    assert Path(model_config["teacher_path"]) == teacher.resolve()
    assert checkpoint.model["model"] and not any(k.startswith("backbone.") for k in checkpoint.model["model"])
    state = checkpoint.training_state
    assert state["phase"] == "student-imagination" and state["batch_size"] == 2 and state["world_size"] == 1
    # 2 chunks an epoch: after 3 iterations the next chunk is epoch 1's second; 3 imagined steps from 4 starts each
    assert state["progress"] == {"iteration": ITERATIONS, "epoch": 1, "chunk": 1, "imagined_steps": ITERATIONS * 3 * 4}, state["progress"]
    # sample_every=2 and the last iteration: exactly those pictures, real PNGs
    samples = sorted(p.name for p in (imagined_run / "samples").iterdir())
    assert samples == ["imagined_2.png", "imagined_3.png"], samples
    assert (imagined_run / "samples" / "imagined_2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    records = read_metrics(imagined_run)
    assert [r["step"] for r in records] == [1, 2, 3]
    for r in records:
        for key in ("reward/total", "reward/ensemble_disagreement", "policy/loss", "policy/approx_kl", "curiosity/loss"):
            assert np.isfinite(r[key]), (key, r[key])
        assert r["reward/ensemble_disagreement"] > 0 and r["train/imagined_steps"] == r["step"] * 3 * 4


@pytest.mark.parametrize(
    ("name", "setting", "message"),
    [("strided", "training.obs_img_stride=2", "obs_img_stride=1"), ("one_frame", "training.n_obs_img_steps=1", "n_obs_img_steps >= 2")],
)
def test_a_teacher_whose_history_imagination_cannot_roll_is_refused(work, store, name, setting, message):
    """A strided history, or one frame (the ensemble's input needs the step before), stops with one line."""
    teacher = save_teacher(work / name, setting)
    with pytest.raises(UserError, match=message) as refused:
        run_imagine(imagine_config(work / f"{name}_student", teacher), store)
    assert "\n" not in str(refused.value)
    assert not (work / f"{name}_student").exists()


# --------------------------------------------------------------------------- 2. starts, memory and determinism


@pytest.fixture(scope="module")
def replayed(teacher, store):
    """Every chunk of epoch 0 as the phase replays it: (chunk, inputs, memory entering it, starts)."""
    from f1.datasets import open_store
    from f1.datasets.replay import OrderedReplay
    from f1.train.offline.imagination import replay_starts
    from f1.train.offline.teacher import rank_episodes
    from f1.train.offline.teacher_batch import cached_tokens, chunk_inputs
    from f1.train.offline.token_cache import TokenCache
    from f1.train.online.models import freeze, load_world_model

    bundle = load_world_model(teacher, "--teacher_path")
    world_model, tokenizer = freeze(bundle.world_model), freeze(bundle.tokenizer)
    reader = open_store(store)
    replay = OrderedReplay(reader.episodes, reader.read_steps, batch_size=2, bptt_length=4, history=2, stride=1, rank=0,
                           world_size=1, seed=0, keys=("state", "action", "is_first", "is_last"), prefetch=0)  # fmt: skip
    cache = TokenCache(reader, tokenizer, ("wrist",))
    cache.warm(rank_episodes(replay, 0))
    memory = torch.full_like(world_model.initial_memory(2), 0.5)  # not zeros: a reset must show
    chunks = []
    for chunk in replay.iter_chunks(0):
        inputs, _, _ = chunk_inputs(chunk, cached_tokens(chunk, cache, 2, 1, torch.device("cpu"), use_head=False), bundle.normalizers, torch.device("cpu"))
        entering = memory.clone()
        starts, memory = replay_starts(world_model, chunk, inputs, memory)
        chunks.append((chunk, inputs, entering, starts))
    reader.close()
    return {"bundle": bundle, "chunks": chunks}


def test_the_memory_of_a_start_resets_at_its_episodes_first_step(replayed):
    first_rows = later_rows = 0
    for chunk, inputs, entering, starts in replayed["chunks"]:
        valid = torch.from_numpy(np.asarray(chunk["valid"]))  # (B,L)
        row = torch.full(valid.shape, -1, dtype=torch.long)
        row[valid] = torch.arange(int(valid.sum()))  # (b, k) -> its start's row
        is_first = inputs["is_first"]
        assert torch.equal(starts.is_first, is_first[valid])
        for b in range(valid.shape[0]):
            for k in range(valid.shape[1]):
                if not valid[b, k]:
                    continue
                m = starts.memory[:, row[b, k]]  # (L_m,Hm)
                if is_first[b, k]:
                    assert torch.count_nonzero(m) == 0, (b, k, m)
                    first_rows += 1
                else:
                    assert m.abs().max() > 1e-4, (b, k, "an episode's later step has no memory")
                    later_rows += 1
                    if k == 0:  # carried in from the chunk before, untouched
                        assert torch.equal(m, entering[:, b])
            # the start's own step within its episode: the position before it, in the same lane, is that episode's
            steps = np.asarray(chunk["step"])[b]
            for k in range(1, valid.shape[1]):
                if valid[b, k] and not is_first[b, k]:
                    assert steps[k] == steps[k - 1] + 1
    # every episode's first step once (two of them reset the 0.5s entering chunk 0, one the memory carried into chunk 1)
    assert (first_rows, later_rows) == (len(LENGTHS), sum(LENGTHS) - len(LENGTHS))


def test_the_states_of_a_start_are_its_steps_and_the_step_before(replayed):
    for chunk, inputs, _, starts in replayed["chunks"]:
        valid = np.asarray(chunk["valid"])
        length = valid.shape[1]
        context = chunk["state"].shape[1] - length - 1
        states = torch.from_numpy(np.asarray(chunk["state"])).float()
        actions = torch.from_numpy(np.asarray(chunk["action"])).float()
        now, before = states[:, context : context + length], states[:, context - 1 : context + length - 1]
        first = inputs["is_first"]
        assert torch.equal(starts.state, now[torch.from_numpy(valid)])
        want_previous = torch.where(first[..., None], now, before)[torch.from_numpy(valid)]
        assert torch.equal(starts.previous_state, want_previous)
        want_action = torch.where(first[..., None], 0.0, actions[:, context - 1 : context + length - 1, :8])[torch.from_numpy(valid)]
        assert torch.equal(starts.previous_action, want_action)


def imagine_from(replayed, seed: int, keep_frames: bool = True):
    from f1.train.offline.imagination import imagine, replay_transitions
    from f1.train.online.curiosity import STORE_INPUT_DIM, STORE_TARGET_DIM, ProprioEnsemble
    from f1.train.online.models import architecture_config, new_explorer

    bundle = replayed["bundle"]
    torch.manual_seed(123)  # the explorer and the ensemble: the same every call
    explorer = new_explorer(bundle.world_model, architecture_config(load_config(overrides=RUN), bundle.config)).eval()
    ensemble = ProprioEnsemble(3, 16, 256, STORE_INPUT_DIM, STORE_TARGET_DIM)
    chunk, _, _, starts = replayed["chunks"][1]
    ensemble.add(*replay_transitions(chunk, starts, SCALE, torch.device("cpu")))
    ensemble.fit(torch.optim.Adam(ensemble.net.parameters(), lr=1e-3), 3, 256)
    rows = torch.tensor([0, 2, 5, 7])
    torch.manual_seed(seed)
    return imagine(starts.take(rows), explorer, bundle.world_model, bundle.tokenizer, ensemble, bundle.normalizers, 3, SCALE, keep_frames=keep_frames)


def test_imagined_rollouts_are_the_same_given_the_seed(replayed):
    first, again, other = imagine_from(replayed, 7), imagine_from(replayed, 7), imagine_from(replayed, 8)
    assert first.actions.shape == (3, 4, 32) and first.states.shape == (4, 4, 32) and first.frames.shape == (4, 4, 3, SIZE, SIZE)
    for name in ("tokens", "memory", "states", "actions", "logprobs", "values", "disagreement", "next_value", "frames"):
        assert torch.equal(getattr(first, name), getattr(again, name)), name
    assert not torch.equal(first.actions, other.actions)
    assert not torch.equal(first.states[1:], other.states[1:])  # the imagined arm follows the actions
    # the memory moves along the imagined steps (the GRU is on), the start's own is the replayed one
    assert all(not torch.equal(first.memory[k], first.memory[k + 1]) for k in range(3))
    # the imagined state: the ensemble's next joints, the tool pose by forward kinematics, padding kept
    for k in range(1, 4):
        pos, quat = tcp_pose(first.states[k, :, STATE_LAYOUT["arm_qpos"]])
        torch.testing.assert_close(first.states[k, :, STATE_LAYOUT["tcp_pos"]], pos)
        torch.testing.assert_close(first.states[k, :, STATE_LAYOUT["tcp_quat_wxyz"]], quat)
        assert torch.equal(first.states[k, :, 15:], first.states[0, :, 15:])


# --------------------------------------------------------------------------- 3. exact resume


@pytest.mark.parametrize("step", [2, 1])
def test_a_resume_continues_exactly(imagined_run, work, store, teacher, step):
    """Resumed (in this process) from checkpoint-<step> of the CLI's run, the iterations after it give the same figures
    and weights. From 2 the resume starts epoch 1 (a new lane plan, every lane at an episode's first step); from 1 it
    goes on mid-epoch, where a lane's memory carries into the chunk (its episode goes on at the chunk's start)."""
    resumed = work / f"student_resumed_{step}"
    shutil.copytree(imagined_run / f"checkpoint-{step}", resumed / f"checkpoint-{step}")
    run_imagine(imagine_config(resumed, teacher), store, resume=resumed / f"checkpoint-{step}")
    again, uninterrupted = read_metrics(resumed), read_metrics(imagined_run)[step:]
    assert [r["step"] for r in again] == [r["step"] for r in uninterrupted] == list(range(step + 1, ITERATIONS + 1))
    for ours, theirs in zip(again, uninterrupted):
        for key in ("reward/total", "reward/ensemble_disagreement", "policy/loss", "policy/approx_kl", "curiosity/loss", "curiosity/return_std"):
            assert ours[key] == theirs[key], (ours["step"], key, ours[key], theirs[key])
    a = torch.load(resumed / f"checkpoint-{ITERATIONS}" / "model.pt", weights_only=False)["model"]
    b = torch.load(imagined_run / f"checkpoint-{ITERATIONS}" / "model.pt", weights_only=False)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_resume_with_another_lane_count_is_refused(imagined_run, work, store, teacher):
    resumed = work / "student_refused_resume"
    shutil.copytree(imagined_run / "checkpoint-2", resumed / "checkpoint-2")
    with pytest.raises(CheckpointError, match="training.batch_size=2") as refused:
        run_imagine(imagine_config(resumed, teacher, "training.batch_size=3"), store, resume=resumed / "checkpoint-2")
    assert "\n" not in str(refused.value) and sorted(p.name for p in resumed.iterdir()) == ["checkpoint-2"]


# --------------------------------------------------------------------------- 4. the checkpoint elsewhere: --init-explorer, f1 evaluate


def test_init_explorer_on_another_teacher_is_refused(imagined_run, work, store, teacher):
    other = work / "other_teacher" / "checkpoint-1"
    shutil.copytree(teacher, other)  # the same weights, but another teacher checkpoint
    ckpt = imagined_run / "checkpoint-3"
    with pytest.raises(UserError, match="--init-explorer") as refused:
        run_imagine(imagine_config(work / "refused_imagine", other, f"student.init_explorer={ckpt}"), store)
    assert "\n" not in str(refused.value) and str(teacher.resolve()) in str(refused.value)

    from accelerate.state import AcceleratorState

    from f1.train.online.student import main as online_student

    AcceleratorState._reset_state(reset_partial_state=True)
    with pytest.raises(UserError, match="--init-explorer"):
        online_student(load_config(overrides=[*RUN, f"student.teacher_path={other}", f"student.init_explorer={ckpt}",
                                              f"student.output_dir={work / 'refused_online'}"]))  # fmt: skip
    assert not (work / "refused_imagine").exists() and not (work / "refused_online").exists()


@pytest.mark.slow
def test_the_online_student_starts_from_the_imagined_explorer(imagined_run, work, teacher):
    from accelerate.state import AcceleratorState

    from f1.train.checkpoint import load_checkpoint
    from f1.train.online.student import main as online_student

    ckpt = imagined_run / "checkpoint-3"
    saved = torch.load(ckpt / "model.pt", weights_only=False)["model"]
    seen = []

    def hook(record):
        if record["buffer"] is None:  # before the first update
            seen.append({k: v.detach().clone() for k, v in record["explorer"].state_dict().items()})

    cfg = load_config(overrides=[
        *RUN, f"environment.image_size=[{SIZE},{SIZE}]", "training.steps_per_episode=3", "student.envs=1",
        "student.total_iterations=1", f"student.teacher_path={teacher}", f"student.init_explorer={ckpt}",
        f"student.output_dir={work / 'online'}",
    ])  # fmt: skip
    AcceleratorState._reset_state(reset_partial_state=True)
    online_student(cfg, on_iteration=hook)
    (before,) = seen
    heads = {k: v for k, v in before.items() if not k.startswith("backbone.")}
    assert heads.keys() == saved.keys() and all(torch.equal(heads[k], saved[k]) for k in saved)
    from safetensors.torch import load_file

    adapter = load_file(ckpt / "peft_adapter" / "adapter_model.safetensors")  # base_model.model.<module>.lora_A.weight
    assert adapter and any("lora_B" in k and v.abs().max() > 0 for k, v in adapter.items())  # trained: lora_B starts at 0
    for key, value in adapter.items():
        ours = "backbone." + key.replace(".weight", ".default.weight")
        assert torch.equal(before[ours], value), key
    online = load_checkpoint(work / "online" / "checkpoint-1").model["model_config"]
    assert online["init_explorer"] == str(ckpt.resolve()) and online.get("mode") != "imagination"


@pytest.mark.slow
def test_f1_evaluate_loads_the_imagined_checkpoint(imagined_run, work):
    from accelerate.state import AcceleratorState

    from f1.train.evaluate import main as evaluate

    out = work / "evaluate"
    AcceleratorState._reset_state(reset_partial_state=True)
    report = evaluate(load_config(overrides=["training.steps_per_episode=3"]), imagined_run / "checkpoint-3", episodes=1, output_dir=out)
    assert report["phase"] == "student" and json.loads((out / "report.json").read_text())["phase"] == "student"
    policies = report["exploration"]["policies"]
    assert "explorer (sampled)" in policies and len(policies["explorer (sampled)"]["voxels_per_episode"]) == 1


# --------------------------------------------------------------------------- 5. the imagined next state


def test_the_ensembles_mean_is_the_imagined_next_joints_and_width():
    from f1.train.online.curiosity import STORE_INPUT_DIM, STORE_TARGET_DIM, ProprioEnsemble, next_proprio, store_features, store_transitions

    offset = torch.tensor([0.01, -0.02, 0.03, -0.005, 0.0, 0.02, -0.01, 0.004])
    gen = torch.Generator().manual_seed(0)
    xs, ys = [], []
    for _ in range(8):  # episodes whose arm lands offset away from where its actions command, its gripper too
        t = 12
        applied = torch.zeros(t + 1, 32)
        applied[:, :8] = torch.rand(t + 1, 8, generator=gen) * 2 - 1
        states = torch.zeros(t + 1, 32)
        states[0, :7] = torch.randn(7, generator=gen) * 0.5
        states[0, 7] = 0.05
        for k in range(t):
            states[k + 1, :7] = states[k, :7] + SCALE * applied[k, :7] + offset[:7]
            states[k + 1, 7] = (applied[k, 7] + 1) * GRIPPER_OPEN + offset[7]
        x, y = store_transitions(states, applied, SCALE)
        assert x.shape == (t, STORE_INPUT_DIM) and y.shape == (t, STORE_TARGET_DIM)
        torch.testing.assert_close(y, offset.expand(t, -1), atol=1e-6, rtol=0)  # the store's target: the slip
        xs.append(x), ys.append(y)
    torch.manual_seed(0)
    ensemble = ProprioEnsemble(3, 16, 256, STORE_INPUT_DIM, STORE_TARGET_DIM)
    ensemble.add(torch.cat(xs), torch.cat(ys))
    ensemble.fit(torch.optim.Adam(ensemble.net.parameters(), lr=1e-3), 20, 64)

    state = torch.zeros(5, 32)
    state[:, :7] = torch.randn(5, 7, generator=gen) * 0.5
    state[:, 7] = 0.03
    action = torch.rand(5, 8, generator=gen) * 2 - 1
    target, spread = ensemble.imagine(store_features(state, state, action, torch.zeros(5, 8)))
    assert target.shape == (5, 8) and spread.shape == (5,) and torch.all(spread >= 0) and torch.isfinite(spread).all()
    joints, width = next_proprio(state, action, target, SCALE)
    torch.testing.assert_close(joints, state[:, :7] + SCALE * action[:, :7] + offset[:7], atol=1e-5, rtol=0)
    torch.testing.assert_close(width, (action[:, 7:8] + 1) * GRIPPER_OPEN + offset[7], atol=1e-5, rtol=0)


def test_imagined_state_sets_the_arm_and_the_tool_pose_by_kinematics():
    from f1.train.offline.imagination import imagined_state

    gen = torch.Generator().manual_seed(1)
    state = torch.randn(4, 32, generator=gen)
    original = state.clone()
    joints, width = torch.randn(4, 7, generator=gen), torch.rand(4, 1, generator=gen) * 0.08
    out = imagined_state(state, joints, width)
    pos, quat = tcp_pose(joints)
    assert torch.equal(out[:, 0:7], joints) and torch.equal(out[:, 7:8], width)
    assert torch.equal(out[:, 8:11], pos) and torch.equal(out[:, 11:15], quat)
    assert torch.equal(out[:, 15:], original[:, 15:]) and torch.equal(state, original)  # padding kept, input untouched
    assert not torch.allclose(pos, original[:, 8:11])


# --------------------------------------------------------------------------- 5. ranks


def test_two_cpu_ranks_each_replay_their_own_lanes(work, store, teacher, no_sim):
    """`accelerate launch --cpu --num_processes 2`: one checkpoint with both ranks' lanes and ensembles, steps counted over both."""
    from f1.train.checkpoint import load_checkpoint

    out = work / "student_ddp"
    sets = [arg for s in RUN for arg in ("--set", s)]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "-m", "f1", "train", "student",
               "--data", str(store), "--teacher_path", str(teacher), "--output-dir", str(out), "--total-iterations", "2", *sets]  # fmt: skip
    result = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=300, env={**os.environ, **no_sim})
    assert result.returncode == 0, result.stderr[-3000:]
    state = load_checkpoint(out / "checkpoint-2").training_state
    assert state["world_size"] == 2 and state["progress"]["imagined_steps"] == 2 * 2 * 3 * 4, state["progress"]
    lanes = [rank["lane_cursors"] for rank in state["ranks"]]
    assert len(lanes) == 2 and lanes[0] != lanes[1], lanes  # each rank its own lanes
    first, second = (rank["ensemble"]["replay_x"] for rank in state["ranks"])
    assert not torch.equal(first, second)  # each rank's ensemble trained on its own transitions
