"""`f1 train tokenizer`: train the FSQ tokenizer on a store's wrist frames.

    f1 train tokenizer --data STORE --output-dir OUT [--max-steps N]

Reads a pool of wrist frames (all of a small store; an even, random share of
every episode's frames when the pool would pass POOL_BYTES), resized once to
the tokenizer's S x S, and holds out whole scenes (whole episodes when the
store has one scene) for evaluation. Each step trains on a random batch from
the pool, its colours jittered (`tokenizer.colour_jitter`). At the end it writes:

```
OUT/tokenizer.pt  tokenizer_config.json   the tokenizer (FSQTokenizer.load(OUT))
OUT/reconstructions.png                   held-out originals (top row) vs reconstructions (bottom row)
OUT/metrics.json                          held-out psnr, saturation_ratio, colourful_mae, gradient_energy_ratio
                                          (f1.train.image_metrics), the mean-image baseline's PSNR, code usage
OUT/episode_metrics.jsonl  tensorboard/  logs/
```
The mean-image baseline predicts the training frames' mean image for every
frame: a tokenizer that does not clearly beat it has learnt nothing useful.
PSNR is 10 log10(1 / MSE) per frame, pixels in [0,1], at S x S, averaged over frames.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from f1.shared.config import F1Config
from f1.shared.errors import UserError
from f1.shared.logs import setup_logging
from f1.train.image_metrics import image_figures, saturation
from f1.train.image_metrics import psnr as image_psnr
from f1.train.optim import make_scheduler
from f1.train.run_outputs import MetricsLog, side_by_side
from f1.train.models.tokenizer import FSQTokenizer

WRIST_KEY = "wrist_rgb"
POOL_BYTES = 256 * 2**20  # frames kept in memory for training
HELDOUT_FRACTION = 0.1
MAX_HELDOUT_FRAMES = 512
RECON_COLUMNS = 8
EVAL_BATCH = 64


def psnr(mse: float) -> float:
    return float("inf") if mse <= 0 else 10.0 * math.log10(1.0 / mse)


def _split_episodes(episodes: list, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Seeded split (train, held-out) of episode positions; whole scenes are held out when there are several.

    Episodes of one scene share its table, textures and light, so a held-out episode of a
    training scene would flatter the tokenizer; one episode alone is split by frames later.
    """
    if len(episodes) < 2:
        return list(range(len(episodes))), []
    n_held = max(1, round(HELDOUT_FRACTION * len(episodes)))
    scenes = sorted({e.scene_id for e in episodes})
    if len(scenes) >= 2:
        held_scenes: set[int] = set()
        for scene in rng.permutation(scenes).tolist():
            held_scenes.add(scene)
            if sum(e.scene_id in held_scenes for e in episodes) >= n_held:
                break
        if len(held_scenes) < len(scenes):
            held = [i for i, e in enumerate(episodes) if e.scene_id in held_scenes]
            return [i for i in range(len(episodes)) if i not in set(held)], held
    order = rng.permutation(len(episodes)).tolist()
    return sorted(order[n_held:]), sorted(order[:n_held])


