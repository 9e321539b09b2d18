"""The world-model experiment from nothing, on this machine: collect, tokenizer, teacher, evaluate.

    .venv/bin/python bench/bench_world_model.py [--work DIR] [--train-episodes 24] [--heldout-episodes 8]

1. `f1 collect` a training store (seed 0) and a held-out store of another seed (1), both with
   the defaults (128x128 cameras, a new scene every episode) and `--steps-per-episode 40`.
2. `f1 train tokenizer --data STORE` with the defaults, then its four figures on the held-out store.
3. `f1 train teacher --data STORE --tokenizer TOK` with the defaults.
4. `f1 evaluate --checkpoint TEACHER --data HELDOUT`: one step and open loop against the baselines.
Each stage's wall time is measured; the tables go to stdout and bench/RESULTS.md, and the pictures
(reconstructions, horizon, rollout) stay under --work.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from results import REPO, fresh_work_dir, load_average, machine, report, run_f1





def tokenizer_figures(tokenizer_dir: Path, store_dir: Path) -> dict:
    """The tokenizer's four figures on every 2nd wrist frame of the held-out store."""
    import torch

    from f1.datasets import open_store
    from f1.train.image_metrics import image_figures
    from f1.train.models.tokenizer import FSQTokenizer

    tokenizer = FSQTokenizer.load(tokenizer_dir)
    store = open_store(store_dir)
    truth, recon = [], []
    with torch.no_grad():
        for info in store.episodes:
            frames = torch.from_numpy(store.read_episode(info, keys=["wrist_rgb"])["wrist_rgb"][::2])
            truth.append(tokenizer.preprocess(frames).permute(0, 2, 3, 1).numpy())
            recon.append(tokenizer.decode(tokenizer.encode(frames)).permute(0, 2, 3, 1).numpy())
    return image_figures(np.concatenate(recon), np.concatenate(truth))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "bench_world_model")
    parser.add_argument("--train-episodes", type=int, default=24)
    parser.add_argument("--heldout-episodes", type=int, default=8)
    parser.add_argument("--steps-per-episode", type=int, default=40)
    parser.add_argument("--no-append", action="store_true", help="print the tables without appending them to RESULTS.md")
    args = parser.parse_args()
    work = fresh_work_dir(args.work)
    store, heldout, tok, teacher, evaluation = (work / name for name in ("store", "heldout", "tokenizer", "teacher", "evaluate"))
    timings: dict[str, float] = {}
    steps = ["--steps-per-episode", args.steps_per_episode, "--gpus", 0]
    run_f1("bench_world_model", ["collect", *steps, "--episodes", args.train_episodes, "--seed", 0, "--out", store], "collect (train)", timings)
    run_f1("bench_world_model", ["collect", *steps, "--episodes", args.heldout_episodes, "--seed", 1, "--out", heldout], "collect (held-out)", timings)
    run_f1("bench_world_model", ["train", "tokenizer", "--data", store, "--output-dir", tok], "tokenizer", timings)
    run_f1("bench_world_model", ["train", "teacher", "--data", store, "--tokenizer", tok, "--output-dir", teacher], "teacher", timings)
    checkpoint = max(teacher.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    run_f1("bench_world_model", ["evaluate", "--checkpoint", checkpoint, "--data", heldout, "--episodes", args.heldout_episodes, "--output-dir", evaluation],
        "evaluate", timings)  # fmt: skip

    tok_metrics = json.loads((tok / "metrics.json").read_text())
    held = tokenizer_figures(tok, heldout)
    prediction = json.loads((evaluation / "report.json").read_text())["prediction"]
    one, loop, mem = prediction["one_step"], {row["k"]: row for row in prediction["open_loop"]}, prediction["memory"]
    setup = (
        f"machine: {machine()}, load {load_average():.1f}; {args.train_episodes} train episodes (seed 0) and "
        f"{args.heldout_episodes} held-out (seed 1) of {args.steps_per_episode} actions, 128x128 cameras, a scene an episode; "
        f"tokenizer and teacher with their defaults ({tok_metrics['steps']} tokenizer steps, teacher {checkpoint.name}); "
        f"figures on the held-out store. Wall times: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + f". Pictures: {work}"
    )
    goal = lambda ok: "yes" if ok else "**no**"  # noqa: E731
    rows = [
        ("tokenizer PSNR (dB)", f"{held['psnr']:.2f}", "goal >= 32", goal(held["psnr"] >= 32)),
        ("tokenizer saturation kept", f"{held['saturation_ratio']:.3f}", "goal >= 0.85", goal(held["saturation_ratio"] >= 0.85)),
        ("tokenizer MAE on the 2 % most colourful pixels", f"{held['colourful_mae']:.4f}", "goal <= 0.03", goal(held["colourful_mae"] <= 0.03)),
        ("tokenizer gradient energy / truth", f"{held['gradient_energy_ratio']:.3f}", "goal 0.8-1.25",
         goal(0.8 <= held["gradient_energy_ratio"] <= 1.25)),
        ("tokenizer training time", f"{timings['tokenizer']:.0f} s", "goal <= 300 s", goal(timings["tokenizer"] <= 300)),
        ("one-step PSNR: world model (dB)", f"{one['psnr_model']:.2f}", f"copy current {one['psnr_copy_current']:.2f} + 1",
         goal(one["psnr_model"] >= one["psnr_copy_current"] + 1)),
        ("one-step token accuracy", f"{one['token_accuracy']:.3f}", f"copy current {one['token_accuracy_copy_current']:.3f} + 0.05",
         goal(one["token_accuracy"] >= one["token_accuracy_copy_current"] + 0.05)),
        ("one-step PSNR drop with actions shuffled (dB)", f"{one['psnr_model'] - one['psnr_shuffled_actions']:.2f}", "goal >= 1.5",
         goal(one["psnr_model"] - one["psnr_shuffled_actions"] >= 1.5)),
        ("one-step PSNR: the motion alone (warped frame) / without the head frame (dB)",
         f"{one['psnr_motion']:.2f} / {one['psnr_model_without_head']:.2f}" if "psnr_model_without_head" in one else f"{one['psnr_motion']:.2f}",
         "", ""),
        ("one-step token accuracy: the motion alone (the warped frame's codes)", f"{one['token_accuracy_motion']:.3f}", "", ""),
        ("one-step PSNR: tokenizer ceiling (dB)", f"{one['psnr_tokenizer']:.2f}", "", ""),
        ("memory carried vs zeroed (dB)", f"{mem['gain_db']:+.2f}", "", ""),
        ("open loop k <= 8 above copy-last", ", ".join(f"{loop[k]['psnr_model'] - loop[k]['psnr_copy_last']:+.1f}" for k in range(1, 9) if k in loop),
         "every k", goal(all(loop[k]["psnr_model"] > loop[k]["psnr_copy_last"] for k in range(1, 9) if k in loop))),
        ("open loop k = 8 PSNR: model / copy-last / shuffled (dB)",
         f"{loop[8]['psnr_model']:.2f} / {loop[8]['psnr_copy_last']:.2f} / {loop[8]['psnr_shuffled_actions']:.2f}" if 8 in loop else "n/a", "", ""),
        ("teacher training time", f"{timings['teacher']:.0f} s", "goal <= 600 s", goal(timings["teacher"] <= 600)),
    ]  # fmt: skip
    report("bench_world_model", setup, rows, columns=("measurement", "figure", "baseline or goal", "met"), append=not args.no_append)


if __name__ == "__main__":
    main()
