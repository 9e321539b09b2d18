"""The proprioceptive curiosity ensemble (f1.train.online.curiosity), without the simulator: tiny fixtures, seconds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from f1.collect.env_spec import STATE_LAYOUT
from f1.train.online.curiosity import INPUT_DIM, TARGET_DIM, ProprioEnsemble, RunningMoments, transitions


def deterministic_transitions(n: int, seed: int, shift: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """x (n,33) uniform in [-1, 1] (+ shift), y (n,17) a fixed smooth function of x: an outcome with no noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, INPUT_DIM, generator=g) * 2 - 1 + shift
    mix = torch.linspace(-1, 1, INPUT_DIM * TARGET_DIM).reshape(INPUT_DIM, TARGET_DIM)
    return x, torch.tanh(x @ mix / 4)


@pytest.fixture
def one_thread():
    """As the online phases run on the CPU (f1.train.online.common.limit_cpu_threads): tiny batched MLPs, no thread contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_disagreement_is_near_zero_where_the_heads_trained_and_high_on_an_unseen_transition(one_thread):
    torch.manual_seed(0)
    ensemble = ProprioEnsemble(heads=5, hidden=64, replay=1024)
    optimizer = torch.optim.Adam(ensemble.net.parameters(), lr=3e-3)
    x, y = deterministic_transitions(512, seed=1)
    ensemble.add(x, y)
    ensemble.fit(optimizer, updates=300, batch_size=256)
    seen = ensemble.score(x, y)
    unseen_x, unseen_y = deterministic_transitions(64, seed=2, shift=4.0)  # 4 units outside every input seen
    unseen = ensemble.score(unseen_x, unseen_y)
    assert seen["error"].mean() < 0.01, float(seen["error"].mean())  # the heads learnt the map
    assert seen["disagreement"].mean() < 0.005, float(seen["disagreement"].mean())  # targets standardised: variance 1
    assert unseen["disagreement"].mean() > 20 * seen["disagreement"].mean(), (
        float(unseen["disagreement"].mean()), float(seen["disagreement"].mean()),
    )  # fmt: skip


def test_bootstrap_masks_make_the_heads_differ():
    torch.manual_seed(0)
    ensemble = ProprioEnsemble(heads=5, replay=64)
    x, y = deterministic_transitions(64, seed=3)
    ensemble.add(x, y)
    masks = ensemble.replay_mask
    assert 0.3 < float(masks.mean()) < 0.7 and len({tuple(col.tolist()) for col in masks.T}) == 5


def test_running_moments_match_the_whole_data():
    moments = RunningMoments(3)
    data = torch.randn(100, 3, generator=torch.Generator().manual_seed(0)) * 2 + 1
    for chunk in data.split([7, 50, 1, 42]):
        moments.update(chunk)
    assert torch.allclose(moments.mean.float(), data.mean(0), atol=1e-5)
    assert torch.allclose(moments.std, data.std(0, unbiased=False), atol=1e-5)


def test_the_intrinsic_reward_is_divided_by_its_returns_spread():
    ensemble = ProprioEnsemble(heads=2, replay=8)
    intrinsic = torch.full((10, 3), 2.0)  # (T, M)
    paid = ensemble.normalise(intrinsic, gamma=0.5)
    returns = np.array([2.0 * sum(0.5**k for k in range(t + 1)) for t in range(10)])
    assert torch.allclose(paid, intrinsic / float(returns.std()), rtol=1e-5)


def test_transitions_hold_the_achieved_minus_the_commanded_change():
    T, M, scale = 3, 2, 0.1
    states = torch.zeros(T + 1, M, 15)
    applied = torch.zeros(T + 1, M, 8)
    applied[:T, :, 0] = 1.0  # joint 0 commanded +0.1 rad a step
    applied[:T, :, 7] = 1.0  # gripper open: 0.08 m commanded
    states[:, :, 0] = torch.arange(T + 1)[:, None] * 0.07  # it moved 0.07: 0.03 short
    states[:, :, STATE_LAYOUT["gripper_width"]] = 0.08
    velocity = torch.randn(T + 1, M, 9)
    x, y = transitions(states, velocity, applied, scale)
    assert x.shape == (T, M, INPUT_DIM) and y.shape == (T, M, TARGET_DIM)
    assert torch.allclose(y[..., 0], torch.full((T, M), -0.03), atol=1e-6) and torch.all(y[..., 1:8] == 0)
    assert torch.equal(y[..., 8:], velocity[1:]) and torch.equal(x[1:, :, -8:], applied[: T - 1])  # a_{t-1}
    assert torch.all(x[0, :, -8:] == 0)


@pytest.mark.parametrize("chunks", [[40], [30, 30, 30]])
def test_the_replay_is_a_fifo_of_its_capacity(chunks):
    ensemble = ProprioEnsemble(heads=2, replay=32)
    x, y = deterministic_transitions(sum(chunks), seed=4)
    for part_x, part_y in zip(x.split(chunks), y.split(chunks)):
        ensemble.add(part_x, part_y)
    assert int(ensemble.replay_size) == 32
    kept = {tuple(row.tolist()) for row in ensemble.replay_x}
    assert kept == {tuple(row.tolist()) for row in x[-32:]}  # the newest 32
