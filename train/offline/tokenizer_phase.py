"""`f1 train tokenizer`: train the VQ tokenizer on a store's wrist frames.

    f1 train tokenizer --data STORE --output-dir OUT [--max-steps N]

Reads a pool of wrist frames (all of a small store; an even, random share of
every episode's frames when the pool would pass POOL_BYTES), resized once to
the tokenizer's S x S, and holds out whole episodes for evaluation. Each step
trains on a random batch from the pool. At the end it writes:

```
OUT/tokenizer.pt  tokenizer_config.json   the tokenizer (VQTokenizer.load(OUT))
OUT/reconstructions.png                   held-out originals (top row) vs reconstructions (bottom row)
OUT/metrics.json                          held-out PSNR of the tokenizer and of the mean-image baseline, ...
OUT/episode_metrics.jsonl  tensorboard/  logs/
```
The mean-image baseline predicts the training frames' mean image for every
frame: a tokenizer that does not clearly beat it has learnt nothing useful.
PSNR is 10 log10(1 / MSE) over all pixels in [0,1], at S x S.
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
from f1.train.optim import make_scheduler
from f1.train.run_outputs import MetricsLog, side_by_side
from f1.train.models.tokenizer import VQTokenizer

WRIST_KEY = "wrist_rgb"
POOL_BYTES = 256 * 2**20  # frames kept in memory for training
HELDOUT_FRACTION = 0.1
MAX_HELDOUT_FRAMES = 512
RECON_COLUMNS = 8
EVAL_BATCH = 64


def psnr(mse: float) -> float:
    return float("inf") if mse <= 0 else 10.0 * math.log10(1.0 / mse)


def _split_episodes(n_episodes: int, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Seeded split by episode (train, held-out); one episode alone is split by frames later."""
    order = rng.permutation(n_episodes).tolist()
    if n_episodes < 2:
        return order, []
    n_held = max(1, round(HELDOUT_FRACTION * n_episodes))
    return sorted(order[n_held:]), sorted(order[:n_held])


def _read_frames(store, episodes: list, quota: int, tokenizer: VQTokenizer, rng: np.random.Generator, desc: str) -> np.ndarray:
    """Up to `quota` random wrist frames of each episode, resized to S x S: uint8 (N,S,S,3)."""
    frames = []
    for info in tqdm(episodes, desc=desc, unit="episode", leave=False):
        steps = np.sort(rng.choice(info.length, size=min(quota, info.length), replace=False))
        wrist = store.read_steps(info, 0, info.length, keys=[WRIST_KEY])[WRIST_KEY][steps]  # (q,H,W,3)
        resized = tokenizer.preprocess(torch.from_numpy(wrist))  # (q,3,S,S) in [0,1]
        frames.append((resized.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy())
    return np.concatenate(frames) if frames else np.zeros((0, tokenizer.image_size, tokenizer.image_size, 3), np.uint8)


def load_frame_pools(store, tokenizer: VQTokenizer, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(train frames, held-out frames), uint8 (N,S,S,3) each, held-out from whole unseen episodes."""
    episodes = [e for e in store.episodes if e.length > 0]
    train_ids, held_ids = _split_episodes(len(episodes), rng)
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
def reconstruct(tokenizer: VQTokenizer, frames: np.ndarray, device: torch.device) -> np.ndarray:
    """uint8 (N,S,S,3) -> encode -> decode -> float32 (N,S,S,3) in [0,1]."""
    out = []
    for i in range(0, len(frames), EVAL_BATCH):
        batch = torch.from_numpy(frames[i : i + EVAL_BATCH]).to(device)
        out.append(tokenizer.decode(tokenizer.encode(batch)).permute(0, 2, 3, 1).cpu().numpy())  # (b,S,S,3)
    return np.concatenate(out)


def evaluate(tokenizer: VQTokenizer, train: np.ndarray, held: np.ndarray, device: torch.device) -> tuple[dict, np.ndarray]:
    """Held-out PSNR of the tokenizer and of the mean training image; plus the reconstructions."""
    tokenizer.eval()
    truth = held.astype(np.float32) / 255.0  # (N,S,S,3)
    recon = reconstruct(tokenizer, held, device)
    mean_image = train.astype(np.float64).mean(0) / 255.0  # (S,S,3)
    tokens = tokenizer.encode(torch.from_numpy(held).to(device)).flatten()
    counts = torch.bincount(tokens, minlength=tokenizer.codebook_size).float()
    probs = counts / counts.sum()
    metrics = {
        "psnr": psnr(float(np.mean((recon - truth) ** 2))),
        "psnr_mean_image_baseline": psnr(float(np.mean((mean_image[None] - truth) ** 2))),
        "heldout_perplexity": float(torch.exp(-(probs * torch.log(probs + 1e-10)).sum())),
        "heldout_code_usage": float((counts > 0).float().mean()),
    }
    metrics["psnr_gain_over_baseline_db"] = metrics["psnr"] - metrics["psnr_mean_image_baseline"]
    return metrics, recon


def write_reconstructions(path: Path, held: np.ndarray, recon: np.ndarray) -> Path:
    """Originals in the top row, their reconstructions below."""
    from PIL import Image

    pick = np.linspace(0, len(held) - 1, min(RECON_COLUMNS, len(held))).round().astype(int)
    top = side_by_side(list(held[pick]))
    bottom = side_by_side(list((recon[pick] * 255).round().clip(0, 255).astype(np.uint8)))
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

    tokenizer = VQTokenizer.from_config(cfg).to(device)
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
        out = tokenizer(batch)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
        scheduler.step()
        step_metrics = {
            "tok/loss": out["loss"].item(),
            "tok/recon_loss": out["recon_loss"].item(),
            "tok/vq_loss": out["vq_loss"].item(),
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
