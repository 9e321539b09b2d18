"""Does an explorer trained only in the world model's imagination find the clutter? Speed, contact, state, drift.

    .venv/bin/python bench/bench_imagination.py --teacher T/checkpoint-N --store STORE --heldout H1 [H2 ...]
        [--seeds 0 1 2] [--online-iterations 150] [--imagine-iterations 40] [--episodes 16] [--work DIR]

The teacher and its store are the CPU recipe's (bench_explorer_seeds trains them); the held-out stores
are episodes of other seeds with the simulator's contact flags. Per student seed (`training.seed`):

- online: `f1 train student` for --online-iterations (2 envs, 40 actions), paid the proprioceptive
  ensemble's disagreement (the reward imagination can pay: an imagined step has no outcome to score an
  error against), then `f1 evaluate` on --episodes fresh scenes (evaluation seed 0 for every run);
- imagined: `f1 train student --data STORE` for --imagine-iterations (chosen to take about the online
  student's wall time), then the same evaluation.

Then, on the held-out stores: the imagined state (the store-keys ensemble's mean of the seed-0 run) against
"state + commanded delta" on contact and other steps (joint positions; the tool position by forward
kinematics), and the imagined frames' drift as the explorer sees it: per horizon step k, the KL between the
explorer's action distributions on the imagined step k (rolled under the store's own actions) and on the real
step t+k, beside its KL between the real steps t and t+k. A picture of real and imagined rollouts side by side
goes to docs/imagination_rollout.png. Tables to stdout and bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bench_explorer_seeds import REWARDS, SIZE
from results import REPO, fresh_work_dir, load_average, machine, report, run_f1

EVAL_STEPS = 40
SHOWN_START = 10  # the held-out step the picture's rollout starts from
ONLINE_ENVS = 2


def train_and_evaluate(args, work: Path, timings: dict) -> dict:
    """Every (kind, seed): the student's wall time, its steps and the evaluation's exploration figures."""
    runs = {}
    disagreement = [a for kv in REWARDS["disagreement"][1] for a in ("--set", kv)]
    for seed in args.seeds:
        seed_set = ["--set", f"training.seed={seed}"]
        online, imagined = f"online_seed{seed}", f"imagined_seed{seed}"
        run_f1("bench_imagination", ["train", "student", "--teacher_path", args.teacher, "--output-dir", work / online,
             "--total-iterations", args.online_iterations, "--steps-per-episode", EVAL_STEPS, "--envs", ONLINE_ENVS,
             *SIZE, *seed_set, *disagreement], online, timings)  # fmt: skip
        run_f1("bench_imagination", ["train", "student", "--data", args.store, "--teacher_path", args.teacher,
             "--output-dir", work / imagined, "--total-iterations", args.imagine_iterations, *seed_set,
             "--set", f"training.log_every={args.imagine_iterations}"], imagined, timings)  # fmt: skip
        for name, iterations in ((online, args.online_iterations), (imagined, args.imagine_iterations)):
            run_f1("bench_imagination", ["evaluate", "--checkpoint", work / name / f"checkpoint-{iterations}", "--episodes", args.episodes,
                 "--steps-per-episode", EVAL_STEPS, "--output-dir", work / f"eval_{name}", *SIZE], f"evaluate {name}", timings)  # fmt: skip
            runs[name] = json.loads((work / f"eval_{name}" / "report.json").read_text())["exploration"]
    return runs


def held_out_episodes(stores: list[Path], limit: int | None = None) -> list[dict]:
    from f1.datasets.reader import open_store

    episodes = []
    for path in stores:
        store = open_store(path)
        for info in store.episodes:
            episodes.append(store.read_episode(info))
            if limit is not None and len(episodes) == limit:
                return episodes
    return episodes


def state_table(checkpoint: Path, episodes: list[dict], action_scale: float) -> tuple[list, int]:
    """The imagined next state (the ensemble's mean) against state + commanded delta, by contact."""
    from f1.train.checkpoint import load_checkpoint
    from f1.train.models.panda_kinematics import tcp_pose
    from f1.train.online.curiosity import STORE_INPUT_DIM, STORE_TARGET_DIM, ProprioEnsemble, next_proprio, store_transitions

    state = load_checkpoint(checkpoint).rank_state(0)["ensemble"]
    heads, hidden = state["net.0.weight"].shape[0], state["net.0.weight"].shape[2]
    ensemble = ProprioEnsemble(heads, hidden, state["replay_x"].shape[0], STORE_INPUT_DIM, STORE_TARGET_DIM)
    ensemble.load_state_dict(state)
    errors = {key: [] for key in ("joints", "joints_trivial", "tool", "tool_trivial")}
    contact = []
    for arrays in episodes:
        states, actions = torch.from_numpy(arrays["state"]), torch.from_numpy(arrays["action"])  # (T+1,S), (T+1,A)
        x, _ = store_transitions(states, actions, action_scale)
        target, _ = ensemble.imagine(x)  # (T,8)
        real = actions[:-1, :8]
        joints, _ = next_proprio(states[:-1], real, target, action_scale)
        trivial, _ = next_proprio(states[:-1], real, torch.zeros_like(target), action_scale)
        truth = states[1:, :7]
        errors["joints"].append((joints - truth).abs().mean(-1))
        errors["joints_trivial"].append((trivial - truth).abs().mean(-1))
        tool_truth = states[1:, 8:11]
        errors["tool"].append((tcp_pose(joints)[0] - tool_truth).norm(dim=-1))
        errors["tool_trivial"].append((tcp_pose(trivial)[0] - tool_truth).norm(dim=-1))
        contact.append(torch.from_numpy(arrays["object_contact"][1:]))
    errors = {k: torch.cat(v) for k, v in errors.items()}
    contact = torch.cat(contact)
    rows = []
    for label, where in (("contact steps", contact), ("other steps", ~contact)):
        j, jt, p, pt = (errors[k][where].mean().item() for k in ("joints", "joints_trivial", "tool", "tool_trivial"))
        rows.append((f"{label} ({int(where.sum())})", f"{j * 1e3:.2f}", f"{jt * 1e3:.2f}", f"{j / jt:.2f}", f"{p * 1e3:.2f}",
                     f"{pt * 1e3:.2f}", f"{p / pt:.2f}"))  # fmt: skip
    return rows, int(contact.sum())


@torch.no_grad()
def drift_table(checkpoint: Path, teacher: Path, store: Path, episodes: list[dict], horizon: int, picture: Path) -> list:
    """Per horizon step k: KL(explorer on real t+k || on imagined k), beside KL(real t || real t+k)."""
    from f1.shared.config import load_config
    from f1.train.offline.imagination import imagine, replay_starts
    from f1.train.offline.teacher_batch import chunk_inputs, episode_chunk, window_tokens
    from f1.train.online.curiosity import STORE_INPUT_DIM, STORE_TARGET_DIM, ProprioEnsemble
    from f1.train.online.models import freeze, load_explorer, load_world_model
    from f1.train.checkpoint import load_checkpoint
    from f1.train.offline.teacher_samples import to_uint8
    from f1.train.run_outputs import write_rows_png

    bundle = load_world_model(teacher, "--teacher")
    world_model, tokenizer = freeze(bundle.world_model), freeze(bundle.tokenizer)
    cfg = load_config(overrides=["environment.image_size=[64,64]"])
    explorer, _ = load_explorer(checkpoint, "--checkpoint", cfg, "cpu", base=bundle)
    explorer = freeze(explorer)
    state = load_checkpoint(checkpoint).rank_state(0)["ensemble"]
    ensemble = ProprioEnsemble(state["net.0.weight"].shape[0], state["net.0.weight"].shape[2], state["replay_x"].shape[0],
                               STORE_INPUT_DIM, STORE_TARGET_DIM)  # fmt: skip
    ensemble.load_state_dict(state)
    history = world_model.history
    std = explorer.log_std.exp()  # (8,) state-independent: the KL of two Gaussians is the means' scaled distance

    def kl(mean_a, mean_b):
        return (((mean_a - mean_b) / std) ** 2 / 2).sum(-1)  # (N,)

    imagined_kl, real_kl = [[] for _ in range(horizon)], [[] for _ in range(horizon)]
    shown = None
    for arrays in episodes:
        chunk = episode_chunk(arrays, history, 1)
        chunk["valid"] = np.ones_like(chunk["target_valid"])
        inputs, _, _ = chunk_inputs(chunk, window_tokens(chunk, tokenizer, torch.device("cpu"), False), bundle.normalizers, torch.device("cpu"))
        starts, _ = replay_starts(world_model, chunk, inputs, world_model.initial_memory(1))
        steps = starts.num  # T: every step with a next frame
        first = torch.arange(steps - horizon + 1)  # starts whose real future spans the horizon
        real_actions = torch.from_numpy(arrays["action"]).float()  # (T+1,A)
        actions = torch.stack([real_actions[first + k] for k in range(horizon)])  # (H,N,A)
        dream = imagine(starts.take(first), explorer, world_model, tokenizer, ensemble, bundle.normalizers, horizon,
                        cfg.environment.action_scale, keep_frames=shown is None, actions=actions)  # fmt: skip
        real_means = explorer(starts.wrist_hist[:, -1], starts.memory)[0]  # (T,8) the explorer on every real step
        for k in range(horizon):
            imagined_mean = explorer(dream.tokens[k], dream.memory[k].transpose(0, 1).contiguous())[0]  # (N,8)
            imagined_kl[k].append(kl(real_means[first + k], imagined_mean))
            real_kl[k].append(kl(real_means[first], real_means[first + k]))
        if shown is None:  # a start inside the episode, where the arm is already moving
            t = min(SHOWN_START, len(first) - 1)
            real = to_uint8(inputs["frame"][0, t : t + horizon + 1])  # (H+1,S,S,3) the real steps t..t+H
            shown = [(f"real, steps {t}..{t + horizon}", list(real)),
                     ("imagined under the store's actions", list(to_uint8(dream.frames[:, t])))]  # fmt: skip
    write_rows_png(picture, shown, [f"k={k}" for k in range(horizon + 1)])
    rows = []
    for k in range(horizon):
        a, b = torch.cat(imagined_kl[k]), torch.cat(real_kl[k])
        rows.append((str(k), f"{a.mean():.3f}", f"{b.mean():.3f}", f"{a.mean() / max(b.mean(), 1e-9):.2f}"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, required=True, help="a teacher checkpoint-<N> directory")
    parser.add_argument("--store", type=Path, required=True, help="the store the teacher trained on")
    parser.add_argument("--heldout", type=Path, nargs="+", required=True, help="held-out stores of other seeds (64x64)")
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "bench_imagination")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--online-iterations", type=int, default=150)
    parser.add_argument("--imagine-iterations", type=int, default=40)
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--drift-episodes", type=int, default=8)
    parser.add_argument("--no-append", action="store_true", help="print the tables without appending them to RESULTS.md")
    args = parser.parse_args()
    args.teacher, args.store = args.teacher.resolve(), args.store.resolve()
    work = fresh_work_dir(args.work)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    runs = train_and_evaluate(args, work, timings)
    from f1.shared.config import load_config

    horizon, starts = load_config().student.imagine_horizon, load_config().student.imagine_starts

    rows, ratios = [], {"online": [], "imagined": []}
    for seed in args.seeds:
        for kind in ("online", "imagined"):
            e = runs[f"{kind}_seed{seed}"]
            p = e["policies"]
            ratio = e["contact_vs_random"] or float("nan")
            ratios[kind].append(ratio)
            steps = (args.online_iterations * ONLINE_ENVS * EVAL_STEPS if kind == "online"
                     else args.imagine_iterations * horizon * starts)  # fmt: skip
            seconds = timings[f"{kind}_seed{seed}"]
            rows.append((f"{kind}, seed {seed}", f"{p['explorer (sampled)']['object_contact_fraction']:.3f}",
                         f"{p['random']['object_contact_fraction']:.3f}", f"{ratio:.2f}x", f"{seconds:.0f}", str(steps),
                         f"{steps / seconds:.0f}"))  # fmt: skip
    summary = []
    for kind in ("online", "imagined"):
        r = ratios[kind]
        seconds = [timings[f"{kind}_seed{s}"] for s in args.seeds]
        summary.append((kind, f"{statistics.mean(r):.2f}x ± {statistics.stdev(r) if len(r) > 1 else 0:.2f}",
                        f"{min(r):.2f}-{max(r):.2f}x", f"{statistics.mean(seconds):.0f}"))  # fmt: skip
    imagined_rate = statistics.mean(args.imagine_iterations * horizon * starts / timings[f"imagined_seed{s}"] for s in args.seeds)
    online_rate = statistics.mean(args.online_iterations * ONLINE_ENVS * EVAL_STEPS / timings[f"online_seed{s}"] for s in args.seeds)
    summary.append(("imagined vs online", f"{statistics.mean(ratios['imagined']) / statistics.mean(ratios['online']):.2f}x of online's",
                    "", f"steps/s {imagined_rate / online_rate:.2f}x"))  # fmt: skip

    episodes = held_out_episodes(args.heldout)
    state_rows, contact_steps = state_table(work / f"imagined_seed{args.seeds[0]}" / f"checkpoint-{args.imagine_iterations}", episodes, 0.1)
    drift_rows = drift_table(work / f"imagined_seed{args.seeds[0]}" / f"checkpoint-{args.imagine_iterations}", args.teacher, args.store,
                             episodes[: args.drift_episodes], horizon, REPO / "docs" / "imagination_rollout.png")  # fmt: skip

    setup = (
        f"machine: {machine()}, load {load_average():.1f}. Teacher {args.teacher} (store {args.store}). Online students: "
        f"{args.online_iterations} iterations, {ONLINE_ENVS} envs, {EVAL_STEPS} actions, paid the proprioceptive ensemble's "
        f"disagreement; imagined students: {args.imagine_iterations} iterations of {starts} starts x {horizon} steps, paid the store-keys "
        f"ensemble's disagreement; seeds {args.seeds}; `f1 evaluate` on {args.episodes} fresh scenes (evaluation seed 0). "
        f"Steps/s: a student's steps (env steps or imagined transitions) over its whole wall time, start-up included. "
        f"Wall times: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + f"; all {time.perf_counter() - start:.0f} s."
    )
    append = not args.no_append
    report("bench_imagination", setup, rows, columns=("explorer, seed", "contact fraction", "random", "x random", "student s",
           "steps", "steps/s"), append=append)  # fmt: skip
    report("bench_imagination: over the seeds", "Mean and spread of the ratio to random's contact; the imagined explorers "
           "against the online ones and their throughput.", summary, columns=("explorer", "x random (mean ± sd)", "range",
           "student s"), append=append)  # fmt: skip
    report("bench_imagination: the imagined state", f"Held-out stores {[str(h) for h in args.heldout]} ({len(episodes)} episodes, "
           f"{contact_steps} contact steps): the next step's joint positions (mean absolute error, mrad) and tool position "
           "(mm, by forward kinematics) from the imagined state (the ensemble's mean, seed-0 run) and from state + "
           "commanded delta.", state_rows, columns=("steps", "joints, imagined", "joints, state + delta", "ratio",
           "tool, imagined", "tool, state + delta", "ratio"), append=append)  # fmt: skip
    report("bench_imagination: drift", f"The seed-0 imagined explorer on {min(args.drift_episodes, len(episodes))} held-out "
           f"episodes, rolled {horizon} steps from every step under the store's own actions: KL(explorer on real step t+k || on "
           "imagined step k) against KL(explorer on real t || real t+k); docs/imagination_rollout.png.", drift_rows,
           columns=("k", "KL real vs imagined", "KL real t vs t+k", "ratio"), append=append)  # fmt: skip


if __name__ == "__main__":
    main()
