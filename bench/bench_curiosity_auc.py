"""Which per-step signal singles out contact with the clutter, measured before any explorer trains on it.

    .venv/bin/python bench/bench_curiosity_auc.py [--episodes 480] [--steps 40] [--seed 11] [--cache rand.npz]

Random-policy episodes (`f1 collect`'s uniform policy, a scene per episode) in the live wrist-only
env, with what the store lacks (joint velocities). The first --train-fraction of the episodes train
the proprioceptive ensemble of f1.train.online.curiosity (the student's code: its replay, bootstrap
masks and minibatch updates); on the held-out episodes, per signal, AUC = the chance that a step with
contact scores above a step without (0.5: a coin), beside the gripper's height (low = contact) and the
privileged clutter motion (the simulator's object poses: the ceiling). Contact: SAPIEN's robot-object
contacts in the step's physics. Appends the table to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from results import load_average, machine, report


def collect(episodes: int, steps: int, seed: int, image: int) -> dict[str, np.ndarray]:
    """(E, T+1, ...) arrays of random-policy episodes: state, joint_velocity, applied, contact, object_pose, object_valid."""
    from f1.collect.env import StudentEnv
    from f1.collect.policies import make_policy
    from f1.shared.config import load_config

    cfg = load_config(overrides=[f"environment.image_size=[{image},{image}]", f"training.steps_per_episode={steps}"])
    env = StudentEnv(cfg)
    policy = make_policy("random", env.action_dim)
    keys = ("state", "joint_velocity", "applied", "contact", "object_pose", "object_valid")
    out: dict[str, list] = {k: [] for k in keys}
    for episode in tqdm(range(episodes), desc="random episodes", unit="episode"):
        episode_seed = int(np.random.SeedSequence([seed, episode]).generate_state(1)[0])
        obs, info = env.reset(seed=episode_seed)  # a seeded reset: the scene of this seed
        policy.reset(episode_seed)
        rows = {k: [] for k in keys}

        def keep(obs, info, applied):
            rows["state"].append(obs["state"])
            rows["joint_velocity"].append(info["joint_velocity"])
            rows["applied"].append(applied)
            rows["contact"].append(info["object_contact"])
            rows["object_pose"].append(info["object_pose"])
            rows["object_valid"].append(info["object_valid"])

        for _ in range(steps):
            action = policy.act()
            applied = env.apply_action(action)
            rows_obs, rows_info = obs, info
            obs, _, _, _, info = env.finish_step()
            keep(rows_obs, rows_info, applied)
        keep(obs, info, np.zeros(env.action_dim, np.float32))  # row T: the last state, no action after it
        for k in keys:
            out[k].append(np.stack(rows[k]))
    env.close()
    return {k: np.stack(v) for k, v in out.items()}


def curiosity_iteration_ms(data: dict[str, np.ndarray], calls: int = 20) -> float:
    """Mean wall time of one student iteration's Curiosity call (the default config) on 2 of the episodes."""
    from types import SimpleNamespace

    from f1.shared.config import load_config
    from f1.train.online.curiosity import Curiosity

    curiosity = Curiosity.from_config(load_config(), torch.device("cpu"))
    as_steps = lambda a: torch.from_numpy(a[:2]).transpose(0, 1).float()  # (T+1, 2, ...)
    seconds = []
    for _ in range(calls + 1):
        steps = data["state"].shape[1] - 1
        buf = SimpleNamespace(
            states=as_steps(data["state"]), joint_velocity=as_steps(data["joint_velocity"]), applied=as_steps(data["applied"]),
            rewards=torch.zeros(steps, 2), terms={},
        )  # fmt: skip
        start = time.perf_counter()
        curiosity(buf)
        seconds.append(time.perf_counter() - start)
    return 1000 * float(np.mean(seconds[1:]))  # the first call warms up


