"""Does the default, non-privileged explorer touch the clutter more than random? Three student seeds a reward.

    .venv/bin/python bench/bench_explorer_seeds.py [--teacher TEACHER/checkpoint-N] [--work DIR]
        [--seeds 0 1 2] [--rewards ensemble clutter] [--iterations 150] [--episodes 16]

Without --teacher it first runs the CPU recipe's data and world model (docs/experiments.md: 24 episodes at
64x64, tokenizer, teacher). Then, for every reward and student seed (`training.seed`), `f1 train student`
for --iterations and `f1 evaluate` on the same --episodes fresh scenes (evaluation seed 0 for all), and
reports each run's contact fraction against random's in the same evaluation, the mean and spread over the
seeds, and the student's wall time against the clutter-motion student's (the reward before issue 27)
measured in the same run. Tables go to stdout and bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from results import REPO, fresh_work_dir, load_average, machine, report, run_f1

SIZE = ["--set", "environment.image_size=[64,64]"]
# Each reward as `--set` overrides of the student's defaults (whose reward is the ensemble's error).
REWARDS = {
    "ensemble": ("ensemble error (default, non-privileged)", []),
    "disagreement": ("ensemble disagreement (non-privileged)", ["student.ensemble_error_weight=0", "student.ensemble_disagreement_weight=1"]),
    "clutter": ("clutter motion (privileged ceiling)", ["student.ensemble_error_weight=0", "student.clutter_motion_weight=1"]),
}


def recipe_teacher(work: Path, timings: dict) -> Path:
    """The CPU recipe's store, tokenizer and teacher; returns the teacher's last checkpoint."""
    run_f1("bench_explorer_seeds", ["collect", "--gpus", 0, "--workers", 1, "--envs", 2, "--episodes", 24, "--steps-per-episode", 40,
         "--seed", 0, "--out", work / "store", *SIZE], "collect", timings)  # fmt: skip
    run_f1("bench_explorer_seeds", ["train", "tokenizer", "--data", work / "store", "--output-dir", work / "tok", *SIZE], "tokenizer", timings)
    run_f1("bench_explorer_seeds", ["train", "teacher", "--data", work / "store", "--tokenizer", work / "tok", "--output-dir", work / "teacher", *SIZE],
           "teacher", timings)  # fmt: skip
    from f1.train.checkpoint import latest_checkpoint

    return latest_checkpoint(work / "teacher")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, help="a teacher checkpoint-<N> directory (default: train the recipe's)")
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "bench_explorer_seeds")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rewards", nargs="+", choices=sorted(REWARDS), default=["ensemble", "clutter"])
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--no-append", action="store_true", help="print the tables without appending them to RESULTS.md")
    args = parser.parse_args()
    work = fresh_work_dir(args.work)
    timings: dict[str, float] = {}
    teacher = args.teacher.resolve() if args.teacher else recipe_teacher(work, timings)

    runs = {}  # (reward, seed) -> (student seconds, report["exploration"])
    for reward in args.rewards:
        for seed in args.seeds:
            name = f"{reward}_seed{seed}"
            overrides = [a for kv in [f"training.seed={seed}", *REWARDS[reward][1]] for a in ("--set", kv)]
            run_f1("bench_explorer_seeds", ["train", "student", "--teacher_path", teacher, "--output-dir", work / name,
                 "--total-iterations", args.iterations, "--steps-per-episode", 40, "--envs", 2, *SIZE, *overrides], name, timings)  # fmt: skip
            run_f1("bench_explorer_seeds", ["evaluate", "--checkpoint", work / name / f"checkpoint-{args.iterations}", "--episodes", args.episodes,
                 "--steps-per-episode", 40, "--output-dir", work / f"eval_{name}", *SIZE], f"evaluate {name}", timings)  # fmt: skip
            runs[reward, seed] = (timings[name], json.loads((work / f"eval_{name}" / "report.json").read_text())["exploration"])

    baseline = [runs["clutter", s][0] for s in args.seeds] if "clutter" in args.rewards else None
    rows, summary = [], []
    for reward in args.rewards:
        ratios, fractions, seconds = [], [], []
        for seed in args.seeds:
            sec, e = runs[reward, seed]
            p = e["policies"]
            ratio = e["contact_vs_random"]
            ratios.append(ratio if ratio is not None else float("nan"))
            fractions.append(p["explorer (sampled)"]["object_contact_fraction"])
            seconds.append(sec)
            rows.append((
                f"{REWARDS[reward][0]}, seed {seed}", f"{p['explorer (sampled)']['object_contact_fraction']:.3f}",
                f"{p['random']['object_contact_fraction']:.3f}", f"{ratio:.2f}x" if ratio is not None else "n/a",
                f"{p['explorer (sampled)']['episodes_with_contact']:.2f}", f"{p['explorer (sampled)']['objects_moved']:.2f}",
                f"{p['explorer (sampled)']['mean_voxels']:.1f}", f"{sec:.0f}",
            ))  # fmt: skip
        spread = statistics.stdev(ratios) if len(ratios) > 1 else 0.0
        time_ratio = f"{statistics.mean(seconds) / statistics.mean(baseline):.2f}x" if baseline else "n/a"
        summary.append((REWARDS[reward][0], f"{statistics.mean(fractions):.3f}", f"{statistics.mean(ratios):.2f}x ± {spread:.2f}",
                        f"{min(ratios):.2f}-{max(ratios):.2f}x", f"{statistics.mean(seconds):.0f}", time_ratio))  # fmt: skip

    setup = (
        f"machine: {machine()}, load {load_average():.1f}. Teacher {teacher}. Students: {args.iterations} iterations, 2 envs, 40 actions, "
        f"64x64, seeds {args.seeds}; `f1 evaluate` on {args.episodes} fresh scenes (evaluation seed 0, the same for every run; "
        "random's figure is from the same evaluation). Wall times: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + "."
    )
    report("bench_explorer_seeds", setup, rows, columns=("student reward, seed", "contact fraction", "random", "x random",
           "episodes with contact", "objects moved / ep.", "voxels / ep.", "student s"), append=not args.no_append)  # fmt: skip
    report("bench_explorer_seeds: over the seeds", "Mean over the student seeds, with the standard deviation and range of "
           "the ratio to random; student time against the clutter-motion student's in this run.", summary,
           columns=("student reward", "contact fraction", "x random (mean ± sd)", "range", "student s", "time vs clutter"),
           append=not args.no_append)  # fmt: skip


if __name__ == "__main__":
    main()
