"""Does the world model's memory keep what left the view? The memory-pixel evaluation from nothing.

    .venv/bin/python bench/bench_memory.py [--work DIR] [--train-episodes 12] [--heldout-episodes 16]

1. `f1 collect` with the wrist depth (`--set environment.depth=true`), 40 actions an episode: a training
   store of OU episodes (seed 0) and look-away-and-back ones (`--policy lookaway`, seed 2), merged;
   held-out stores of another seed (1): look-away, OU (the default) and random.
2. `f1 train tokenizer` with its defaults on the merged store, then a teacher per arm on it, one after
   the other (their wall times give the time ratio): `default` (the defaults: the GRU memory); a memory
   design to compare adds its arm to ARMS (its `--set` overrides).
3. `f1 evaluate` each teacher on the held-out look-away store (prediction.memory_pixels, memory.png),
   and the first on the OU and random ones for how often memory pixels occur under exploration that
   does not look back on purpose.
The table (against the memory issue's goals, a column an arm) goes to stdout and bench/RESULTS.md;
pictures stay under --work.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from results import REPO, fresh_work_dir, load_average, machine, report, run_f1

DEPTH = ["--set", "environment.depth=true"]
ARMS = {"default": []}  # arm -> the teacher's extra arguments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "bench_memory")
    parser.add_argument("--train-episodes", type=int, default=12, help="of each policy (OU and look-away)")
    parser.add_argument("--heldout-episodes", type=int, default=16)
    parser.add_argument("--steps-per-episode", type=int, default=40)
    parser.add_argument("--arms", default=",".join(ARMS), help=f"teachers to train, of {list(ARMS)}")
    parser.add_argument("--no-append", action="store_true", help="print the table without appending it to RESULTS.md")
    args = parser.parse_args()
    work = fresh_work_dir(args.work)
    timings: dict[str, float] = {}
    steps = ["--steps-per-episode", args.steps_per_episode, "--gpus", 0, *DEPTH]
    stores = {
        "train_ou": ("ou", 0, args.train_episodes), "train_look": ("lookaway", 2, args.train_episodes),
        "heldout_look": ("lookaway", 1, args.heldout_episodes), "heldout_ou": ("ou", 1, args.heldout_episodes),
        "heldout_random": ("random", 1, args.heldout_episodes),
    }  # fmt: skip
    for name, (policy, seed, episodes) in stores.items():
        run_f1("bench_memory", ["collect", *steps, "--policy", policy, "--seed", seed, "--episodes", episodes, "--out", work / name],
               f"collect ({name})", timings)  # fmt: skip
    train = work / "train"
    run_f1("bench_memory", ["dataset", "merge", work / "train_ou", work / "train_look", "--out", train], "merge", timings)
    run_f1("bench_memory", ["train", "tokenizer", "--data", train, "--output-dir", work / "tokenizer"], "tokenizer", timings)
    arms = args.arms.split(",")
    reports, checkpoints = {}, {}
    for arm in arms:
        teacher = work / f"teacher_{arm}"
        run_f1("bench_memory", ["train", "teacher", "--data", train, "--tokenizer", work / "tokenizer", "--output-dir", teacher, *ARMS[arm]],
               f"teacher ({arm})", timings)  # fmt: skip
        checkpoints[arm] = max(teacher.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        for name in ("heldout_look", "heldout_ou", "heldout_random") if arm == arms[0] else ("heldout_look",):
            out = work / f"evaluate_{arm}_{name}"
            run_f1("bench_memory", ["evaluate", "--checkpoint", checkpoints[arm], "--data", work / name, "--episodes", args.heldout_episodes,
                                    "--output-dir", out], f"evaluate ({arm}, {name})", timings)  # fmt: skip
            reports[arm, name] = json.loads((out / "report.json").read_text())["prediction"]

    goal = lambda ok: "yes" if ok else "**no**"  # noqa: E731
    setup = (
        f"machine: {machine()}, load {load_average():.1f}; train: {args.train_episodes} OU (seed 0) + {args.train_episodes} look-away "
        f"(seed 2) episodes of {args.steps_per_episode} actions, 128x128, wrist depth on; tokenizer with its defaults; teachers: "
        + ", ".join(f"{arm} ({' '.join(ARMS[arm][1::2]) or 'the defaults'}, {checkpoints[arm].name})" for arm in arms)
        + f"; held-out: {args.heldout_episodes} episodes of seed 1 per policy, wrist only. Wall times: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + f". Pictures: {work}/evaluate_*/memory.png"
    )
    first = reports[arms[0], "heldout_look"]["memory_pixels"]
    rows = [
        ("memory pixels: frames with them / evaluated (look-away)",
         f"{first['frames']['with_memory_pixels']} / {first['frames']['evaluated']}", "goal >= 300", goal(first["frames"]["with_memory_pixels"] >= 300)),
        ("steps with memory pixels: look-away / OU / random",
         " / ".join(f"{reports[arms[0], n]['memory_pixels']['steps_fraction']:.1%}" for n in ("heldout_look", "heldout_ou", "heldout_random")),
         "", ""),
    ]  # fmt: skip
    for arm in arms:
        look = reports[arm, "heldout_look"]
        m, one, loop = look["memory_pixels"], look["one_step"], {row["k"]: row for row in look["open_loop"]}
        memory_loop = {row["k"]: row for row in m["open_loop"]}
        gap = m["psnr_oracle"] - m["psnr_zeroed"]
        closed = (m["psnr_carried"] - m["psnr_zeroed"]) / gap if gap > 0 else float("nan")
        qualifying, none = m["full_frame_qualifying"], m["full_frame_none"]
        rows += [
            (f"{arm}: one step, masked PSNR on memory pixels: carried / zeroed / other episode / oracle (dB)",
             f"{m['psnr_carried']:.2f} / {m['psnr_zeroed']:.2f} / {m['psnr_other_episode']:.2f} / {m['psnr_oracle']:.2f}", "", ""),
            (f"{arm}: carried - zeroed on memory pixels (dB)", f"{m['psnr_carried'] - m['psnr_zeroed']:+.2f}", "goal >= +1.5",
             goal(m["psnr_carried"] - m["psnr_zeroed"] >= 1.5)),
            (f"{arm}: share of the zeroed-to-oracle gap closed", f"{closed:.2f} (gap {gap:+.2f} dB)", "goal >= 0.5", goal(closed >= 0.5)),
            (f"{arm}: full frame, memory pixels >= 10 % ({qualifying['frames']} frames): carried - zeroed (dB)",
             f"{qualifying['carried'] - qualifying['zeroed']:+.2f}", "goal >= +0.5", goal(qualifying["carried"] - qualifying["zeroed"] >= 0.5)),
            (f"{arm}: full frame, no memory pixels ({none['frames']} frames): carried - zeroed (dB)",
             f"{none['carried'] - none['zeroed']:+.2f}", "goal within 0.1", goal(abs(none["carried"] - none["zeroed"]) <= 0.1)),
            (f"{arm}: open loop k = 8 on memory pixels: carried / zeroed (dB)",
             f"{memory_loop[8]['psnr_carried']:.2f} / {memory_loop[8]['psnr_zeroed']:.2f}" if 8 in memory_loop else "n/a", "carried above",
             goal(8 in memory_loop and memory_loop[8]["psnr_carried"] > memory_loop[8]["psnr_zeroed"])),
            (f"{arm}: whole frames (look-away, head dropped): one step model / copy; open loop k = 8 model / copy-last (dB)",
             f"{one['psnr_model']:.2f} / {one['psnr_copy_current']:.2f}; "
             + (f"{loop[8]['psnr_model']:.2f} / {loop[8]['psnr_copy_last']:.2f}" if 8 in loop else "n/a"), "", ""),
        ]  # fmt: skip
    if len(arms) > 1:
        base = timings[f"teacher ({arms[0]})"]
        rows += [(f"teacher time, {arm} / {arms[0]}", f"{timings[f'teacher ({arm})'] / base:.2f}x", "goal <= 1.3x",
                  goal(timings[f"teacher ({arm})"] / base <= 1.3)) for arm in arms[1:]]  # fmt: skip
    report("bench_memory", setup, rows, columns=("measurement", "figure", "goal", "met"), append=not args.no_append)


if __name__ == "__main__":
    main()
