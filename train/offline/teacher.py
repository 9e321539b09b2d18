"""`f1 train teacher`: the world model + GRU memory, trained by truncated BPTT on a store replayed in order.

Top to bottom (DESIGN §4, §7): check the inputs; start the ranks (Accelerate);
load the frozen tokenizer, the normalizer, the world model, optimizer and
scheduler; open the token store (every frame's tokens, on disk, built by the
ranks when absent: token_store.py); replay this rank's lanes chunk by chunk:
gather each position's tokens and history, predict the next wrist frame's tokens with the
carried memory (zeros at the start, reset inside the model at is_first,
detached between chunks), masked cross-entropy, backward, clip, step. Log,
sample and checkpoint on the config's cadence; stop on max_steps,
num_episodes or the end of the epochs.

The LR schedule spans the planned epochs (every chunk of every epoch):
`--max-steps` and `--num-episodes` stop a run early without reshaping the
schedule, so a run stopped at k steps and resumed follows the same curve as
an uninterrupted one (exact resume).
"""

from __future__ import annotations

import json
import os
import time
from contextlib import closing
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from f1.datasets.s3 import store_path
from f1.shared.config import F1Config
from f1.shared.gpu import pin_from_local_rank
from f1.train.checkpoint import (
    check_resume_compatible,
    capture_rng_state,
    gather_rank_states,
    load_checkpoint,
    resolve_resume,
    restore_rng_state,
    save_checkpoint,
    state_digest,
)
from f1.train.launch import forces_cpu, planned_world_size, relaunch_if_needed
from f1.train.offline.teacher_inputs import (
    STORE_SNAPSHOT_ENV,
    check_fresh_output_dir,
    check_same_model,
    check_store,
    check_token_store,
    check_tokenizer,
    pinned_snapshot,
    store_normalizers,
)
from f1.train.offline.store_settings import adopt_store_settings
from f1.train.offline.teacher_tokenizer import choose_tokenizer

PHASE = "teacher"


@dataclass
class Progress:
    """Where the run is: saved in training_state.pt. (epoch, chunk) is the NEXT chunk to train on."""

    step: int = 0
    """Optimizer steps taken."""
    epoch: int = 0
    chunk: int = 0
    episodes: int = 0
    """Episodes replayed to their last step, over all ranks."""


