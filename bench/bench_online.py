"""Online rollout speed: what the explorer + world model cost on top of the live envs, and the CPU thread choice.

    .venv/bin/python bench/bench_online.py [--size 64] [--steps 30] [--envs 2] [--rounds 3] [--no-append]

- env only (the baseline): M wrist-only envs stepped by the random policy, no model;
- student rollout (f1.train.online.rollout.collect_rollout): the same envs, the explorer acting
  on tokens + memory, the tokenizer encoding every frame, the world model stepping
  alongside and the rewards computed; with one torch thread (what the online phases
  use on the CPU) and with torch's default thread count;
- PPO update of one rollout (student.update_epochs x student.num_minibatches), both thread counts.
Models: the tiny preset, freshly initialised (the cost does not depend on training).
The machine may be shared, so the variants run in alternation, one rollout each
per round, and the figures are medians over rounds. The table is printed and
appended to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import time

from results import load_average, machine, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="square wrist image size")
    parser.add_argument("--steps", type=int, default=30, help="actions per episode (one rollout = one episode per env)")
    parser.add_argument("--envs", type=int, default=2, help="envs stepped together, M")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median kept)")
    parser.add_argument("--no-append", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = parser.parse_args()
    load_at_start = load_average()

    import torch

    from f1.shared.config import load_config
    from f1.shared.normalizers import Normalizer
    from f1.train.online.models import freeze, new_explorer
    from f1.train.online.common import ppo_batch
    from f1.train.online.ppo import ActionScorer, compute_gae, ppo_update
    from f1.train.online.rewards import StudentReward
    from f1.train.online.rollout import ExplorerPolicy, ScriptedPolicy, WorldModelStepper, collect_rollout, make_online_env, plan_round
    from f1.train.optim import make_optimizer
    from f1.train.models.tokenizer import FSQTokenizer
    from f1.train.models.world_model import WorldModel

    m, steps = args.envs, args.steps
    cfg = load_config(overrides=[f"environment.image_size=[{args.size},{args.size}]", f"training.steps_per_episode={steps}"])
    t, s = cfg.training, cfg.student
    default_threads = torch.get_num_threads()
    torch.manual_seed(0)
    tokenizer = freeze(FSQTokenizer.from_config(cfg))
    world_model = freeze(WorldModel(cfg, tokenizer.n_tokens, tokenizer.levels))
    explorer = new_explorer(world_model, cfg)
    optimizer = make_optimizer(explorer, t, learning_rate=s.learning_rate)
    scorer = ActionScorer(explorer)
    normalizers = {"action": Normalizer([0.0] * 8, [0.5] * 8, 8), "state": Normalizer([0.0] * 15, [0.3] * 15, 15)}
    stepper = WorldModelStepper(world_model, tokenizer, normalizers, t.n_obs_img_steps, t.obs_img_stride)
    reward = StudentReward.from_config(world_model.codes, s)
    device = torch.device("cpu")

    start = time.perf_counter()
    venv = make_online_env(cfg, m, record=False, render_device=None)
    slots = plan_round(0, 9, 0, 0, m, 1000, "bench")
    venv.reset(seeds=[x.seed for x in slots], options=[{"scene_seed": x.scene_seed} for x in slots])
    first_s = time.perf_counter() - start

    def env_only() -> float:
        policy = ScriptedPolicy("random", t.action_dim, m, device)
        begin = time.perf_counter()
        venv.reset(seeds=[x.seed for x in slots], options=[{"scene_seed": x.scene_seed} for x in slots])
        policy.reset([x.seed for x in slots])
        for _ in range(steps):
            actions, _, _ = policy.act(None, None)
            venv.step(actions.numpy())
        return time.perf_counter() - begin

    last = {}

    def rollout(threads: int) -> float:
        torch.set_num_threads(threads)
        begin = time.perf_counter()
        last["buf"] = collect_rollout(venv, slots, ExplorerPolicy(explorer), stepper, reward, num_steps=steps, device=device)
        return time.perf_counter() - begin

    def update(threads: int) -> float:
        torch.set_num_threads(threads)
        buf = last["buf"]
        advantages, returns = compute_gae(buf.rewards, buf.values, buf.terminated, buf.next_value, s.gamma, s.gae_lambda)
        begin = time.perf_counter()
        ppo_update(
            scorer, optimizer, ppo_batch(buf, advantages, returns), update_epochs=s.update_epochs,
            num_minibatches=s.num_minibatches, clip_coef=s.clip_coef, vf_coef=s.vf_coef, ent_coef=s.ent_coef,
            backward=lambda loss: loss.backward(), clip_grad=lambda: None,
        )  # fmt: skip
        return time.perf_counter() - begin

    variants = {
        "env only": env_only,
        "rollout, 1 thread": lambda: rollout(1),
        f"rollout, {default_threads} threads": lambda: rollout(default_threads),
        "update, 1 thread": lambda: update(1),
        f"update, {default_threads} threads": lambda: update(default_threads),
    }
    rollout(1)  # warm-up: first calls of every op
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            times[name].append(fn())
    venv.close()
    torch.set_num_threads(default_threads)

    median = {name: statistics.median(v) for name, v in times.items()}
    env_rate = m * steps / median["env only"]
    rows = [("first scene + picture of the process", f"{first_s:.1f} s", "")]
    rows.append((f"env only, random policy, M={m} (baseline)", f"{env_rate:.1f} env-steps/s", "1.00"))
    for threads in (1, default_threads):
        rate = m * steps / median[f"rollout, {threads} thread{'s' if threads > 1 else ''}"]
        rows.append((f"student rollout, {threads} torch thread{'s' if threads > 1 else ''}", f"{rate:.1f} env-steps/s", f"{rate / env_rate:.2f}"))
    base_update = median["update, 1 thread"]
    for threads in (1, default_threads):
        seconds = median[f"update, {threads} thread{'s' if threads > 1 else ''}"]
        rows.append((f"PPO update of one rollout, {threads} torch thread{'s' if threads > 1 else ''}", f"{seconds:.2f} s", f"{base_update / seconds:.2f}"))

    setup = (
        f"Machine: {machine()}, load average {load_at_start:.1f} at start. Tiny preset, wrist camera {args.size}x{args.size}, "
        f"M={m} envs, {steps} steps a rollout, {s.update_epochs}x{s.num_minibatches} PPO minibatches; medians of "
        f"{args.rounds} alternating rounds. Ratios: rollout speed against env only; update speed against 1 thread."
    )
    report("bench_online", setup, rows, ("measure", "figure", "ratio"), append=not args.no_append)


if __name__ == "__main__":
    main()
