"""f1.train.prediction_eval: the world model's figures against its baselines, on frames made here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from f1.shared.config import load_config
from f1.shared.normalizers import Normalizer
from f1.train.models.tokenizer import FSQTokenizer
from f1.train.models.world_model import WorldModel
from f1.train.prediction_eval import OPEN_LOOP_START_EVERY, PredictionEvaluator, shuffle_actions

SIZE, STEPS = 32, 11  # 32x32 frames, 8x8 tokens (downsample 4); 11 steps = 10 actions
SETTINGS = [f"model.tokenizer_image_size={SIZE}", "model.tokenizer_channels=8", "model.hidden_size=32", "model.num_layers=1",
            "model.intermediate_size=64", "model.memory_hidden=16", "training.n_obs_img_steps=2"]  # fmt: skip


def episode(seed: int, steps: int = STEPS) -> dict[str, np.ndarray]:
    """A coloured square sliding over a shaded table, one step an action."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE] / SIZE
    table = np.stack([60 + 80 * yy, 110 + 40 * xx, 70 + 30 * yy * xx], -1)
    frames = np.repeat(table[None], steps, 0)
    colour = rng.integers(0, 255, 3)
    for k in range(steps):
        frames[k, 8:16, 2 + 2 * k : 10 + 2 * k] = colour
    return {
        "wrist_rgb": frames.round().astype(np.uint8),
        "action": rng.normal(size=(steps, 32)).astype(np.float32),
        "state": rng.normal(size=(steps, 32)).astype(np.float32),
    }


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    cfg = load_config(overrides=SETTINGS)
    tokenizer = FSQTokenizer.from_config(cfg)
    frames = torch.from_numpy(np.concatenate([episode(seed)["wrist_rgb"] for seed in range(3)]))
    optimizer = torch.optim.Adam(tokenizer.parameters(), lr=3e-3)
    for _ in range(100):  # enough steps for codes that tell the square from the table
        loss = tokenizer(frames)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    tokenizer.eval()
    model = WorldModel(cfg, tokenizer.n_tokens, tokenizer.levels).eval()
    normalizers = {"action": Normalizer([0.0] * 8, [1.0] * 8, 8), "state": Normalizer([0.0] * 15, [1.0] * 15, 15)}
    return cfg, tokenizer, model, normalizers


def evaluator(models, horizon: int = 16) -> PredictionEvaluator:
    cfg, tokenizer, model, normalizers = models
    return PredictionEvaluator(model, tokenizer, normalizers, cfg.training.n_obs_img_steps, 1, use_head=False, seed=0, horizon=horizon)


def test_a_model_that_copies_its_input_scores_exactly_the_copy_baseline(models):
    """An untrained world model copies frame t: its motion starts at zero flow (the warp is the identity, up to
    float rounding in the resampling), its code head at zero, its copy bonus not."""
    ev = evaluator(models)
    ev.add_episode(episode(0))
    one = ev.summary()["one_step"]
    assert one["token_accuracy"] == one["token_accuracy_copy_current"]
    assert one["psnr_motion"] == pytest.approx(one["psnr_copy_current"], abs=1e-4)  # the identity warp
    assert one["psnr_model"] == pytest.approx(one["psnr_copy_current"], abs=1e-4)  # no change predicted: frame t
    assert one["psnr_model_codes"] == one["psnr_copy_current_tokens"]
    assert ev.summary()["open_loop"][0]["psnr_model"] == pytest.approx(ev.summary()["open_loop"][0]["psnr_copy_last"], abs=1e-4)
    assert one["token_accuracy_copy_current"] < 1.0  # the square moves: copying is not trivially right


def test_shuffled_actions_are_the_same_actions_in_another_order():
    actions = np.arange(11 * 3, dtype=np.float32).reshape(11, 3)
    shuffled = shuffle_actions(actions, np.random.default_rng(0))
    assert not np.array_equal(shuffled, actions)
    assert np.array_equal(np.sort(shuffled[:-1], axis=0), actions[:-1])  # the same rows ...
    assert np.array_equal(shuffled[-1], actions[-1])  # ... and the padding action stays last
    # the evaluator scores the shuffled run on the same frames: copy figures are computed once per frame
    assert shuffle_actions(actions, np.random.default_rng(0)).tobytes() == shuffled.tobytes()


def test_open_loop_is_deterministic_with_the_right_horizons(models):
    results = []
    for _ in range(2):
        ev = evaluator(models, horizon=16)
        ev.add_episode(episode(1))
        results.append(ev.summary())
    assert results[0] == results[1]  # nothing sampled, the shuffle seeded
    rows = results[0]["open_loop"]
    assert [row["k"] for row in rows] == list(range(1, STEPS))  # k <= N - 1 = 10 < 16
    starts = np.arange(0, STEPS - 1, OPEN_LOOP_START_EVERY)  # 0, 4, 8
    for row in rows:
        assert row["frames"] == int(np.sum(starts + row["k"] <= STEPS - 1)), row
    ev = evaluator(models, horizon=16)
    rollout = ev.episode_rollout(episode(2))
    assert rollout["truth"].shape == (STEPS, SIZE, SIZE, 3)
    assert rollout["one_step"].shape == rollout["open_loop"].shape == (STEPS - 1, SIZE, SIZE, 3)
    # open loop: step 1's prediction sees only the true frame 0, as the one-step prediction does
    assert np.allclose(rollout["open_loop"][0], rollout["one_step"][0], atol=1e-5)  # (batched alike up to float rounding)


