"""`f1 evaluate`: how well a world model predicts, and how far an explorer explores.

    f1 evaluate --checkpoint CKPT [--data STORE] [--episodes N] [--output-dir OUT]

1. Prediction (needs --data, a store of held-out episodes: its last N episodes
   are used). The checkpoint's world model (a student's: its teacher's) predicts
   every next wrist frame one step ahead (teacher forcing) and k = 1..16 steps
   ahead open loop, against copying the current frame, the same episodes with
   their actions shuffled in time, the tokenizer's own reconstruction (the
   ceiling) and the model with its memory zeroed: f1.train.prediction_eval has
   the definitions. PSNR = 10 log10(1 / MSE), pixels in [0, 1], averaged over frames.
2. Exploration (student and adversarial checkpoints). N live episodes, each on
   its own seed and scene, run by the explorer (actions sampled, as in training,
   and its mean action), by the random policy and by the OU policy of `f1 collect`,
   every policy on the same seeds and each episode in a freshly built scene (the same physics state
   whatever ran before it: contact figures repeat exactly). State coverage = distinct 5 cm voxels the end
   effector visits in an episode (f1.train.online.coverage); union_voxels = distinct
   voxels over all its episodes; object_contact_fraction = the fraction of steps in
   which the robot touched a clutter object (SAPIEN's contacts); objects_moved = the
   mean number of objects displaced by more than 2 cm in an episode
   (f1.datasets.exploration has the definitions); also each policy's reward terms.
   The env is built as the checkpoint's run had it (its config's environment section);
   --steps-per-episode sets the episode length.

Writes OUT/report.md, OUT/report.json, OUT/horizon.png, OUT/rollout.png (prediction), OUT/coverage.png (exploration).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import numpy as np

from f1.datasets.s3 import store_path
from f1.shared.config import F1Config, config_from_dict
from f1.shared.errors import UserError
from f1.datasets.exploration import MOVED_M
from f1.train.online.coverage import VOXEL_SIZE_M, coverage_curve, exploration_summary
from f1.train.online.models import EXPLORER_PHASES, checkpoint_phase, read_model_file

EVAL_STREAM = 4  # episode seeds of evaluation rollouts
BASELINES = ("random", "ou")


def main(
    cfg: F1Config, checkpoint: Path, data: Optional[Path] = None, episodes: int = 4, output_dir: Path = Path("outputs/evaluate")
) -> dict[str, Any]:
    """Evaluate `checkpoint`; returns what report.json holds."""
    checkpoint, output_dir = Path(checkpoint), Path(output_dir)
    model_file = read_model_file(checkpoint, "--checkpoint")
    phase = checkpoint_phase(model_file)
    if phase not in ("teacher", *EXPLORER_PHASES):
        raise UserError(f"--checkpoint {checkpoint} is a {phase} checkpoint; pass one of `f1 train teacher|student|adversarial`")
    has_explorer = phase in EXPLORER_PHASES
    if data is None and not has_explorer:
        raise UserError(f"nothing to evaluate: {phase} checkpoint {checkpoint} has no explorer; pass --data STORE (held-out episodes)")
    store = _check_store(store_path(data)) if data is not None else None

    import torch

    from f1.shared.logs import setup_logging
    from f1.train.online.models import explorer_base_path, freeze, load_explorer, load_world_model
    from f1.train.online.common import limit_cpu_threads

    log = setup_logging(cfg.logging, output_dir, "evaluate")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    threads_before = limit_cpu_threads(device)
    torch.manual_seed(cfg.training.seed)
    wm_path = checkpoint if phase != "student" else explorer_base_path(checkpoint, model_file)
    bundle = load_world_model(wm_path, "--checkpoint", device)
    freeze(bundle.world_model)
    freeze(bundle.tokenizer)
    report: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "phase": phase,
        "world_model": str(wm_path),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "device": str(device),
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    if store is not None:
        log.info("prediction quality on the last %d episodes of %s", episodes, data)
        report["prediction"] = evaluate_prediction(bundle, store, episodes, output_dir, seed=cfg.training.seed)
        log_prediction_summary(log, report["prediction"], output_dir)
    if has_explorer:
        run_cfg = config_from_dict(model_file["model_config"]["config"])
        run_cfg.training.steps_per_episode = cfg.training.steps_per_episode
        run_cfg.training.seed = cfg.training.seed
        run_cfg.environment.privileged_info = True  # the contact figures read the simulator's object state
        explorer, _ = load_explorer(checkpoint, "--checkpoint", run_cfg, device, base=bundle if phase == "student" else None)
        freeze(explorer)
        log.info("exploration: %d episodes of %d steps per policy", episodes, run_cfg.training.steps_per_episode)
        report["exploration"] = evaluate_exploration(run_cfg, bundle, explorer, episodes, device, output_dir)
    torch.set_num_threads(threads_before)
    (output_dir / "report.json").write_text(json.dumps(report, indent=2))
    (output_dir / "report.md").write_text(render_report(report))
    log.info("wrote %s", output_dir / "report.md")
    return report


def _check_store(data: Path) -> Any:
    from f1.datasets import open_store
    from f1.datasets.schema import StoreError

    store = open_store(data)
    if "wrist" not in store.spec.cameras:
        raise StoreError(f"store {data} has no wrist camera (cameras {list(store.spec.cameras)}); pass a store from `f1 collect`")
    if not any(e.length >= 2 for e in store.episodes):
        raise StoreError(f"store {data} has no episode with two steps or more; collect some with `f1 collect --out {data}`")
    return store


# --------------------------------------------------------------------------- 1. prediction


def evaluate_prediction(bundle: Any, store: Any, episodes: int, output_dir: Path, seed: int = 0) -> dict[str, Any]:
    """f1.train.prediction_eval over the store's last `episodes` episodes; writes horizon.png and rollout.png."""
    from tqdm import tqdm

    from f1.train.prediction_eval import PredictionEvaluator

    cfg = bundle.config
    # The teacher phase may feed the head frame; the adversarial phase trains wrist-only.
    use_head = bundle.phase == "teacher" and cfg.teacher.use_head_camera and "head" in store.spec.cameras
    keys = ("wrist_rgb", "action", "state") + (("head_rgb",) if use_head else ())
    held_out = [e for e in store.episodes if e.length >= 2][-episodes:]
    evaluator = PredictionEvaluator(
        bundle.world_model, bundle.tokenizer, bundle.normalizers, cfg.training.n_obs_img_steps, cfg.training.obs_img_stride,
        use_head, seed=seed,
    )  # fmt: skip
    for info in tqdm(held_out, desc="prediction", unit="episode"):
        evaluator.add_episode(store.read_episode(info, keys=keys))
    result = evaluator.summary()
    result.update(episodes=[e.episode_id for e in held_out], used_head_camera=use_head)
    write_horizon_png(output_dir / "horizon.png", result["open_loop"])
    write_rollout_png(output_dir / "rollout.png", evaluator.first_rollout)
    if store.spec.camera_geometry and "wrist" in store.spec.depth_cameras:
        result["memory_pixels"] = evaluate_memory_pixels(evaluator, store, held_out, keys, output_dir)
    return result