def colour_jitter(frames: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """uint8 (B,S,S,3) -> the same frames with their colour channels permuted and scaled, per frame.

    A store holds few scenes (one per environment.scene_reset_interval episodes), so few table,
    wall and light colours: without this the codes learn that palette and paint any new scene in it.
    """
    b = frames.shape[0]
    perm = torch.from_numpy(np.argsort(rng.random((b, 3)), axis=1))  # (B,3) a random channel order a frame
    gain = torch.from_numpy(rng.uniform(0.6, 1.4, (b, 1, 1, 3)).astype(np.float32))
    shuffled = torch.gather(frames, 3, perm.view(b, 1, 1, 3).expand_as(frames).to(frames.device))
    return (shuffled.float() * gain.to(frames.device)).round().clamp(0, 255).to(torch.uint8)


def _read_frames(store, episodes: list, quota: int, tokenizer: FSQTokenizer, rng: np.random.Generator, desc: str) -> np.ndarray:
    """Up to `quota` random wrist frames of each episode, resized to S x S: uint8 (N,S,S,3)."""
    frames = []
    for info in tqdm(episodes, desc=desc, unit="episode", leave=False):
        steps = np.sort(rng.choice(info.length, size=min(quota, info.length), replace=False))
        wrist = store.read_steps(info, 0, info.length, keys=[WRIST_KEY])[WRIST_KEY][steps]  # (q,H,W,3)
        resized = tokenizer.preprocess(torch.from_numpy(wrist))  # (q,3,S,S) in [0,1]
        frames.append((resized.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy())
    return np.concatenate(frames) if frames else np.zeros((0, tokenizer.image_size, tokenizer.image_size, 3), np.uint8)


def load_frame_pools(store, tokenizer: FSQTokenizer, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(train frames, held-out frames), uint8 (N,S,S,3) each, held-out from whole unseen episodes."""
    episodes = [e for e in store.episodes if e.length > 0]
    train_ids, held_ids = _split_episodes(episodes, rng)
    frame_bytes = tokenizer.image_size**2 * 3
    train_quota = max(1, POOL_BYTES // frame_bytes // max(1, len(train_ids)))
    held_quota = max(1, MAX_HELDOUT_FRAMES // max(1, len(held_ids)))
    train = _read_frames(store, [episodes[i] for i in train_ids], train_quota, tokenizer, rng, "reading train frames")
    held = _read_frames(store, [episodes[i] for i in held_ids], held_quota, tokenizer, rng, "reading held-out frames")
    if not held_ids:  # a single episode: hold out its last frames instead
        n_held = max(1, round(HELDOUT_FRACTION * len(train)))
        train, held = train[:-n_held], train[-n_held:]
    return train, held


@torch.no_grad()
def reconstruct(tokenizer: FSQTokenizer, frames: np.ndarray, device: torch.device) -> np.ndarray:
    """uint8 (N,S,S,3) -> encode -> decode -> float32 (N,S,S,3) in [0,1]."""
    out = []
    for i in range(0, len(frames), EVAL_BATCH):
        batch = torch.from_numpy(frames[i : i + EVAL_BATCH]).to(device)
        out.append(tokenizer.decode(tokenizer.encode(batch)).permute(0, 2, 3, 1).cpu().numpy())  # (b,S,S,3)
    return np.concatenate(out)


def evaluate(tokenizer: FSQTokenizer, train: np.ndarray, held: np.ndarray, device: torch.device) -> tuple[dict, np.ndarray]:
    """Held-out figures of the tokenizer (f1.train.image_metrics) and the mean-image baseline's PSNR; plus the reconstructions."""
    tokenizer.eval()
    truth = held.astype(np.float32) / 255.0  # (N,S,S,3)
    recon = reconstruct(tokenizer, held, device)
    mean_image = train.astype(np.float64).mean(0) / 255.0  # (S,S,3)
    tokens = tokenizer.encode(torch.from_numpy(held).to(device)).flatten()
    counts = torch.bincount(tokens, minlength=tokenizer.codebook_size).float()
    probs = counts / counts.sum()
    metrics = {
        **image_figures(recon, truth),
        "psnr_mean_image_baseline": image_psnr(np.broadcast_to(mean_image, truth.shape), truth),
        "heldout_perplexity": float(torch.exp(-(probs * torch.log(probs + 1e-10)).sum())),
        "heldout_code_usage": float((counts > 0).float().mean()),
    }
    metrics["psnr_gain_over_baseline_db"] = metrics["psnr"] - metrics["psnr_mean_image_baseline"]
    return metrics, recon


def write_reconstructions(path: Path, held: np.ndarray, recon: np.ndarray) -> Path:
    """Originals in the top row, their reconstructions below: the held-out frames with the most colourful
    pixels (the clutter objects), in time order, each tile blown up 2x pixel for pixel."""
    from PIL import Image

    colourful = (saturation(held.astype(np.float32) / 255.0) > 0.5).reshape(len(held), -1).mean(1)  # (N,)
    pick = np.sort(np.argsort(-colourful, kind="stable")[: min(RECON_COLUMNS, len(held))])
    blow_up = lambda frames: [f.repeat(2, 0).repeat(2, 1) for f in frames]  # noqa: E731
    top = side_by_side(blow_up(held[pick]))
    bottom = side_by_side(blow_up((recon[pick] * 255).round().clip(0, 255).astype(np.uint8)))
    gap = np.full((2, top.shape[1], 3), 255, np.uint8)
    Image.fromarray(np.concatenate([top, gap, bottom])).save(path)
    return path


def main(cfg: F1Config, data: Path) -> dict:
    """Train, save and evaluate the tokenizer; returns metrics.json's content."""
    from f1.datasets import open_store

    t_cfg = cfg.tokenizer
    out_dir = Path(t_cfg.output_dir)
    store = open_store(data)  # a StoreError (UserError) names a missing or broken store
    if WRIST_KEY not in store.spec.image_keys:
        raise UserError(f"store {data} has no {WRIST_KEY} frames (cameras {list(store.spec.cameras)}); collect with the wrist camera")
    if sum(e.length for e in store.episodes) < 2:
        raise UserError(f"store {data} holds fewer than 2 steps; collect more episodes with `f1 collect`")
    out_dir.mkdir(parents=True, exist_ok=True)
    log = setup_logging(cfg.logging, out_dir, "tokenizer")
    torch.manual_seed(cfg.training.seed)
    rng = np.random.default_rng(cfg.training.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    tokenizer = FSQTokenizer.from_config(cfg).to(device)
    train, held = load_frame_pools(store, tokenizer, rng)
    log.info(
        "tokenizer: %d train / %d held-out frames at %dx%d, %d tokens a frame, %d codes",
        len(train), len(held), tokenizer.image_size, tokenizer.image_size, tokenizer.n_tokens, tokenizer.codebook_size,
    )
    optimizer = torch.optim.Adam(tokenizer.parameters(), lr=t_cfg.learning_rate)
    scheduler = make_scheduler(optimizer, warmup=min(20, t_cfg.max_steps // 10), total=t_cfg.max_steps)
    metrics_log = MetricsLog(out_dir, tensorboard=cfg.logging.tensorboard)
    pool = torch.from_numpy(train)  # (N,S,S,3) uint8, stays on the CPU

    tokenizer.train()
    start = time.perf_counter()
    bar = tqdm(range(1, t_cfg.max_steps + 1), desc="tokenizer", unit="step", mininterval=0.5)
    for step in bar:
        batch = pool[torch.from_numpy(rng.integers(0, len(pool), t_cfg.batch_size))].to(device, non_blocking=True)
        if t_cfg.colour_jitter:
            batch = colour_jitter(batch, rng)
        out = tokenizer(batch)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
        scheduler.step()
        step_metrics = {
            "tok/loss": out["loss"].item(),
            "tok/recon_loss": out["recon_loss"].item(),
            "tok/l1_loss": out["l1_loss"].item(),
            "tok/gradient_loss": out["gradient_loss"].item(),
            "tok/spectrum_loss": out["spectrum_loss"].item(),
            "tok/ssim": out["ssim"].item(),
            "tok/psnr": psnr(out["recon_loss"].item()),
            "tok/perplexity": out["perplexity"].item(),
            "tok/code_usage": out["code_usage"].item(),
        }
        bar.set_postfix(loss=f"{step_metrics['tok/loss']:.4f}", psnr=f"{step_metrics['tok/psnr']:.1f}", ppl=f"{step_metrics['tok/perplexity']:.0f}")
        if step % cfg.training.log_every == 0 or step == t_cfg.max_steps:
            step_metrics["perf/steps_per_s"] = step / (time.perf_counter() - start)
            metrics_log.write(step, {"loss": step_metrics["tok/loss"], **step_metrics})
    bar.close()
    seconds = time.perf_counter() - start

    tokenizer.save(out_dir)
    metrics, recon = evaluate(tokenizer, train, held, device)
    write_reconstructions(out_dir / "reconstructions.png", held, recon)
    metrics.update(
        steps=t_cfg.max_steps,
        train_seconds=seconds,
        steps_per_s=t_cfg.max_steps / seconds,
        final_train_recon_loss=step_metrics["tok/recon_loss"],
        final_train_perplexity=step_metrics["tok/perplexity"],
        train_frames=len(train),
        heldout_frames=len(held),
        image_size=tokenizer.image_size,
        n_tokens=tokenizer.n_tokens,
        codebook_size=tokenizer.codebook_size,
        store=str(data),
    )
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    metrics_log.write(t_cfg.max_steps, {"loss": step_metrics["tok/loss"], "tok/heldout_psnr": metrics["psnr"],
                                        "tok/heldout_psnr_mean_image": metrics["psnr_mean_image_baseline"]})
    metrics_log.close()
    log.info(
        "tokenizer: held-out PSNR %.2f dB vs %.2f dB for the mean image (+%.2f dB); saved to %s",
        metrics["psnr"], metrics["psnr_mean_image_baseline"], metrics["psnr_gain_over_baseline_db"], out_dir,
    )
    return metrics