def auc(score: np.ndarray, label: np.ndarray) -> float:
    """Mann-Whitney AUC: P(score of a positive > score of a negative), ties counted half."""
    from scipy.stats import rankdata

    ranks = rankdata(score)
    positives, negatives = int(label.sum()), int((~label).sum())
    return float((ranks[label].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=480)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--image-size", type=int, default=32, help="camera side (the physics does not depend on it)")
    parser.add_argument("--train-fraction", type=float, default=0.6)
    parser.add_argument("--heads", type=int, default=5)
    parser.add_argument("--updates", type=int, default=3000, help="ensemble minibatch updates on the training episodes")
    parser.add_argument("--cache", type=Path, default=None, help="npz of the collected episodes: written, or read if present")
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    from f1.datasets.exploration import MOVED_M
    from f1.shared.config import load_config
    from f1.train.online.curiosity import ProprioEnsemble, joint_residual, transitions

    start = time.perf_counter()
    cached = args.cache is not None and args.cache.is_file()
    if cached:
        data = dict(np.load(args.cache))
    else:
        data = collect(args.episodes, args.steps, args.seed, args.image_size)
        if args.cache is not None:
            np.savez_compressed(args.cache, **data)
    collect_s = time.perf_counter() - start

    scale = load_config().environment.action_scale
    as_steps = lambda a: torch.from_numpy(a).transpose(0, 1)  # (E,T+1,...) -> (T+1,E,...): the rollout layout
    x, y = transitions(as_steps(data["state"]), as_steps(data["joint_velocity"]), as_steps(data["applied"]), scale)  # (T,E,...)
    contact = data["contact"][:, 1:].T  # (T,E): contact in the physics of step t -> t+1
    height = data["state"][:, :-1, 10].T  # (T,E) tcp z at step t
    pose, valid = data["object_pose"][..., :3], data["object_valid"]
    moved = np.minimum(np.linalg.norm(pose[:, 1:] - pose[:, :-1], axis=-1), MOVED_M) / MOVED_M  # (E,T,slots)
    clutter = (moved * (valid[:, 1:] & valid[:, :-1])).sum(-1).T  # (T,E)

    episodes = x.shape[1]
    train = np.arange(episodes) < int(episodes * args.train_fraction)
    test = ~train

    def trained_scores(x: torch.Tensor, y: torch.Tensor) -> tuple[dict[str, torch.Tensor], float, float]:
        """A fresh ensemble trained on the training episodes; its scores on the held-out ones, its loss and seconds."""
        ensemble = ProprioEnsemble(heads=args.heads, replay=int(train.sum()) * x.shape[0])
        optimizer = torch.optim.Adam(ensemble.net.parameters(), lr=1e-3)
        ensemble.add(x[:, train].reshape(-1, x.shape[-1]), y[:, train].reshape(-1, y.shape[-1]))
        fit_start = time.perf_counter()
        loss = ensemble.fit(optimizer, args.updates, 256)
        return ensemble.score(x[:, test], y[:, test]), loss, time.perf_counter() - fit_start

    scores, loss, fit_s = trained_scores(x, y)
    # The same without joint velocities (what a store keeps): those input and target dims held at zero.
    no_velocity_x, no_velocity_y = x.clone(), y.clone()
    no_velocity_x[..., 8:17], no_velocity_y[..., 8:17] = 0, 0
    store_only, _, _ = trained_scores(no_velocity_x, no_velocity_y)
    label = contact[:, test].reshape(-1)
    signals = {
        "ensemble disagreement (proprioception)": scores["disagreement"].numpy(),
        "ensemble error (proprioception)": scores["error"].numpy(),
        "ensemble disagreement, no joint velocities (the store's keys)": store_only["disagreement"].numpy(),
        "ensemble error, no joint velocities (the store's keys)": store_only["error"].numpy(),
        "joint residual, achieved - commanded (no model)": joint_residual(y[:, test]).numpy(),
        "joint speed after the step (no model)": y[:, test, 8:15].abs().mean(-1).numpy(),
        "gripper height, low (baseline)": -height[:, test],
        "clutter motion (privileged: object poses)": clutter[:, test],
    }
    iteration_ms = curiosity_iteration_ms(data)
    rows = [
        (name, f"{float(s.reshape(-1)[label].mean()):.4g}", f"{float(s.reshape(-1)[~label].mean()):.4g}", f"{auc(s.reshape(-1), label):.3f}")
        for name, s in signals.items()
    ]
    setup = (
        f"machine: {machine()}, load {load_average():.1f}. {episodes} random-policy episodes (seed {args.seed}, "
        f"{x.shape[0]} actions, a scene each, {args.image_size} px wrist camera), {int(contact.sum())} contact steps in all; "
        f"the ensemble ({args.heads} heads, f1.train.online.curiosity) trained on the first {int(train.sum())} episodes "
        f"({args.updates} updates of 256, loss {loss:.3f}, {fit_s:.0f} s), figures on the other {int(test.sum())}: "
        f"{int(label.sum())} contact steps of {label.size}. "
        + (f"Episodes read from {args.cache} (written by the same command). " if cached else f"Collection {collect_s:.0f} s. ")
        + "AUC: the chance a contact step scores above a step without; the gripper's height is the tcp's z at step t "
        f"(low = contact). The student's curiosity per iteration (score, normalise, replay, the default "
        f"student.ensemble_updates; T = 40, 2 envs, one torch thread): {iteration_ms:.0f} ms."
    )
    report(
        "bench_curiosity_auc", setup, rows, columns=("signal (step t -> t+1)", "mean, contact", "mean, no contact", "AUC"),
        append=not args.no_append,
    )  # fmt: skip


if __name__ == "__main__":
    main()