def test_memory_ablation_and_baselines_are_on_the_same_frames(models):
    ev = evaluator(models)
    for seed in (3, 4):
        ev.add_episode(episode(seed))
    summary = ev.summary()
    assert summary["frames"] == 2 * (STEPS - 1)
    one = summary["one_step"]
    for key in ("psnr_model", "psnr_copy_current", "psnr_tokenizer", "psnr_shuffled_actions", "ssim_model", "ssim_copy_current",
                "token_accuracy", "token_accuracy_copy_current"):  # fmt: skip
        assert np.isfinite(one[key]), key
    memory = summary["memory"]
    assert memory["gain_db"] == pytest.approx(memory["psnr_memory_carried"] - memory["psnr_memory_zeroed"])


def test_frames_ahead_are_predicted_from_the_models_own_frames_at_the_right_steps(models):
    """training.n_pred_img_steps = 3: pass k at position p predicts from step p+k-1. On a still scene the untrained
    model's own frame is the true one, so pass 2 at p must give what pass 1 gives at p+1 (same step, same memory)."""
    from f1.train.offline.teacher_batch import ChunkModel, FrameTokens, ahead_mask, chunk_inputs, episode_chunk, tokenize_frames
    from f1.train.offline.token_cache import preprocess_frames

    cfg, tokenizer, model, normalizers = models
    arrays = episode(0)
    arrays["wrist_rgb"] = np.repeat(arrays["wrist_rgb"][:1], STEPS, 0)  # nothing moves
    history = cfg.training.n_obs_img_steps
    chunk = episode_chunk(arrays, history, 1)
    wrist = torch.from_numpy(arrays["wrist_rgb"])
    tokens, frames = tokenize_frames(tokenizer, wrist), preprocess_frames(tokenizer, wrist)
    index = torch.from_numpy(chunk["history_index"][0] - (history - 1)).clamp(min=0)
    inputs, _, mask = chunk_inputs(
        chunk, FrameTokens(tokens[index][None], None, tokens[1:][None], frames[:-1][None], frames[1:][None]), normalizers, torch.device("cpu")
    )  # fmt: skip
    with torch.no_grad():
        prediction, _, _, _, further = ChunkModel(model, tokenizer, pred_steps=3)(inputs, model.initial_memory(1))
    length = STEPS - 1
    assert [tuple(k_prediction.codes.shape[:2]) for k_prediction, _ in further] == [(1, length - 1), (1, length - 2)]
    assert [tuple(k_warped.shape) for _, k_warped in further] == [(1, length - 1, 3, SIZE, SIZE), (1, length - 2, 3, SIZE, SIZE)]
    assert torch.allclose(further[0][0].logits, prediction.logits[:, 1:], atol=1e-4)
    assert torch.allclose(further[1][0].logits, prediction.logits[:, 2:], atol=1e-4)
    assert ahead_mask(mask, inputs["is_first"], 2).all()


def test_frames_ahead_never_cross_into_the_next_episode():
    from f1.train.offline.teacher_batch import ahead_mask

    mask = torch.tensor([[True, True, True, True, False]])
    is_first = torch.tensor([[False, False, True, False, False]])  # a new episode starts at position 2
    # pass 2: position p counts when frame p+2 (target of q = p+1) exists in p's episode
    assert ahead_mask(mask, is_first, 2).tolist() == [[True, False, True, False]]
    assert ahead_mask(mask, is_first, 3).tolist() == [[False, False, False]]


def test_a_teacher_fed_the_head_frame_is_also_scored_without_it(models):
    cfg, tokenizer, model, normalizers = models
    arrays = episode(0)
    arrays["head_rgb"] = arrays["wrist_rgb"][:, ::-1].copy()  # any second camera
    with_head = PredictionEvaluator(model, tokenizer, normalizers, cfg.training.n_obs_img_steps, 1, use_head=True, seed=0)
    with_head.add_episode(arrays)
    one = with_head.summary()["one_step"]
    assert np.isfinite(one["psnr_model_without_head"])
    wrist_only = evaluator(models)
    wrist_only.add_episode(episode(0))
    assert "psnr_model_without_head" not in wrist_only.summary()["one_step"]  # nothing to drop
    # without its head frame the teacher is the wrist-only model on the same frames
    assert one["psnr_model_without_head"] == pytest.approx(wrist_only.summary()["one_step"]["psnr_model"], abs=1e-6)