class LogWindow:
    """Sums over the steps since the last log line."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.start = time.perf_counter()
        self.steps = 0
        self.loss = self.motion_l1 = self.accuracy = self.memory_norm = self.data_wait_s = self.step_s = 0.0

    def add(self, loss: float, motion_l1: float, accuracy: float, memory_norm: float, data_wait_s: float, step_s: float) -> None:
        self.steps += 1
        self.loss += loss
        self.motion_l1 += motion_l1
        self.accuracy += accuracy
        self.memory_norm += memory_norm
        self.data_wait_s += data_wait_s
        self.step_s += step_s


def main(
    cfg: F1Config,
    data: Path,
    resume: Optional[Path] = None,
    auto_resume: bool = False,
    gpus: Optional[int] = None,
    on_chunk: Optional[Callable[[dict[str, Any]], None]] = None,
) -> Progress:
    """Train the teacher; returns where it stopped. `on_chunk(record)` sees each chunk's memory (for tests)."""
    t = cfg.training
    output_dir = Path(cfg.teacher.output_dir)

    # ---- inputs: every check before a rank starts or a file is written
    data = store_path(data)  # a directory or s3://bucket/prefix
    adopt_store_settings(cfg, data)
    resume_path = resolve_resume(output_dir, resume, auto_resume)
    check_fresh_output_dir(output_dir, resuming=resume_path is not None)
    checkpoint = load_checkpoint(resume_path) if resume_path is not None else None
    store = check_store(data, cfg, pin=pinned_snapshot(checkpoint))
    os.environ[STORE_SNAPSHOT_ENV] = json.dumps(store.snapshot_id)  # the ranks started below read this snapshot
    choose_tokenizer(cfg, data, checkpoint)  # may train one first: after every cheap check
    tokenizer_dir, tokenizer = check_tokenizer(cfg)
    token_root = check_token_store(cfg, store, tokenizer)  # None: tokens in memory, or tokenised every chunk
    if checkpoint is not None:
        check_resume_compatible(checkpoint.path, checkpoint.training_state, planned_world_size(gpus), t.batch_size)
        check_same_model(checkpoint, cfg, tokenizer)

    relaunch_if_needed(gpus)  # exits here when this process only starts the ranks
    pin_from_local_rank()

    # ---- ranks, seeds, logging
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed
    from tqdm import tqdm

    from f1.datasets.replay import OrderedReplay, RandomWindows
    from f1.shared.logs import setup_logging
    from f1.train.optim import make_optimizer, make_scheduler
    from f1.train.run_outputs import MetricsLog
    from f1.train.offline.teacher_batch import ChunkModel, ahead_mask, cached_tokens, chunk_inputs, memory_norm, window_tokens
    from f1.train.offline.token_cache import TokenCache
    from f1.train.offline.token_store import TokenStore, store_cameras
    from f1.train.offline.token_store_writer import build as build_token_store
    from f1.train.offline.teacher_samples import write_episode_sample
    from f1.train.models.world_model import WorldModel

    use_cpu = gpus == 0 or forces_cpu() or not torch.cuda.is_available()
    # The schedule counts optimizer steps: Accelerate would otherwise step it once per process per step.
    # The model's only buffers are constants (rotary frequencies): no need for DDP to broadcast them every forward.
    accelerator = Accelerator(
        cpu=use_cpu, mixed_precision=t.mixed_precision, step_scheduler_with_optimizer=False,
        kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)],
    )  # fmt: skip
    rank, world_size, is_main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    device = accelerator.device
    if checkpoint is not None:
        check_resume_compatible(checkpoint.path, checkpoint.training_state, world_size, t.batch_size)
    # Every rank keeps a DEBUG file (logs/teacher-rank<r>-*.log when there are several); only rank 0 talks.
    logging_cfg = cfg.logging if is_main else replace(cfg.logging, console_level="WARNING")
    log = setup_logging(logging_cfg, output_dir, PHASE if world_size == 1 else f"{PHASE}-rank{rank}")
    log.info("teacher: %d rank(s) on %s, store %s (%d episodes), output %s", world_size, device, data, len(store.episodes), output_dir)
    set_seed(t.seed)
    # Adam's moments of parameters whose gradient stays zero (rows of codes never seen) decay geometrically
    # into denormal floats after ~800 steps, and CPU arithmetic on denormals is many times slower: flush them.
    torch.set_flush_denormal(True)

    # ---- models: the frozen tokenizer, the world model, optimizer, scheduler
    tokenizer = tokenizer.to(device).eval().requires_grad_(False)
    normalizers = store_normalizers(store)
    world_model = WorldModel(cfg, tokenizer.n_tokens, tokenizer.levels).to(device)
    chunk_model = ChunkModel(world_model, tokenizer, t.n_pred_img_steps)  # what DDP wraps: motion proposal + forward_chunk
    use_head = cfg.teacher.use_head_camera
    cameras = ("wrist", "head") if use_head else ("wrist",)
    # With the token cache the replay reads only vectors and markers; frames are read once, by the cache.
    keys = ("state", "action", "is_first", "is_last")
    if not cfg.teacher.cache_tokens:
        keys += tuple(f"{camera}_rgb" for camera in cameras)
    cache = None
    if token_root is not None:
        # Every rank writes its share of the shards not tokenised yet (none on a second run), then all map it.
        built = build_token_store(store, tokenizer, token_root, rank, world_size, progress=is_main, desc="token store")
        accelerator.wait_for_everyone()
        cache = TokenStore(token_root, store, tokenizer, store_cameras(store))
        assert not cache.missing_ids, ("token store incomplete after every rank built its share", token_root, cache.missing_ids[:5])
        log.info(
            "token store %s: %d episodes, this rank encoded %d (%d frames) in %.1f s",
            token_root, len(store.episodes), built.episodes, built.frames, built.seconds,
        )  # fmt: skip
    elif cfg.teacher.cache_tokens:
        cache = TokenCache(store, tokenizer, cameras)
    replay_cls = OrderedReplay if t.sequential_training else RandomWindows
    # Each rank builds its own replay (its own lanes); Accelerate never sees the data.
    replay = replay_cls(
        store.episodes, store.read_steps, batch_size=t.batch_size, bptt_length=t.bptt_length,
        history=t.n_obs_img_steps, stride=t.obs_img_stride, rank=rank, world_size=world_size,
        seed=t.seed, keys=keys, prefetch=t.prefetch_chunks,
    )  # fmt: skip
    planned_steps = sum(replay.num_chunks(epoch) for epoch in range(t.epochs))
    optimizer = make_optimizer(world_model, t)  # all of the world model trains (but the table ChunkModel froze)
    scheduler = make_scheduler(optimizer, t.warmup_steps, planned_steps)

    progress = Progress()
    memory = world_model.initial_memory(t.batch_size, device)  # (L_m,B,Hm)
    if checkpoint is not None:
        world_model.load_state_dict(checkpoint.model["model"])
        optimizer.load_state_dict(checkpoint.training_state["optimizer"])
        scheduler.load_state_dict(checkpoint.training_state["scheduler"])
        progress = Progress(**checkpoint.training_state["progress"])
        rank_state = checkpoint.rank_state(rank)
        memory = rank_state["memory"].to(device)
        if progress.epoch < t.epochs:
            replay.check_cursor(progress.epoch, progress.chunk, rank_state["lane_cursors"])
        log.info("resumed from %s at step %d (epoch %d, chunk %d)", checkpoint.path, progress.step, progress.epoch, progress.chunk)
    model, optimizer, scheduler = accelerator.prepare(chunk_model, optimizer, scheduler)
    if checkpoint is not None:
        restore_rng_state(checkpoint.rank_state(rank)["rng"])  # last: nothing above may draw after it

    # ---- outputs (rank 0)
    metrics_log = MetricsLog(output_dir, cfg.logging.tensorboard, resume_step=progress.step if checkpoint else None) if is_main else None
    sample_order = np.random.default_rng(t.seed).permutation(len(store.episodes))  # its own generator: no global draw
    model_config = {
        "phase": PHASE,
        "n_tokens": tokenizer.n_tokens,
        "levels": list(tokenizer.levels),
        "tokenizer_path": str(tokenizer_dir.resolve()),
        "normalizers": {k: asdict(v) for k, v in normalizers.items()},
        "config": cfg.to_dict(),
    }
    last_metrics: dict[str, Any] = {}

    def save() -> None:
        """Every rank gathers its state; rank 0 writes checkpoint-<step>."""
        running = progress.epoch < t.epochs
        local = {
            "rng": capture_rng_state(),
            "memory": memory,
            "lane_cursors": replay.cursor(progress.epoch, progress.chunk) if running else [],
            "replay_stats": replay.stats(),
            "weights_sha256": state_digest(world_model.state_dict()),
        }
        ranks = gather_rank_states(local, rank, world_size)
        if is_main:
            digests = [r["weights_sha256"] for r in ranks]
            assert len(set(digests)) == 1, ("data-parallel ranks hold different weights", progress.step, digests)
            training_state = {
                "phase": PHASE,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "step": progress.step,
                "epoch": progress.epoch,
                "chunk": progress.chunk,
                "progress": asdict(progress),
                "config": cfg.to_dict(),
                "world_size": world_size,
                "batch_size": t.batch_size,
                "ranks": ranks,
                "store_snapshot": store.snapshot_id,  # a resume reads these episodes, whatever was collected since
            }
            path = save_checkpoint(
                output_dir, progress.step, model_state=world_model.state_dict(), model_config=model_config,
                training_state=training_state, metrics=last_metrics,
            )  # fmt: skip
            log.info("saved %s", path)
        accelerator.wait_for_everyone()

    def sample() -> None:
        candidates = [i for i in sample_order if store.episodes[i].length >= 2]
        info = store.episodes[candidates[(progress.step // t.sample_every) % len(candidates)]]
        png, mp4, accuracy = write_episode_sample(
            output_dir, store, info, world_model, tokenizer, normalizers, t.n_obs_img_steps, t.obs_img_stride,
            use_head, fps=cfg.environment.control_freq,
        )  # fmt: skip
        log.info("step %d: sample %s, %s (episode token accuracy %.3f)", progress.step, png.name, mp4.name, accuracy)

    # ---- the loop
    import psutil

    process = psutil.Process()
    window = LogWindow()
    stop_reason = reached_stop(progress, t)  # a resumed run may already be done
    total = min(planned_steps, t.max_steps or planned_steps)
    bar = tqdm(total=total, initial=min(progress.step, total), disable=not is_main, desc="teacher", unit="step", dynamic_ncols=True)
    while stop_reason is None:
        epoch_chunks = replay.num_chunks(progress.epoch)
        if cache is not None:
            start = time.perf_counter()
            frames = cache.warm(rank_episodes(replay, progress.epoch), progress=is_main, desc=f"tokenising epoch {progress.epoch}")
            if frames:
                log.info(
                    "epoch %d: tokenised %d frames in %.1f s (token cache %.1f MB)",
                    progress.epoch, frames, time.perf_counter() - start, cache.nbytes / 2**20,
                )  # fmt: skip
        with closing(replay.iter_chunks(progress.epoch, progress.chunk)) as chunks:
            while stop_reason is None:
                wait_start = time.perf_counter()
                chunk = next(chunks, None)
                if chunk is None:
                    break
                assert chunk["chunk_index"] == progress.chunk, ("replay out of step", chunk["chunk_index"], progress.chunk)
                log.debug(
                    "step %d epoch %d chunk %d episodes %s", progress.step + 1, progress.epoch, progress.chunk,
                    sorted({store.episodes[e].episode_id for e in chunk["episode_index"][chunk["valid"]]}),
                )  # fmt: skip
                if cache is not None:
                    tokens = cached_tokens(chunk, cache, t.n_obs_img_steps, t.obs_img_stride, device, use_head)
                    data_wait_s = time.perf_counter() - wait_start  # the chunk and its tokens: what the step waited for
                else:
                    data_wait_s = time.perf_counter() - wait_start  # (tokenising the window is the step's own work)
                    tokens = window_tokens(chunk, tokenizer, device, use_head)
                inputs, targets, mask = chunk_inputs(chunk, tokens, normalizers, device)
                if "head" in inputs and drops_head(t.seed, progress.step, cfg.teacher.head_dropout):
                    del inputs["head"]  # the whole chunk without the head frame: the model also serves wrist-only phases
                memory_in = memory
                with accelerator.autocast():
                    prediction, memory, trace, warped, further = model(inputs, memory)  # (B,L,n,...), (L_m,B,Hm), (B,L,Hm), (B,L,3,S,S)
                code_loss, accuracy = world_model.loss(prediction, targets, mask)
                motion_l1 = world_model.motion_loss(warped, tokens.next_frame, mask)
                loss = code_loss + motion_l1  # disjoint parameters (the proposal's codes carry no gradient)
                for k, (prediction_k, warped_k) in enumerate(further, start=2):  # training.n_pred_img_steps > 1
                    valid = ahead_mask(mask, inputs["is_first"], k)
                    loss = loss + world_model.loss(prediction_k, targets[:, k - 1 :], valid)[0]
                    loss = loss + world_model.motion_loss(warped_k, tokens.next_frame[:, k - 1 :], valid)
                accelerator.backward(loss)
                accelerator.clip_grad_norm_(model.parameters(), t.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                memory = memory.detach()  # truncated BPTT: the next chunk starts from the values, not this graph

                finished = torch.tensor(int((chunk["is_last"] & chunk["valid"]).sum()), device=device)
                progress.episodes += int(accelerator.reduce(finished, "sum")) if world_size > 1 else int(finished)
                progress.step += 1
                progress.chunk += 1
                if progress.chunk == epoch_chunks:
                    progress.epoch, progress.chunk = progress.epoch + 1, 0
                if on_chunk is not None:
                    on_chunk({
                        "step": progress.step, "chunk": chunk, "loss": float(loss.detach()),
                        "memory_in": memory_in.detach().cpu(), "memory_trace": trace.detach().cpu(),
                        "memory_out": memory.cpu(),
                    })  # fmt: skip
                window.add(float(code_loss.detach()), float(motion_l1.detach()), float(accuracy), memory_norm(memory), data_wait_s, time.perf_counter() - wait_start)
                bar.update(1)

                stop_reason = reached_stop(progress, t)

                if progress.step % t.log_every == 0 or stop_reason:
                    last_metrics = log_window(accelerator, window, progress, scheduler, process, world_size)
                    if is_main:
                        metrics_log.write(progress.step, last_metrics)
                        bar.set_postfix(loss=f"{last_metrics['wm/loss']:.3f}", sps=f"{last_metrics['perf/steps_per_s']:.1f}")
                    window.reset()
                if is_main and (progress.step % t.sample_every == 0 or stop_reason):
                    sample()
                if progress.step % t.save_every == 0 or stop_reason:
                    save()
        assert stop_reason is not None or progress.chunk == 0, ("the replay ended before the epoch's last chunk", progress)
    bar.close()
    log.info("teacher stopped (%s) at step %d, epoch %d, %d episodes replayed", stop_reason, progress.step, progress.epoch, progress.episodes)
    if metrics_log is not None:
        metrics_log.close()
    store.close()
    accelerator.end_training()
    return progress


def reached_stop(progress: Progress, t) -> Optional[str]:
    """Why training stops now, or None. Episodes count when replayed to their last step (is_last):
    counting is_first would stop as the N-th episode begins."""
    if t.max_steps is not None and progress.step >= t.max_steps:
        return "max_steps"
    if t.num_episodes is not None and progress.episodes >= t.num_episodes:
        return "num_episodes"
    if progress.epoch >= t.epochs:
        return "epochs"
    return None


def log_window(accelerator, window: LogWindow, progress: Progress, scheduler, process, world_size: int) -> dict[str, float]:
    """The namespaced metrics of the steps since the last log line (loss and accuracy averaged over ranks)."""
    import torch

    from f1.train.offline.token_store import rss_anon_bytes

    n = max(window.steps, 1)
    loss_acc = torch.tensor([window.loss / n, window.accuracy / n, window.motion_l1 / n], device=accelerator.device)
    if world_size > 1:
        loss_acc = accelerator.reduce(loss_acc, "mean")
    elapsed = time.perf_counter() - window.start
    return {
        "wm/loss": float(loss_acc[0]),
        "wm/token_accuracy": float(loss_acc[1]),
        "wm/motion_l1": float(loss_acc[2]),
        "wm/memory_norm": window.memory_norm / n,
        "perf/data_wait_s": window.data_wait_s / n,
        "perf/data_wait_share": window.data_wait_s / max(window.step_s, 1e-9),
        "perf/step_s": window.step_s / n,
        "perf/steps_per_s": window.steps / max(elapsed, 1e-9),
        "perf/rss_mb": process.memory_info().rss / 2**20,
        "perf/rss_anon_mb": (rss_anon_bytes() or 0) / 2**20,  # the token store's mapped pages are file memory, not this
        "train/lr": float(scheduler.get_last_lr()[0]),
        "train/epoch": progress.epoch,
        "train/episodes": progress.episodes,
    }


def drops_head(seed: int, step: int, dropout: float) -> bool:
    """Whether the chunk of optimizer step `step` trains without the head frame: a draw of its own
    generator, keyed by (seed, step), so an exact resume draws the same and no global RNG moves."""
    return dropout > 0 and np.random.default_rng([seed, step]).random() < dropout


def rank_episodes(replay, epoch: int) -> list[int]:
    """The episodes this rank replays in `epoch` (its lanes, or the ones it samples windows from)."""
    if hasattr(replay, "lanes"):
        return [e for lane in replay.lanes(epoch) for e in lane]
    return replay.owned_episodes(epoch)