def evaluate_memory_pixels(evaluator: Any, store: Any, held_out: list[Any], keys: tuple[str, ...], output_dir: Path) -> dict[str, Any]:
    """f1.train.memory_eval over the held-out episodes (each with the next one's memory as "another episode's");
    writes memory.png."""
    from tqdm import tqdm

    from f1.train.memory_eval import MEMORY_KEYS, MemoryPixelEvaluator

    memory = MemoryPixelEvaluator(evaluator)
    keys = (*keys, *MEMORY_KEYS)
    # Last to first, each fed the memories the one after it returned (the first episode's for the last): every
    # episode's memory pass runs once, and one more for the first.
    other = memory.carried_memories(store.read_episode(held_out[0], keys=keys))
    for info in tqdm(held_out[::-1], desc="memory pixels", unit="episode"):
        other = memory.add_episode(store.read_episode(info, keys=keys), other)
    write_memory_png(output_dir / "memory.png", memory.picture_rows())
    return memory.summary()


def log_prediction_summary(log: Any, prediction: dict[str, Any], output_dir: Path) -> None:
    """The one-step and k = 8 rows beside their baselines, on the console, and where the pictures are."""
    one = prediction["one_step"]
    log.info(
        "one step: PSNR %.2f dB (copy current frame %.2f, actions shuffled %.2f, tokenizer ceiling %.2f); "
        "token accuracy %.3f (copy %.3f)",
        one["psnr_model"], one["psnr_copy_current"], one["psnr_shuffled_actions"], one["psnr_tokenizer"],
        one["token_accuracy"], one["token_accuracy_copy_current"],
    )  # fmt: skip
    rows = {row["k"]: row for row in prediction["open_loop"]}
    k = 8 if 8 in rows else max(rows, default=None)
    if k is not None:
        row = rows[k]
        log.info(
            "open loop k=%d: PSNR %.2f dB (copy frame t0 %.2f, actions shuffled %.2f, tokenizer ceiling %.2f)",
            k, row["psnr_model"], row["psnr_copy_last"], row["psnr_shuffled_actions"], row["psnr_tokenizer"],
        )  # fmt: skip
    log.info("pictures: %s, %s", output_dir / "horizon.png", output_dir / "rollout.png")


