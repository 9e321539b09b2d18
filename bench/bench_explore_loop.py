"""The closed loop: does the explorer's data, or a 50/50 mix, train a better world model than random data of the same size?

    .venv/bin/python bench/bench_explore_loop.py --student STUDENT/checkpoint-N --tokenizer TOK [--work DIR]
        [--episodes 24] [--heldout-episodes 8] [--teacher-steps 400] [--seed 10]

From a trained student (`f1 train student`, whose teacher's tokenizer is TOK) and the CPU recipe's
settings (64x64 cameras, 40 actions an episode):
1. data (stores with the clutter's poses and contacts):
   random  `f1 collect --policy random` (seed S = --seed, 10) for training, seed S + 1 for held-out;
   explorer  the student resumed from its checkpoint with `--record`, its sampled actions (still
             training by PPO), E / envs iterations into one store, then H / envs more into another;
   mix  E / 2 random episodes (seed S) and E / 2 explorer episodes (the student resumed again from
        the same checkpoint), joined by `f1 dataset merge`: the same size as the others.
2. three world models, `f1 train teacher` on each training store with the same tokenizer and the
   same number of optimizer steps (`--max-steps`), wrist only (`teacher.use_head_camera=false`),
   training seed S.
3. all evaluated on the same held-out episodes, random and explorer mixed, with
   f1.train.prediction_eval.PredictionEvaluator: one-step and k = 8 open-loop PSNR, one-step token
   accuracy (with copying the frame as the baseline), pooled over all predicted frames and split
   by contact: a one-step frame t+1 is "contact" when the robot touched the clutter in the step
   leading to it; an open-loop frame t0+k when it touched it in any step t0+1 .. t0+k.
Tables go to stdout and bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from results import REPO, fresh_work_dir, load_average, machine, report, run_f1

SIZE = ["--set", "environment.image_size=[64,64]"]
K = 8
ARMS = ("random", "explorer", "mix")  # the training data of the three world models


def record_explorer(student: Path, work: Path, name: str, iterations: int, envs: int, timings: dict) -> Path:
    """Resume a copy of the student for `iterations` more iterations, recording them into work/name."""
    import torch

    state = torch.load(student / "training_state.pt", weights_only=False)
    teacher = torch.load(student / "model.pt", weights_only=False)["model_config"]["teacher_path"]
    run_dir = work / f"student_{name}"
    shutil.copytree(student, run_dir / student.name)
    step = state["step"]
    run_f1("bench_explore_loop", ["train", "student", "--teacher_path", teacher, "--output-dir", run_dir, "--resume", run_dir / student.name,
         "--total-iterations", step + iterations, "--steps-per-episode", 40, "--envs", envs, "--record", work / name, *SIZE],
        f"record {name}", timings)  # fmt: skip
    return work / name


def evaluate(teacher_dir: Path, heldout: list[Path]) -> dict:
    """Pooled and contact-split one-step / k = K figures of the teacher's last checkpoint on the held-out stores."""
    from f1.datasets import open_store
    from f1.train.checkpoint import latest_checkpoint
    from f1.train.online.models import freeze, load_world_model
    from f1.train.prediction_eval import OPEN_LOOP_START_EVERY, PredictionEvaluator

    checkpoint = latest_checkpoint(teacher_dir)
    bundle = load_world_model(checkpoint, "--checkpoint", "cpu")
    freeze(bundle.world_model)
    freeze(bundle.tokenizer)
    t = bundle.config.training
    evaluator = PredictionEvaluator(bundle.world_model, bundle.tokenizer, bundle.normalizers, t.n_obs_img_steps, t.obs_img_stride, False)
    one_contact, loop_contact = [], []
    for path in heldout:
        store = open_store(path)
        for info in store.episodes:
            arrays = store.read_episode(info, keys=("wrist_rgb", "action", "state", "object_contact"))
            evaluator.add_episode(arrays)
            contact = arrays["object_contact"]  # (N,) contact in the step leading to step k
            one_contact.append(contact[1:])  # frames 1..N-1, as the evaluator's one-step arrays
            t0 = np.arange(0, info.length - 1, OPEN_LOOP_START_EVERY)
            t0 = t0[t0 + K < info.length]  # the lanes alive at k = K, in the evaluator's order
            loop_contact.append(np.array([contact[s + 1 : s + K + 1].any() for s in t0], bool))
    one_mask, loop_mask = np.concatenate(one_contact), np.concatenate(loop_contact)
    one = {key: np.concatenate(values) for key, values in evaluator.one_step.items()}
    loop = {key: np.concatenate(values[K - 1]) for key, values in evaluator.open_loop.items()}
    assert len(one["psnr_model"]) == len(one_mask) and len(loop["psnr_model"]) == len(loop_mask), (len(one_mask), len(loop_mask))
    out = {"checkpoint": str(checkpoint), "frames": {"one_step": [int(one_mask.sum()), int((~one_mask).sum())],
                                                    f"k{K}": [int(loop_mask.sum()), int((~loop_mask).sum())]}}  # fmt: skip
    for split, (m1, mk) in {"all": (slice(None), slice(None)), "contact": (one_mask, loop_mask), "no contact": (~one_mask, ~loop_mask)}.items():
        mean = lambda values, mask: float(values[mask].mean()) if values[mask].size else float("nan")  # noqa: E731
        out[split] = {
            "psnr_model": mean(one["psnr_model"], m1),
            "psnr_copy_current": mean(one["psnr_copy_current"], m1),
            "token_accuracy": mean(one["token_accuracy"], m1),
            "token_accuracy_copy_current": mean(one["token_accuracy_copy_current"], m1),
            f"psnr_model_k{K}": mean(loop["psnr_model"], mk),
            f"psnr_copy_last_k{K}": mean(loop["psnr_copy_last"], mk),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", type=Path, required=True, help="a student checkpoint-<N> directory")
    parser.add_argument("--tokenizer", type=Path, required=True, help="its teacher's tokenizer directory")
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "bench_explore_loop")
    parser.add_argument("--episodes", type=int, default=24)
    parser.add_argument("--heldout-episodes", type=int, default=8)
    parser.add_argument("--envs", type=int, default=2)
    parser.add_argument("--teacher-steps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=10, help="the random data's and the teachers' seed S (held-out: S + 1)")
    parser.add_argument("--no-append", action="store_true", help="print the tables without appending them to RESULTS.md")
    args = parser.parse_args()
    work = fresh_work_dir(args.work)
    timings: dict[str, float] = {}
    collect = ["collect", "--gpus", 0, "--workers", 1, "--envs", args.envs, "--steps-per-episode", 40, *SIZE]
    run_f1("bench_explore_loop", [*collect, "--episodes", args.episodes, "--seed", args.seed, "--out", work / "random_train"], "collect random (train)", timings)
    run_f1("bench_explore_loop", [*collect, "--episodes", args.heldout_episodes, "--seed", args.seed + 1, "--out", work / "random_heldout"], "collect random (held-out)", timings)
    student = args.student.resolve()
    record_explorer(student, work, "explorer_train", -(-args.episodes // args.envs), args.envs, timings)
    record_explorer(student, work, "explorer_heldout", -(-args.heldout_episodes // args.envs), args.envs, timings)
    half = args.episodes // 2
    run_f1("bench_explore_loop", [*collect, "--episodes", half, "--seed", args.seed, "--out", work / "random_half"], "collect random (half)", timings)
    record_explorer(student, work, "explorer_half", -(-half // args.envs), args.envs, timings)
    run_f1("bench_explore_loop", ["dataset", "merge", work / "random_half", work / "explorer_half", "--out", work / "mix_train"], "merge mix", timings)

    from f1.datasets import open_store
    from f1.datasets.stats import compute_stats

    data = {}
    for name in ARMS:
        store = work / f"{name}_train"
        data[name] = compute_stats(open_store(store), sample_images=1)
        run_f1("bench_explore_loop", ["train", "teacher", "--data", store, "--tokenizer", args.tokenizer.resolve(), "--output-dir", work / f"wm_{name}",
             "--max-steps", args.teacher_steps, "--set", "teacher.use_head_camera=false", "--set", f"training.seed={args.seed}", *SIZE], f"teacher on {name} data", timings)  # fmt: skip
    heldout = [work / "random_heldout", work / "explorer_heldout"]
    held = {name: compute_stats(open_store(path), sample_images=1)["exploration"] for name, path in zip(("random", "explorer"), heldout)}
    results = {name: evaluate(work / f"wm_{name}", heldout) for name in ARMS}
    (work / "results.json").write_text(json.dumps({"train_data": {k: v["exploration"] for k, v in data.items()}, "heldout": held, "results": results}, indent=1))

    e = {k: v["exploration"] for k, v in data.items()}
    frames = results["random"]["frames"]
    setup = (
        f"machine: {machine()}, load {load_average():.1f}. Student {student}; tokenizer {args.tokenizer}; seed {args.seed} "
        f"(random data, teachers; held-out random {args.seed + 1}). Training data: "
        f"{args.episodes} episodes x 40 actions each, random (contact fraction {e['random']['object_contact_fraction']:.3f}, "
        f"objects moved {e['random']['objects_moved']:.2f}/episode, union voxels {e['random']['union_voxels']:.0f}) vs the "
        f"explorer's --record (contact fraction {e['explorer']['object_contact_fraction']:.3f}, objects moved "
        f"{e['explorer']['objects_moved']:.2f}, union voxels {e['explorer']['union_voxels']:.0f}) vs a 50/50 mix (contact "
        f"fraction {e['mix']['object_contact_fraction']:.3f}, {data['mix']['episodes']} episodes); a world model on each, "
        f"{args.teacher_steps} teacher steps, wrist only. Held-out: {args.heldout_episodes} random (contact "
        f"{held['random']['object_contact_fraction']:.3f}) + {args.heldout_episodes} explorer (contact "
        f"{held['explorer']['object_contact_fraction']:.3f}) episodes; one-step frames with/without contact "
        f"{frames['one_step'][0]}/{frames['one_step'][1]}, k = {K} {frames[f'k{K}'][0]}/{frames[f'k{K}'][1]}. "
        "Wall times: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + "."
    )
    rows = []
    for split in ("all", "contact", "no contact"):
        for name in ARMS:
            r = results[name][split]
            rows.append((
                f"{split}: world model on {name} data", f"{r['psnr_model']:.2f}", f"{r['psnr_copy_current']:.2f}",
                f"{r['token_accuracy']:.3f}", f"{r['token_accuracy_copy_current']:.3f}",
                f"{r[f'psnr_model_k{K}']:.2f}", f"{r[f'psnr_copy_last_k{K}']:.2f}",
            ))  # fmt: skip
    columns = ("held-out frames: model", "1-step PSNR", "copy", "1-step token acc.", "copy", f"k={K} PSNR", "copy-last")
    report("bench_explore_loop", setup, rows, columns=columns, append=not args.no_append)


if __name__ == "__main__":
    main()
