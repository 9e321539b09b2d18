"""`f1 train student --data STORE`: the explorer learns in the frozen world model's imagination; no simulator runs.

Top to bottom (Dreamer / Plan2Explore's policy learning, f1's replay): check the inputs (teacher
checkpoint, store, resume); start the ranks; load the teacher's world model and tokenizer, frozen;
build the explorer as the online student does (LoRA on the world model's backbone + heads); open
the token store (built when absent, as the teacher does: its folder is shared with the teacher's);
then per iteration:

    replay     the next chunk of this rank's lanes (f1.datasets.replay.OrderedReplay: B lanes x L
               steps in order), the world model's memory carried along each lane, zeros at is_first,
               exactly as the teacher replays (the memory is a checkpointed lane state)
    ensemble   the chunk's real transitions join the store-keys ensemble's replay; it trains on them
               (f1.train.online.curiosity: the online student's ensemble on the store's keys)
    imagine    student.imagine_starts of the chunk's steps (with replacement when it has fewer; a chunk of lanes
               past their last episode reuses the last chunk's, so every rank takes as many PPO steps), each rolled
               student.imagine_horizon steps forward under the explorer's actions (f1.train.offline.imagination)
    reward     the ensemble's disagreement on each imagined (state, action), over the running spread of
               its return. A departure from the online student's default (the ensemble's error): an
               imagined step has no true outcome to score an error against (Plan2Explore pays disagreement)
    update     GAE on the imagined steps (the horizon truncates: bootstrapped from the value), then the
               online student's PPO epochs: the same explorer_update (f1.train.online.common)

Checkpoints have the student's layout (model.pt phase "student", the adapter in peft_adapter/), so
`f1 evaluate` and `f1 train adversarial` take them as they take an online student's; model_config
says `mode: imagination`, and training_state's phase ("student-imagination") keeps a resume in this
phase. Exact resume: the lanes' cursors and memories, the ensemble, the optimizer and every RNG.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from f1.datasets.s3 import store_path
from f1.shared.config import F1Config
from f1.shared.errors import UserError
from f1.shared.gpu import pin_from_local_rank
from f1.train.checkpoint import CheckpointError, load_checkpoint, resolve_resume
from f1.train.launch import forces_cpu, planned_world_size, relaunch_if_needed
from f1.train.offline.store_settings import adopt_store_settings
from f1.train.offline.teacher_inputs import check_fresh_output_dir, check_store, check_token_store
from f1.train.online.student import check_init_explorer, check_teacher, init_explorer_ref

PHASE = "student"  # model.pt's phase: loads wherever an online student's does
TRAINING_PHASE = "student-imagination"  # training_state's: a resume continues this phase, never the online one


@dataclass
class Progress:
    """Where the run is: saved in training_state.pt. (epoch, chunk) is the NEXT chunk to replay."""

    iteration: int = 0
    """Iterations done (a chunk, its imagined rollouts and the PPO update): the checkpoint step."""
    epoch: int = 0
    chunk: int = 0
    imagined_steps: int = 0
    """Imagined transitions, over all ranks."""


def check_resume(checkpoint: Any, world_size: int, batch_size: int, teacher_path: Path) -> None:
    """A resume must be of this phase, world size and lane count, from the same teacher."""
    state, path = checkpoint.training_state, checkpoint.path
    if state.get("phase") != TRAINING_PHASE:
        raise CheckpointError(
            f"--resume {path} is a {state.get('phase')} checkpoint, not an imagination student's; pass one of "
            "`f1 train student --data` (or drop --data to train online)"
        )
    if state["world_size"] != world_size:
        raise CheckpointError(f"checkpoint {path} was written by {state['world_size']} processes; resume with --gpus {state['world_size']}")
    if state["batch_size"] != batch_size:
        raise CheckpointError(f"checkpoint {path} replayed {state['batch_size']} lanes; resume with --set training.batch_size={state['batch_size']}")
    saved = Path(checkpoint.model["model_config"]["teacher_path"])
    if saved.resolve() != teacher_path.resolve():
        raise CheckpointError(f"checkpoint {path} was trained from teacher_path={saved}, not {teacher_path}; pass that one")


def check_world_model(bundle: Any) -> None:
    """Imagination rolls a window of the last h steps: it needs a stride-1 history of two steps or more (the
    ensemble's input holds the step before: with h = 1 the replay's window has none)."""
    t = bundle.config.training
    if t.obs_img_stride != 1:
        raise UserError(
            f"the teacher {bundle.path} has a history stride of {t.obs_img_stride}; imagination needs training.obs_img_stride=1 "
            "(train a teacher with it)"
        )
    if t.n_obs_img_steps < 2:
        raise UserError(
            f"the teacher {bundle.path} has a history of {t.n_obs_img_steps} frame; imagination needs training.n_obs_img_steps >= 2 "
            "(train a teacher with it)"
        )


def main(
    cfg: F1Config,
    data: Path,
    resume: Optional[Path] = None,
    auto_resume: bool = False,
    gpus: Optional[int] = None,
    on_iteration: Optional[Callable[[dict[str, Any]], None]] = None,
) -> Progress:
    """Train the explorer in imagination; returns where it stopped. `on_iteration(record)` (for tests) sees
    {"iteration", "imagined", "explorer", "losses"} after each iteration."""
    s, t = cfg.student, cfg.training
    output_dir = Path(s.output_dir)

    # ---- inputs: every check before a rank starts or a file is written
    data = store_path(data)
    teacher_path = check_teacher(s.teacher_path, "--teacher_path")
    adopt_store_settings(cfg, data)
    cfg.teacher.use_head_camera = False  # the explorer and its imagination are wrist-only, as online
    resume_path = resolve_resume(output_dir, resume, auto_resume)
    check_fresh_output_dir(output_dir, resuming=resume_path is not None)
    checkpoint = load_checkpoint(resume_path) if resume_path is not None else None
    if checkpoint is not None:
        check_resume(checkpoint, planned_world_size(gpus), t.batch_size, teacher_path)
    init_path = check_init_explorer(s.init_explorer, teacher_path) if checkpoint is None and s.init_explorer else None

    from f1.train.online.models import load_world_model

    teacher = load_world_model(teacher_path, "--teacher_path", "cpu")
    check_world_model(teacher)
    store = check_store(data, cfg)
    token_root = check_token_store(cfg, store, teacher.tokenizer)

    relaunch_if_needed(gpus)  # exits here when this process only starts the ranks
    pin_from_local_rank()

    # ---- ranks, seeds, logging
    import psutil
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm import tqdm

    from f1.datasets.replay import OrderedReplay
    from f1.shared.logs import setup_logging
    from f1.train.checkpoint import capture_rng_state, gather_rank_states, restore_rng_state, save_checkpoint
    from f1.train.models.lora import save_adapter
    from f1.train.offline.imagination import Starts, imagine, replay_starts, replay_transitions
    from f1.train.offline.imagination_samples import write_imagined_sample
    from f1.train.offline.teacher import rank_episodes
    from f1.train.offline.teacher_batch import cached_tokens, chunk_inputs
    from f1.train.offline.token_cache import TokenCache
    from f1.train.offline.token_store import TokenStore, store_cameras
    from f1.train.offline.token_store_writer import build as build_token_store
    from f1.train.online.common import explorer_update, mean_over_ranks, model_file_config
    from f1.train.online.curiosity import STORE_INPUT_DIM, STORE_TARGET_DIM, ProprioEnsemble
    from f1.train.online.models import (
        architecture_config, explorer_heads_state, freeze, load_explorer, load_explorer_parts, new_explorer,
    )  # fmt: skip
    from f1.train.online.ppo import ActionScorer
    from f1.train.optim import count_parameters, make_optimizer
    from f1.train.run_outputs import MetricsLog

    use_cpu = gpus == 0 or forces_cpu() or not torch.cuda.is_available()
    accelerator = Accelerator(cpu=use_cpu)
    rank, world_size, is_main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    device = accelerator.device
    # No limit_cpu_threads here (the online phases' one torch thread): no renderer shares the cores, and the
    # imagined batch is wide enough for intra-op threads (measured: 1.8x faster a step with 2 threads on 2 cores).
    log = setup_logging(cfg.logging, output_dir if is_main else None, PHASE)
    set_seed(t.seed)

    # ---- models: the frozen teacher, the explorer (LoRA + heads), the ensemble, optimizers
    world_model, tokenizer = freeze(teacher.world_model.to(device)), freeze(teacher.tokenizer.to(device))
    normalizers = teacher.normalizers  # the world model's own, never the store's
    arch_cfg = architecture_config(cfg, teacher.config)
    history = arch_cfg.training.n_obs_img_steps
    explorer = new_explorer(world_model, arch_cfg).to(device)
    if checkpoint is not None:
        load_explorer_parts(explorer, checkpoint.model["model"], checkpoint.path)
    elif init_path is not None:  # the explorer's weights, nothing of its run's state
        explorer, _ = load_explorer(init_path, "--init-explorer", arch_cfg, device, base=teacher)
    optimizer = make_optimizer(explorer, t, learning_rate=s.learning_rate)
    ensemble = ProprioEnsemble(s.ensemble_heads, s.ensemble_hidden, s.ensemble_replay, STORE_INPUT_DIM, STORE_TARGET_DIM).to(device)
    ensemble_optimizer = torch.optim.Adam(ensemble.net.parameters(), lr=s.ensemble_learning_rate)
    progress = Progress()
    memory = world_model.initial_memory(t.batch_size, device)  # (L_m,B,Hm) the lanes' memory
    pool = None  # the starts imagined from: the last chunk's that had a valid step
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint.training_state["optimizer"])
        progress = Progress(**checkpoint.training_state["progress"])
    scorer, optimizer = accelerator.prepare(ActionScorer(explorer), optimizer)

    if token_root is not None:  # every rank builds its share of what is missing (nothing after the teacher's run)
        build_token_store(store, tokenizer, token_root, rank, world_size, progress=is_main, desc="token store")
        accelerator.wait_for_everyone()
        cache = TokenStore(token_root, store, tokenizer, store_cameras(store))
    else:
        cache = TokenCache(store, tokenizer, ("wrist",))
    replay = OrderedReplay(
        store.episodes, store.read_steps, batch_size=t.batch_size, bptt_length=t.bptt_length, history=history, stride=1,
        rank=rank, world_size=world_size, seed=t.seed, keys=("state", "action", "is_first", "is_last"), prefetch=t.prefetch_chunks,
    )  # fmt: skip
    if checkpoint is not None:
        rank_state = checkpoint.rank_state(rank)
        ensemble.load_state_dict(rank_state["ensemble"])
        ensemble_optimizer.load_state_dict(rank_state["ensemble_optimizer"])
        memory = rank_state["memory"].to(device)
        if rank_state["starts"] is not None:
            pool = Starts(**{k: v.to(device) for k, v in rank_state["starts"].items()})
        replay.check_cursor(progress.epoch, progress.chunk, rank_state["lane_cursors"])
        restore_rng_state(rank_state["rng"])  # last: nothing above may draw after it
        log.info("resumed from %s at iteration %d (epoch %d, chunk %d)", checkpoint.path, progress.iteration, progress.epoch, progress.chunk)
    else:
        set_seed(t.seed + rank)  # ranks draw different actions
    params = count_parameters(explorer)
    log.info(
        "student in imagination: %d rank(s) on %s, store %s (%d episodes), teacher %s; horizon %d from %d starts an "
        "iteration; explorer trains %d of %d parameters (LoRA + heads)",
        world_size, device, data, len(store.episodes), teacher_path, s.imagine_horizon, s.imagine_starts,
        params["trainable"], params["total"],
    )  # fmt: skip

    metrics_log = MetricsLog(output_dir, cfg.logging.tensorboard, resume_step=progress.iteration if checkpoint else None) if is_main else None
    refs = init_explorer_ref(init_path, checkpoint)
    model_config = model_file_config(arch_cfg, PHASE, teacher, teacher_path=str(teacher_path.resolve()), mode="imagination", data=str(data), **refs)
    action_scale = cfg.environment.action_scale
    last_metrics: dict[str, Any] = {}

    def save() -> None:
        """Every rank gathers its lanes, ensemble and RNG state; rank 0 writes checkpoint-<iteration>."""
        local = {
            "rng": capture_rng_state(),
            "memory": memory,
            "lane_cursors": replay.cursor(progress.epoch, progress.chunk),
            "ensemble": ensemble.state_dict(),
            "ensemble_optimizer": ensemble_optimizer.state_dict(),
            "starts": pool.state_dict() if pool is not None else None,
        }
        ranks = gather_rank_states(local, rank, world_size)
        if is_main:
            training_state = {
                "phase": TRAINING_PHASE,
                "optimizer": optimizer.state_dict(),
                "step": progress.iteration,
                "progress": asdict(progress),
                "config": cfg.to_dict(),
                "world_size": world_size,
                "batch_size": t.batch_size,
                "ranks": ranks,
                "store_snapshot": store.snapshot_id,
            }
            path = save_checkpoint(
                output_dir, progress.iteration, model_state=explorer_heads_state(explorer), model_config=model_config,
                training_state=training_state, metrics=last_metrics, write_adapter=lambda d: save_adapter(explorer, d.parent),
            )  # fmt: skip
            log.info("saved %s", path)
        accelerator.wait_for_everyone()

    # ---- the loop
    process = psutil.Process()
    total = s.total_iterations
    bar = tqdm(total=total, initial=min(progress.iteration, total), disable=not is_main, desc="student (imagination)", unit="it", dynamic_ncols=True)
    chunks = None
    try:
        while progress.iteration < total:
            start = time.perf_counter()
            if chunks is None:
                cache.warm(rank_episodes(replay, progress.epoch), progress=is_main, desc=f"tokens, epoch {progress.epoch}")
                chunks = replay.iter_chunks(progress.epoch, progress.chunk)
            chunk = next(chunks)
            assert chunk["chunk_index"] == progress.chunk, ("replay out of step", chunk["chunk_index"], progress.chunk)
            tokens = cached_tokens(chunk, cache, history, 1, device, use_head=False)
            inputs, _, _ = chunk_inputs(chunk, tokens, normalizers, device)
            starts, memory = replay_starts(world_model, chunk, inputs, memory)  # memory: after the chunk
            if starts.num:  # a chunk of lanes past their last episode (an epoch's end) has none: keep the last pool
                pool = starts
            x, y = replay_transitions(chunk, starts, action_scale, device)
            ensemble.add(x, y)
            ensemble_loss = ensemble.fit(ensemble_optimizer, s.ensemble_updates, 256)
            replay_s = time.perf_counter() - start

            start = time.perf_counter()
            sample_now = is_main and ((progress.iteration + 1) % t.sample_every == 0 or progress.iteration + 1 == total)
            explorer.eval()
            imagined = imagine(
                pool.draw(s.imagine_starts), explorer, world_model, tokenizer, ensemble, normalizers, s.imagine_horizon, action_scale,
                keep_frames=sample_now,
            )  # fmt: skip
            imagined.rewards = ensemble.normalise(imagined.disagreement, s.gamma)  # (H,N)
            imagine_s = time.perf_counter() - start

            update, update_s = explorer_update(imagined, scorer, optimizer, explorer, cfg, accelerator)  # GAE, then PPO

            steps = imagined.actions.shape[0] * imagined.actions.shape[1]
            progress.iteration += 1
            progress.imagined_steps += steps * world_size
            progress.chunk += 1
            if progress.chunk == replay.num_chunks(progress.epoch):  # the epoch's last chunk: the next epoch's lanes
                chunks.close()
                chunks = None
                progress.epoch, progress.chunk = progress.epoch + 1, 0
            bar.update(1)
            if on_iteration is not None:
                on_iteration({"iteration": progress.iteration, "imagined": imagined, "explorer": explorer, "rewards": imagined.rewards})

            done = progress.iteration == total
            if progress.iteration % t.log_every == 0 or done:
                seconds = replay_s + imagine_s + update_s
                metrics = {
                    **update,
                    "reward/ensemble_disagreement": float(imagined.disagreement.mean()),
                    "reward/total": float(imagined.rewards.mean()),
                    "policy/episode_return": float(imagined.rewards.sum(0).mean()),
                    "curiosity/loss": ensemble_loss,
                    "curiosity/return_std": float(ensemble.return_moments.std[0]),
                    "perf/replay_s": replay_s,
                    "perf/imagine_s": imagine_s,
                    "perf/update_s": update_s,
                    "perf/imagined_steps_per_s": steps / max(seconds, 1e-9),
                }
                metrics = mean_over_ranks(accelerator, metrics)
                metrics.update({
                    "loss": metrics["policy/loss"],
                    "perf/rss_mb": process.memory_info().rss / 2**20,
                    "train/iteration": progress.iteration,
                    "train/epoch": progress.epoch,
                    "train/imagined_steps": progress.imagined_steps,
                })  # fmt: skip
                last_metrics = metrics
                if is_main:
                    metrics_log.write(progress.iteration, metrics)
                    bar.set_postfix(reward=f"{metrics['reward/total']:.3f}", kl=f"{metrics['policy/approx_kl']:.4f}")
            if sample_now:
                path = write_imagined_sample(output_dir, progress.iteration, imagined)
                log.info("iteration %d: imagined rollout %s", progress.iteration, path.name)
            if progress.iteration % t.save_every == 0 or done:
                save()
    finally:
        bar.close()
        if chunks is not None:
            chunks.close()
        if metrics_log is not None:
            metrics_log.close()
        store.close()
    log.info("student (imagination) stopped at iteration %d, %d imagined steps", progress.iteration, progress.imagined_steps)
    accelerator.end_training()
    return progress