def to_uint8_np(images: np.ndarray) -> np.ndarray:
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


def write_rollout_png(path: Path, rollout: dict[str, Any]) -> Path:
    """Captioned rows: the true frames t0 .. t0+K, then frame t0 followed by the open-loop predictions of t0+1 .. t0+K."""
    from f1.train.run_outputs import write_rows_png

    truth = to_uint8_np(rollout["truth"])
    predicted = to_uint8_np(np.stack([rollout["truth"][0], *rollout["predicted"]]))
    n = min(len(truth), len(predicted))
    rows = [("truth", truth[:n]), ("open loop (fed its own codes and frames), from the true frame k=0", predicted[:n])]
    return write_rows_png(path, rows, [f"k={k}" for k in range(n)])


def write_memory_png(path: Path, rows: list[tuple[str, list[np.ndarray]]]) -> Optional[Path]:
    """The frames with the most memory pixels, one a row: truth | with memory | without | oracle | the memory pixels."""
    from f1.train.run_outputs import write_rows_png

    if not rows:
        return None
    return write_rows_png(path, [(label, list(to_uint8_np(np.stack(frames)))) for label, frames in rows],
                          ["truth", "memory carried", "memory zeroed", "oracle", "memory pixels"])  # fmt: skip


def write_horizon_png(path: Path, open_loop: list[dict[str, Any]]) -> Path:
    """Open-loop PSNR against k: the model, copy-last, shuffled actions and the tokenizer ceiling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = [row["k"] for row in open_loop]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for key, label, style in (
        ("psnr_tokenizer", "tokenizer (ceiling)", ":"),
        ("psnr_model", "world model, open loop", "-"),
        ("psnr_shuffled_actions", "world model, actions shuffled", "--"),
        ("psnr_copy_last", "copy frame t0", "-."),
    ):
        ax.plot(k, [row[key] for row in open_loop], style, marker="o", markersize=3, label=label)
    ax.set_xlabel("steps ahead k (fed its own predictions)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title("open-loop prediction on held-out episodes")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- 2. exploration


def evaluate_exploration(cfg: F1Config, bundle: Any, explorer: Any, episodes: int, device: Any, output_dir: Path) -> dict[str, Any]:
    from f1.train.online.common import render_device_for
    from f1.train.online.rewards import StudentReward
    from f1.train.online.rollout import ExplorerPolicy, ScriptedPolicy, WorldModelStepper, collect_rollout, make_online_env, plan_round

    t = cfg.training
    stepper = WorldModelStepper(bundle.world_model, bundle.tokenizer, bundle.normalizers, t.n_obs_img_steps, t.obs_img_stride)
    reward = StudentReward.from_config(bundle.world_model.codes, cfg.student)
    policies = {
        "explorer (sampled)": ExplorerPolicy(explorer),
        "explorer (mean)": ExplorerPolicy(explorer, deterministic=True),
        **{name: ScriptedPolicy(name, t.action_dim, 1, device) for name in BASELINES},
    }
    venv = make_online_env(cfg, 1, record=False, render_device=render_device_for(device))
    curves: dict[str, list[np.ndarray]] = {name: [] for name in policies}
    contact_curves: dict[str, list[np.ndarray]] = {name: [] for name in policies}
    runs: dict[str, dict[str, list[np.ndarray]]] = {name: {"ee": [], "contact": [], "pose": [], "valid": []} for name in policies}
    terms: dict[str, list[dict[str, float]]] = {name: [] for name in policies}
    try:
        for episode in range(episodes):
            # scene_reset_interval 1: every episode its own scene; every policy the same seed and scene, each
            # built anew (new_scene): the same physics state whatever the policy before it did
            (slot,) = plan_round(t.seed, EVAL_STREAM, episode, 0, 1, 1, "evaluate")
            slot = replace(slot, new_scene=True)
            for name, policy in policies.items():
                buf = collect_rollout(venv, [slot], policy, stepper, reward, num_steps=t.steps_per_episode, device=device)
                curves[name].append(coverage_curve(buf.ee_pos[:, 0]))
                contact_curves[name].append(np.cumsum(buf.object_contact[:, 0]))
                for key, value in (("ee", buf.ee_pos), ("contact", buf.object_contact), ("pose", buf.object_pose), ("valid", buf.object_valid)):
                    runs[name][key].append(value[:, 0])
                terms[name].append({
                    **{key: float(value.mean()) for key, value in buf.terms.items()},
                    "wm/prediction_ce": float(buf.prediction_ce.mean()),
                })  # fmt: skip
    finally:
        venv.close()
    result: dict[str, Any] = {
        "voxel_size_m": VOXEL_SIZE_M, "moved_m": MOVED_M, "steps_per_episode": t.steps_per_episode, "policies": {},
    }  # fmt: skip
    for name in policies:
        final = np.array([c[-1] for c in curves[name]], float)
        r = runs[name]
        explore = exploration_summary(r["ee"], r["contact"], r["pose"], r["valid"])
        result["policies"][name] = {
            "voxels_per_episode": final.tolist(),
            "mean_voxels": float(final.mean()),
            "std_voxels": float(final.std()),
            "union_voxels": explore["union_voxels"],
            "object_contact_fraction": explore["object_contact_fraction"],
            "contact_steps_per_episode": [int(c[-1]) for c in contact_curves[name]],
            "episodes_with_contact": explore["episodes_with_contact"],
            "objects_moved": explore["objects_moved"],
            "objects_on_table": explore["objects_on_table"],
            **{key: float(np.mean([row[key] for row in terms[name]])) for key in terms[name][0]},
        }
    sampled, random = result["policies"]["explorer (sampled)"], result["policies"]["random"]
    result["explorer_vs_random"] = sampled["mean_voxels"] / max(random["mean_voxels"], 1e-9)
    # None when random never touched the clutter (a ratio over zero says nothing).
    result["contact_vs_random"] = (
        sampled["object_contact_fraction"] / random["object_contact_fraction"] if random["object_contact_fraction"] > 0 else None
    )
    write_coverage_png(output_dir / "coverage.png", curves, contact_curves)
    return result


def write_coverage_png(path: Path, curves: dict[str, list[np.ndarray]], contact_curves: dict[str, list[np.ndarray]]) -> Path:
    """Left: distinct voxels visited vs step; right: steps in contact with the clutter so far vs step.

    Each policy's mean over episodes, shaded between its min and max.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    for axis, series in ((ax, curves), (bx, contact_curves)):
        for name, runs in series.items():
            stacked = np.stack(runs).astype(float)  # (episodes, T+1)
            steps = np.arange(stacked.shape[1])
            axis.plot(steps, stacked.mean(0), label=name)
            axis.fill_between(steps, stacked.min(0), stacked.max(0), alpha=0.15)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    ax.set_ylabel(f"distinct {VOXEL_SIZE_M * 100:.0f} cm voxels visited")
    ax.set_title("end-effector state coverage (same seeds and scenes)")
    ax.legend()
    bx.set_ylabel("steps in contact with the clutter, so far")
    bx.set_title("contact with the clutter (SAPIEN contacts)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- the report


def _fmt(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def render_memory_pixels(m: dict[str, Any]) -> list[str]:
    """report.md's memory section (f1.train.memory_eval has the definitions)."""
    lines = [
        "### Memory: what left the view (wrist only)",
        "",
        f"Memory pixels: pixels of frame t+1 no history frame shows but an earlier frame of the episode did (by "
        f"reprojection with the store's depth and poses); {m['frames']['memory_pixels']} of them in "
        f"{m['frames']['with_memory_pixels']} of {m['frames']['evaluated']} frames ({m['steps_fraction']:.1%} of steps).",
        "",
        "| on memory pixels, one step | masked PSNR |",
        "|---|---:|",
        f"| memory carried | **{_fmt(m['psnr_carried'])}** |",
        f"| memory zeroed | {_fmt(m['psnr_zeroed'])} |",
        f"| memory of another episode | {_fmt(m['psnr_other_episode'])} |",
        f"| geometric oracle (last seen, reprojected) | {_fmt(m['psnr_oracle'])} |",
        "",
        "| full frame, one step | frames | carried | zeroed |",
        "|---|---:|---:|---:|",
    ]
    for group, label in (("qualifying", "memory pixels >= 10 % of the frame"), ("none", "no memory pixels")):
        row = m[f"full_frame_{group}"]
        lines.append(f"| {label} | {row['frames']} | {_fmt(row['carried'])} | {_fmt(row['zeroed'])} |")
    lines += ["", "| open loop k | frames | carried | zeroed |", "|---:|---:|---:|---:|"]
    lines += [f"| {r['k']} | {r['frames']} | {_fmt(r['psnr_carried'])} | {_fmt(r['psnr_zeroed'])} |" for r in m["open_loop"]]
    return [*lines, "", "![memory](memory.png)  truth | memory carried | memory zeroed | geometric oracle | the memory pixels (magenta)", ""]


def render_report(report: dict[str, Any]) -> str:
    lines = [
        f"# f1 evaluate: {report['phase']} checkpoint",
        "",
        f"- checkpoint: `{report['checkpoint']}`",
        f"- world model: `{report['world_model']}`",
        f"- date: {report['date']}, device: {report['device']}",
        "",
    ]
    if "prediction" in report:
        p = report["prediction"]
        one, mem = p["one_step"], p["memory"]
        lines += [
            "## Next-frame prediction on held-out episodes",
            "",
            f"{p['frames']} frames of {len(p['episodes'])} episodes; PSNR in dB at the tokenizer's resolution. "
            "The model's frame is frame t warped by its predicted motion plus its codes' correction, decoded "
            "(f1.train.prediction_eval); "
            "every baseline is computed on the same frames."
            + (" The head camera was fed." if p["used_head_camera"] else ""),
            "",
            "### One step (teacher forcing, memory carried from zeros)",
            "",
            "| predictor | PSNR | SSIM | token accuracy |",
            "|---|---:|---:|---:|",
            f"| world model | **{_fmt(one['psnr_model'])}** | {_fmt(one['ssim_model'])} | **{_fmt(one['token_accuracy'])}** |",
            f"| world model, its motion alone (the warped frame) | {_fmt(one['psnr_motion'])} | | {_fmt(one['token_accuracy_motion'])} |",
            f"| world model, its codes decoded alone | {_fmt(one['psnr_model_codes'])} | | |",
            f"| copy the current frame | {_fmt(one['psnr_copy_current'])} | {_fmt(one['ssim_copy_current'])} | {_fmt(one['token_accuracy_copy_current'])} |",
            f"| copy the current frame's codes | {_fmt(one['psnr_copy_current_tokens'])} | | |",
            f"| world model, actions shuffled in time | {_fmt(one['psnr_shuffled_actions'])} | | {_fmt(one['token_accuracy_shuffled_actions'])} |",
            *([f"| world model without the head frame (as the online phases run it) | {_fmt(one['psnr_model_without_head'])} | | |"]
              if "psnr_model_without_head" in one else []),
            f"| tokenizer reconstruction (ceiling) | {_fmt(one['psnr_tokenizer'])} | | 1.000 |",
            "",
            f"Memory ablation: PSNR {_fmt(mem['psnr_memory_carried'])} with the memory carried, "
            f"{_fmt(mem['psnr_memory_zeroed'])} with it zeroed at every step ({mem['gain_db']:+.2f} dB).",
            "",
            "### Open loop (fed its own most likely codes and frames from a true context)",
            "",
            "| k | frames | PSNR model | PSNR copy frame t0 | PSNR actions shuffled | PSNR tokenizer | SSIM model |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in p["open_loop"]:
            lines.append(
                f"| {row['k']} | {row['frames']} | {_fmt(row['psnr_model'])} | {_fmt(row['psnr_copy_last'])} "
                f"| {_fmt(row['psnr_shuffled_actions'])} | {_fmt(row['psnr_tokenizer'])} | {_fmt(row['ssim_model'])} |"
            )
        lines += [
            "",
            "![horizon](horizon.png)",
            "",
            "![rollout](rollout.png)  top: truth from step 0; bottom: frame 0, then the open-loop prediction",
            "",
        ]
        if "memory_pixels" in p:
            lines += render_memory_pixels(p["memory_pixels"])
    if "exploration" in report:
        e = report["exploration"]
        lines += [
            "## Exploration in the live env",
            "",
            f"State coverage: distinct {e['voxel_size_m'] * 100:.0f} cm voxels the end effector visits in an episode of "
            f"{e['steps_per_episode']} steps (start included); every policy ran the same seeds and scenes.",
            "",
            "| policy | mean voxels | std | per episode | union voxels | object contact fraction | contact steps per episode "
            "| objects moved | reward/total | clutter motion | wm uncertainty | memory divergence | wm cross-entropy (nats) |",
            "|---|---:|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, r in e["policies"].items():
            lines.append(
                f"| {name} | {r['mean_voxels']:.1f} | {r['std_voxels']:.1f} | {', '.join(str(int(v)) for v in r['voxels_per_episode'])} "
                f"| {r['union_voxels']:.0f} | {r['object_contact_fraction']:.3f} | {', '.join(str(v) for v in r['contact_steps_per_episode'])} "
                f"| {r['objects_moved']:.2f} | {_fmt(r.get('reward/total'))} | {_fmt(r.get('reward/clutter_motion'))} "
                f"| {_fmt(r.get('reward/wm_uncertainty'))} "
                f"| {_fmt(r.get('reward/memory_divergence'))} | {_fmt(r.get('wm/prediction_ce'))} |"
            )
        ratio = e["contact_vs_random"]
        lines += [
            "",
            f"Object contact fraction: of the steps after an action, those in whose physics a robot link touched a clutter "
            f"object; objects moved: per episode, objects displaced more than {e['moved_m'] * 100:.0f} cm from their start "
            f"(of {e['policies']['random']['objects_on_table']:.1f} on the table on average); union voxels: distinct voxels "
            "over all of a policy's episodes.",
            "",
            f"Explorer (sampled) / random coverage: **{e['explorer_vs_random']:.2f}x**; object contact fraction: "
            + (f"**{ratio:.2f}x**" if ratio is not None else "random never touched the clutter"),
            "",
            "![coverage](coverage.png)",
            "",
        ]
    return "\n".join(lines)
