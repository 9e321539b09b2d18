"""`f1 evaluate`: how well a world model predicts, and how far an explorer explores.

    f1 evaluate --checkpoint CKPT [--data STORE] [--episodes N] [--output-dir OUT]

1. Prediction (needs --data, a store of held-out episodes: its last N episodes
   are used). The checkpoint's world model (a student's: its teacher's) replays
   each episode with teacher forcing, the memory carried from zeros, and
   predicts every next wrist frame; its most likely token per grid cell is decoded.
   - token accuracy: predicted tokens equal to the tokenizer's tokens of the true next frame
   - PSNR of the decoded prediction vs the true next frame (both at the tokenizer's S x S)
   - the ceiling: PSNR of the tokenizer's own reconstruction of the true next frame
   - the floor: PSNR of "the next frame equals this one" (copy the current frame)
   PSNR = 10 log10(1 / MSE), pixels in [0, 1], averaged over frames.
2. Exploration (student and adversarial checkpoints). N live episodes, each on
   its own seed and scene, run by the explorer (actions sampled, as in training,
   and its mean action), by the random policy and by the OU policy of `f1 collect`,
   every policy on the same seeds. State coverage = distinct 5 cm voxels the end
   effector visits in an episode (f1.train.online.coverage); also each policy's reward terms.
   The env is built as the checkpoint's run had it (its config's environment section);
   --steps-per-episode sets the episode length.

Writes OUT/report.md, OUT/report.json, OUT/prediction.png, OUT/coverage.png.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from f1.shared.config import F1Config, config_from_dict
from f1.shared.errors import UserError
from f1.train.online.coverage import VOXEL_SIZE_M, coverage_curve
from f1.train.online.models import EXPLORER_PHASES, checkpoint_phase, read_model_file

EVAL_STREAM = 4  # episode seeds of evaluation rollouts
PREDICTION_COLUMNS = 8  # steps shown in prediction.png
PNG_MIN_TILE = 96  # pixels a frame takes in prediction.png at least
BASELINES = ("random", "ou")


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame PSNR (dB) of float images in [0, 1]: (N, ...) x 2 -> (N,)."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(1)
    return 10 * np.log10(1.0 / np.maximum(mse, 1e-10))


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
    store = _check_store(Path(data)) if data is not None else None

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
        report["prediction"] = evaluate_prediction(bundle, store, episodes, output_dir)
    if has_explorer:
        run_cfg = config_from_dict(model_file["model_config"]["config"])
        run_cfg.training.steps_per_episode = cfg.training.steps_per_episode
        run_cfg.training.seed = cfg.training.seed
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


def evaluate_prediction(bundle: Any, store: Any, episodes: int, output_dir: Path) -> dict[str, Any]:
    import torch

    from f1.train.offline.teacher_samples import predict_episode, to_uint8

    cfg, tokenizer = bundle.config, bundle.tokenizer
    # The teacher phase may feed the head frame; the adversarial phase trains wrist-only.
    use_head = bundle.phase == "teacher" and cfg.teacher.use_head_camera and "head" in store.spec.cameras
    keys = ("wrist_rgb", "action", "state") + (("head_rgb",) if use_head else ())
    held_out = [e for e in store.episodes if e.length >= 2][-episodes:]
    rows: list[dict[str, Any]] = []
    figure = None
    for info in held_out:
        arrays = store.read_episode(info, keys=keys)
        predicted, accuracy = predict_episode(
            bundle.world_model, tokenizer, bundle.normalizers, arrays, cfg.training.n_obs_img_steps, cfg.training.obs_img_stride, use_head
        )  # (N-1,S,S,3) uint8
        with torch.no_grad():
            wrist = torch.from_numpy(arrays["wrist_rgb"]).to(next(tokenizer.parameters()).device)
            frames = tokenizer.preprocess(wrist)  # (N,3,S,S) in [0,1]
            recon = torch.cat([tokenizer.decode(tokenizer.encode(wrist[i : i + 64])) for i in range(1, len(wrist), 64)])
        truth = frames[1:].permute(0, 2, 3, 1).cpu().numpy()  # (N-1,S,S,3)
        current = frames[:-1].permute(0, 2, 3, 1).cpu().numpy()
        recon_np = recon.permute(0, 2, 3, 1).cpu().numpy()
        rows.append({
            "episode_id": info.episode_id,
            "steps": len(truth),
            "token_accuracy": accuracy,
            "psnr_prediction": float(psnr(predicted / 255.0, truth).mean()),
            "psnr_tokenizer": float(psnr(recon_np, truth).mean()),
            "psnr_copy_current": float(psnr(current, truth).mean()),
        })  # fmt: skip
        if figure is None:
            figure = (to_uint8_np(truth), to_uint8(recon), predicted)
    weights = np.array([r["steps"] for r in rows], float)
    summary = {key: float(np.average([r[key] for r in rows], weights=weights)) for key in rows[0] if key not in ("episode_id", "steps")}
    write_prediction_png(output_dir / "prediction.png", *figure)
    return {"episodes": rows, "mean": summary, "used_head_camera": use_head}


def to_uint8_np(images: np.ndarray) -> np.ndarray:
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


def write_prediction_png(path: Path, truth: np.ndarray, recon: np.ndarray, predicted: np.ndarray) -> Path:
    """Rows: true next frames, the tokenizer's reconstruction of them, the world model's prediction; up to 8 steps."""
    from PIL import Image

    from f1.train.run_outputs import side_by_side

    picks = np.unique(np.linspace(0, len(truth) - 1, min(PREDICTION_COLUMNS, len(truth))).round().astype(int))
    rows = [side_by_side([images[i] for i in picks]) for images in (truth, recon, predicted)]
    gap = np.full((4, rows[0].shape[1], 3), 255, np.uint8)
    image = Image.fromarray(np.concatenate([rows[0], gap, rows[1], gap, rows[2]]))
    scale = max(1, PNG_MIN_TILE // truth.shape[1])  # tiny tokenizer sizes get blown up (nearest) to stay readable
    image.resize((image.width * scale, image.height * scale), Image.NEAREST).save(path)
    return path


# --------------------------------------------------------------------------- 2. exploration


def evaluate_exploration(cfg: F1Config, bundle: Any, explorer: Any, episodes: int, device: Any, output_dir: Path) -> dict[str, Any]:
    import torch

    from f1.train.online.common import render_device_for
    from f1.train.online.rewards import StudentReward
    from f1.train.online.rollout import ExplorerPolicy, ScriptedPolicy, WorldModelStepper, collect_rollout, make_online_env, plan_round

    t = cfg.training
    stepper = WorldModelStepper(bundle.world_model, bundle.tokenizer, bundle.normalizers, t.n_obs_img_steps, t.obs_img_stride)
    reward = StudentReward(cfg.student.memory_divergence_weight, cfg.student.wm_uncertainty_weight)
    reward_fn = lambda before, after, logits, next_tokens: reward(before, after, logits)  # noqa: E731
    policies = {
        "explorer (sampled)": ExplorerPolicy(explorer),
        "explorer (mean)": ExplorerPolicy(explorer, deterministic=True),
        **{name: ScriptedPolicy(name, t.action_dim, 1, device) for name in BASELINES},
    }
    venv = make_online_env(cfg, 1, record=False, render_device=render_device_for(device))
    curves: dict[str, list[np.ndarray]] = {name: [] for name in policies}
    terms: dict[str, list[dict[str, float]]] = {name: [] for name in policies}
    try:
        for episode in range(episodes):
            # scene_reset_interval 1: every episode its own scene; every policy the same seed and scene
            (slot,) = plan_round(t.seed, EVAL_STREAM, episode, 0, 1, 1, "evaluate")
            for name, policy in policies.items():
                buf = collect_rollout(venv, [slot], policy, stepper, reward_fn, num_steps=t.steps_per_episode, device=device)
                curves[name].append(coverage_curve(buf.ee_pos[:, 0]))
                terms[name].append({
                    **{key: float(value.mean()) for key, value in buf.terms.items()},
                    "wm/prediction_ce": float(buf.prediction_ce.mean()),
                })  # fmt: skip
    finally:
        venv.close()
    result: dict[str, Any] = {"voxel_size_m": VOXEL_SIZE_M, "steps_per_episode": t.steps_per_episode, "policies": {}}
    for name in policies:
        final = np.array([c[-1] for c in curves[name]], float)
        result["policies"][name] = {
            "voxels_per_episode": final.tolist(),
            "mean_voxels": float(final.mean()),
            "std_voxels": float(final.std()),
            **{key: float(np.mean([row[key] for row in terms[name]])) for key in terms[name][0]},
        }
    explorer_mean = result["policies"]["explorer (sampled)"]["mean_voxels"]
    result["explorer_vs_random"] = explorer_mean / max(result["policies"]["random"]["mean_voxels"], 1e-9)
    write_coverage_png(output_dir / "coverage.png", curves)
    return result


def write_coverage_png(path: Path, curves: dict[str, list[np.ndarray]]) -> Path:
    """Distinct voxels visited vs step: each policy's mean over episodes, shaded between its min and max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for name, runs in curves.items():
        stacked = np.stack(runs).astype(float)  # (episodes, T+1)
        steps = np.arange(stacked.shape[1])
        ax.plot(steps, stacked.mean(0), label=name)
        ax.fill_between(steps, stacked.min(0), stacked.max(0), alpha=0.15)
    ax.set_xlabel("step")
    ax.set_ylabel(f"distinct {VOXEL_SIZE_M * 100:.0f} cm voxels visited")
    ax.set_title("end-effector state coverage (same seeds and scenes)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- the report


def _fmt(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


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
        lines += [
            "## Next-frame prediction on held-out episodes",
            "",
            "Teacher forcing, memory carried from zeros; PSNR in dB at the tokenizer's resolution. "
            "The tokenizer's reconstruction is the ceiling; copying the current frame is the floor to beat."
            + (" The head camera was fed." if p["used_head_camera"] else ""),
            "",
            "| episode | steps | token accuracy | PSNR prediction | PSNR tokenizer (ceiling) | PSNR copy current |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in p["episodes"] + [{"episode_id": "**mean**", "steps": sum(r["steps"] for r in p["episodes"]), **p["mean"]}]:
            lines.append(
                f"| {r['episode_id']} | {r['steps']} | {_fmt(r['token_accuracy'])} | {_fmt(r['psnr_prediction'])} "
                f"| {_fmt(r['psnr_tokenizer'])} | {_fmt(r['psnr_copy_current'])} |"
            )
        lines += ["", "![prediction](prediction.png)  rows: true next frame, tokenizer reconstruction, prediction", ""]
    if "exploration" in report:
        e = report["exploration"]
        lines += [
            "## Exploration in the live env",
            "",
            f"State coverage: distinct {e['voxel_size_m'] * 100:.0f} cm voxels the end effector visits in an episode of "
            f"{e['steps_per_episode']} steps (start included); every policy ran the same seeds and scenes.",
            "",
            "| policy | mean voxels | std | per episode | reward/total | wm uncertainty | memory divergence | wm cross-entropy (nats) |",
            "|---|---:|---:|---|---:|---:|---:|---:|",
        ]
        for name, r in e["policies"].items():
            lines.append(
                f"| {name} | {r['mean_voxels']:.1f} | {r['std_voxels']:.1f} | {', '.join(str(int(v)) for v in r['voxels_per_episode'])} "
                f"| {_fmt(r.get('reward/total'))} | {_fmt(r.get('reward/wm_uncertainty'))} "
                f"| {_fmt(r.get('reward/memory_divergence'))} | {_fmt(r.get('wm/prediction_ce'))} |"
            )
        lines += ["", f"Explorer (sampled) / random coverage: **{e['explorer_vs_random']:.2f}x**", "", "![coverage](coverage.png)", ""]
    return "\n".join(lines)
