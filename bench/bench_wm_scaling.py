"""Does the world model get better with more data? Held-out margins against episodes, over several seed pairs.

    .venv/bin/python bench/bench_wm_scaling.py [--work DIR] [--sizes 24 96 384] [--pairs 0:100 1:101 2:102]
        [--heldout-episodes 8] [--steps-per-episode 40] [--teacher-steps N] [--grow-cap 4] [--no-append]

For each (training seed, held-out seed) pair: `f1 collect` a held-out store of
the held-out seed, and a training store of the training seed grown to each
size in turn (collect resumes to a total), snapshotted at each size, so the
larger stores contain the smaller ones. One tokenizer for all (`f1 train
tokenizer` with its defaults on the first pair's smallest store). Teachers with
the defaults: at every size the same optimizer steps (--teacher-steps, default
what the defaults take on the smallest store), epochs set so that the LR
schedule spans those steps; and one arm whose steps grow with the data (x
size/smallest, capped at --grow-cap), all of a training seed on one token
store (the larger snapshots add only their new shards). Each teacher is evaluated (`f1 evaluate`)
on the held-out store and on the last --heldout-episodes of its own training
store (the train/held-out gap). Every figure is the mean over the pairs with
its spread (min..max); the plot of the held-out one-step margin over copying
against episodes goes to docs/wm_scaling.png. Tables to stdout and bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

from results import REPO, fresh_work_dir, load_average, machine, report, run_f1

PLOT = REPO / "docs" / "wm_scaling.png"


def chunks_per_epoch(store_dir: Path) -> int:
    """Optimizer steps of one teacher epoch on this store at the default batch and BPTT length (one rank)."""
    from f1.datasets import open_store
    from f1.datasets.replay import OrderedReplay
    from f1.shared.config import load_config

    t = load_config(None, []).training
    store = open_store(store_dir)
    replay = OrderedReplay(store.episodes, store.read_steps, batch_size=t.batch_size, bptt_length=t.bptt_length,
                           history=t.n_obs_img_steps, stride=t.obs_img_stride, seed=t.seed, keys=("is_first",), prefetch=0)  # fmt: skip
    return replay.num_chunks(0)


def figures(report_json: Path) -> dict[str, float]:
    """The scaling figures of one `f1 evaluate` report."""
    prediction = json.loads(report_json.read_text())["prediction"]
    one, loop = prediction["one_step"], {row["k"]: row for row in prediction["open_loop"]}
    return {
        "margin_copy_db": one["psnr_model"] - one["psnr_copy_current"],
        "correction_db": one["psnr_model"] - one["psnr_motion"],
        "accuracy": one["token_accuracy"],
        "accuracy_margin": one["token_accuracy"] - one["token_accuracy_copy_current"],
        "shuffled_drop_db": one["psnr_model"] - one["psnr_shuffled_actions"],
        "k8_margin_db": loop[8]["psnr_model"] - loop[8]["psnr_copy_last"] if 8 in loop else float("nan"),
        "open_loop_above_copy": float(all(loop[k]["psnr_model"] > loop[k]["psnr_copy_last"] for k in range(1, 9) if k in loop)),
    }


def spread(values: list[float], fmt: str = "{:+.2f}") -> str:
    """'mean (min..max)' over the seed pairs."""
    return f"{fmt.format(statistics.fmean(values))} ({fmt.format(min(values))}..{fmt.format(max(values))})"


def plot(path: Path, curves: dict[str, dict[int, list[float]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    for label, by_size in curves.items():
        sizes = sorted(by_size)
        means = [statistics.fmean(by_size[s]) for s in sizes]
        low = [m - min(by_size[s]) for m, s in zip(means, sizes)]
        high = [max(by_size[s]) - m for m, s in zip(means, sizes)]
        ax.errorbar(sizes, means, yerr=[low, high], marker="o", capsize=3, label=label)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("training episodes")
    ax.set_ylabel("held-out one-step PSNR over copying (dB)")
    ax.set_title("world model vs data (mean, min..max over seed pairs)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "bench_wm_scaling")
    parser.add_argument("--sizes", type=int, nargs="+", default=[24, 96, 384])
    parser.add_argument("--pairs", nargs="+", default=["0:100", "1:101", "2:102"], help="training seed:held-out seed")
    parser.add_argument("--heldout-episodes", type=int, default=8)
    parser.add_argument("--steps-per-episode", type=int, default=40)
    parser.add_argument("--teacher-steps", type=int, default=None, help="equal steps (default: the defaults' on the smallest store)")
    parser.add_argument("--grow-cap", type=float, default=4.0, help="the growing arm's steps: x size/smallest, at most this")
    parser.add_argument("--tokenizer-steps", type=int, default=None, help="tokenizer optimizer steps (default: its default)")
    parser.add_argument("--plot", type=Path, default=PLOT)
    parser.add_argument("--no-append", action="store_true", help="print the tables without appending them to RESULTS.md")
    args = parser.parse_args()
    assert len(args.pairs) >= 3 or args.no_append, "a result needs at least 3 seed pairs (a single pair misleads)"
    work = fresh_work_dir(args.work)
    sizes = sorted(args.sizes)
    pairs = [tuple(int(s) for s in p.split(":")) for p in args.pairs]
    timings: dict[str, float] = {}
    common = ["--steps-per-episode", args.steps_per_episode, "--gpus", 0]

    # ---- data: a held-out store per pair; the training store grown to each size, a snapshot at each
    for train_seed, heldout_seed in pairs:
        heldout = work / f"heldout-{heldout_seed}"
        run_f1("bench_wm_scaling", ["collect", *common, "--episodes", args.heldout_episodes, "--seed", heldout_seed, "--out", heldout],
               f"collect held-out {heldout_seed}", timings)  # fmt: skip
        growing = work / f"train-{train_seed}"
        for size in sizes:
            run_f1("bench_wm_scaling", ["collect", *common, "--episodes", size, "--seed", train_seed, "--out", growing],
                   f"collect train {train_seed} to {size}", timings)  # fmt: skip
            shutil.copytree(growing, work / f"train-{train_seed}-{size}", ignore=shutil.ignore_patterns("*.lock"))

    # ---- one tokenizer for all
    tokenizer = work / "tokenizer"
    smallest = work / f"train-{pairs[0][0]}-{sizes[0]}"
    tok_steps = ["--max-steps", args.tokenizer_steps] if args.tokenizer_steps else []
    run_f1("bench_wm_scaling", ["train", "tokenizer", "--data", smallest, "--output-dir", tokenizer, *tok_steps], "tokenizer", timings)

    # ---- teachers: equal steps at every size, and the arm whose steps grow with the data
    from f1.shared.config import load_config

    equal = args.teacher_steps or load_config(None, []).training.epochs * chunks_per_epoch(smallest)
    arms = {"equal steps": lambda size: equal}
    arms["steps grow with data"] = lambda size: round(equal * min(args.grow_cap, size / sizes[0]))
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    walls: dict[tuple[str, int], list[float]] = {}
    for train_seed, heldout_seed in pairs:
        for size in sizes:
            store = work / f"train-{train_seed}-{size}"
            per_epoch = chunks_per_epoch(store)
            for arm, steps_of in arms.items():
                steps = steps_of(size)
                if arm != "equal steps" and steps == equal:
                    results.setdefault((arm, size), []).append(results[("equal steps", size)][-1])  # the same run
                    walls.setdefault((arm, size), []).append(walls[("equal steps", size)][-1])
                    continue
                name = f"teacher-{train_seed}-{size}-{steps}"
                epochs = max(1, round(steps / per_epoch))  # the LR schedule spans about the run
                start = time.perf_counter()
                # One token store per training seed: the snapshots share their shards, so each is tokenised once.
                run_f1("bench_wm_scaling", ["train", "teacher", "--data", store, "--tokenizer", tokenizer, "--output-dir", work / name,
                       "--max-steps", steps, "--gpus", 0, "--set", f"training.epochs={epochs}",
                       "--set", f"teacher.token_store_dir={work / f'tokens-{train_seed}'}"], name, timings)  # fmt: skip
                walls.setdefault((arm, size), []).append(time.perf_counter() - start)
                checkpoint = max((work / name).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
                row = {}
                for where, data in (("heldout", work / f"heldout-{heldout_seed}"), ("train", store)):
                    out = work / f"evaluate-{name}-{where}"
                    run_f1("bench_wm_scaling", ["evaluate", "--checkpoint", checkpoint, "--data", data,
                           "--episodes", args.heldout_episodes, "--output-dir", out], f"evaluate {name} {where}", timings)  # fmt: skip
                    row.update({f"{where}_{k}": v for k, v in figures(out / "report.json").items()})
                row["gap"] = row["train_accuracy"] - row["heldout_accuracy"]
                results.setdefault((arm, size), []).append(row)

    # ---- the table: mean (min..max) over the pairs
    rows = []
    for (arm, size), runs in results.items():
        get = lambda key: [r[key] for r in runs]  # noqa: E731
        worst_goals = min(
            r["heldout_margin_copy_db"] >= 1 and r["heldout_accuracy_margin"] >= 0.05 and r["heldout_shuffled_drop_db"] >= 1.5
            and r["heldout_open_loop_above_copy"] == 1 for r in runs
        )  # fmt: skip
        rows.append((
            arm, str(size), spread(get("heldout_margin_copy_db")), spread(get("heldout_correction_db")),
            spread(get("heldout_accuracy"), "{:.3f}"), spread(get("heldout_accuracy_margin"), "{:+.3f}"),
            spread(get("heldout_shuffled_drop_db")), spread(get("heldout_k8_margin_db")), spread(get("gap"), "{:.3f}"),
            "yes" if worst_goals else "no", f"{statistics.fmean(walls[(arm, size)]):.0f} s",
        ))  # fmt: skip
    columns = ("arm", "episodes", "one step over copy (dB)", "over warped frame (dB)", "token accuracy", "accuracy over copy",
               "shuffled drop (dB)", "k = 8 over copy (dB)", "train - held-out accuracy", "issue-12 goals, worst pair", "teacher wall")  # fmt: skip
    curves = {arm: {size: [r["heldout_margin_copy_db"] for r in results[(arm, size)]] for size in sizes} for arm in arms}
    plot(args.plot, curves)
    setup = (
        f"machine: {machine()}, load {load_average():.1f}. Seed pairs (train:held-out) {', '.join(args.pairs)}; training stores of "
        f"{', '.join(map(str, sizes))} episodes of {args.steps_per_episode} actions (each containing the smaller), held-out stores of "
        f"{args.heldout_episodes} episodes; one tokenizer (defaults, on {smallest.name}); teachers with the defaults, equal steps "
        f"{equal} (growing arm x size/{sizes[0]}, capped at {args.grow_cap:g}x). Figures on the held-out store, mean (min..max) over "
        f"the pairs; the gap on the last {args.heldout_episodes} training episodes. Plot: {args.plot.name}. Wall times: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items() if not k.startswith("evaluate"))
    )
    report("bench_wm_scaling", setup, rows, columns=columns, append=not args.no_append)


if __name__ == "__main__":
    main()
