"""`f1 train adversarial`: the world model and the explorer trained in turn, the explorer seeking what the model predicts badly.

Top to bottom (DESIGN §5): check the inputs (teacher and student checkpoints,
resume, record store); start the ranks; load the teacher's world model (it
trains now) and frozen tokenizer, and the student's explorer (LoRA + heads
train, its base backbone stays the teacher's); roll out the random policy once
on fixed seeds: the reference data. Then per iteration:

    rollout    M live wrist-only envs, one episode each, the explorer acting; the world model
               steps alongside (memory from zeros at each start) and scores every frame the
               explorer led to: reward = adversarial.prediction_error_weight x its cross-entropy
    game log   adv/wm_loss_explorer_data: the world model's loss on this fresh rollout, before it
               trains on it; adv/wm_loss_random_data: its loss, now, on the random-policy rollout
               (never trained on). The explorer wins while the first stays above the second.
    world      adversarial.wm_updates_per_iteration TBPTT chunks of the fresh rollout
    model      (f1.train.online.rollout_wm, the teacher's rules), lr adversarial.wm_learning_rate
    explorer   GAE + PPO on the rollout's rewards (student.* PPO settings)

Both envs and models see the wrist camera only, so the world model trains
here without the head frame even if its teacher phase used one.
Checkpoints hold both parts: model.pt is the world model in the teacher's
layout (so `f1 train student` and `f1 evaluate` take it as a teacher), the
explorer is explorer.pt + peft_adapter/, its base ref the student's teacher.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Optional

from f1.shared.config import F1Config
from f1.shared.errors import UserError
from f1.shared.gpu import pin_from_local_rank
from f1.train.checkpoint import load_checkpoint, load_file, resolve_resume
from f1.train.launch import forces_cpu, planned_world_size, relaunch_if_needed
from f1.train.online.models import EXPLORER_PHASES, checkpoint_phase, read_model_file
from f1.train.online.record import check_record_store
from f1.train.online.common import Progress, check_online_resume, planned_iterations
from f1.train.online.student import check_teacher
from f1.train.offline.teacher_inputs import check_fresh_output_dir

PHASE = "adversarial"
EXPLORER_STREAM = 2  # episode seeds of the explorer's rollouts
RANDOM_STREAM = 3  # episode seeds of the random-policy reference rollout


def check_student(path: Optional[str], flag: str) -> Path:
    if not path:
        raise UserError(f"no student checkpoint given; pass {flag} CKPT (a checkpoint-<step> directory of `f1 train student`)")
    phase = checkpoint_phase(read_model_file(Path(path), flag))
    if phase not in EXPLORER_PHASES:
        raise UserError(f"{flag} {path} is a {phase} checkpoint without an explorer; pass a checkpoint of `f1 train student`")
    return Path(path)


def main(
    cfg: F1Config,
    record: Optional[Path] = None,
    resume: Optional[Path] = None,
    auto_resume: bool = False,
    gpus: Optional[int] = None,
    on_iteration: Optional[Callable[[dict[str, Any]], None]] = None,
) -> Progress:
    """Run the alternating game; returns where it stopped.

    `on_iteration(record)` (for tests) sees the models before the first iteration and after each one:
    {"iteration", "world_model", "tokenizer", "explorer", "buffer" (None before the first)}.
    """
    a, s, t = cfg.adversarial, cfg.student, cfg.training
    output_dir = Path(a.output_dir)

    # ---- inputs: every check before a rank starts or a file is written
    teacher_path = check_teacher(a.teacher_checkpoint, "--teacher_checkpoint")
    student_path = check_student(a.student_checkpoint, "--student_checkpoint")
    refs = {"teacher_path": str(teacher_path), "student_path": str(student_path)}
    resume_path = resolve_resume(output_dir, resume, auto_resume)
    check_fresh_output_dir(output_dir, resuming=resume_path is not None)
    checkpoint = load_checkpoint(resume_path) if resume_path is not None else None
    if checkpoint is not None:
        check_online_resume(checkpoint, PHASE, planned_world_size(gpus), s.envs, refs)
    if record is not None:
        check_record_store(record, cfg)

    relaunch_if_needed(gpus)  # exits here when this process only starts the ranks
    pin_from_local_rank()

    # ---- ranks, seeds, logging
    import psutil
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm import tqdm

    from f1.shared.logs import setup_logging
    from f1.train.checkpoint import capture_rng_state, gather_rank_states, restore_rng_state, save_checkpoint
    from f1.train.models.lora import save_adapter
    from f1.train.online.models import (
        EXPLORER_FILE, architecture_config, explorer_heads_state, freeze, load_explorer, load_explorer_parts, load_world_model,
    )  # fmt: skip
    from f1.train.online.record import RolloutRecorder, run_tag
    from f1.train.online.common import (
        explorer_update, limit_cpu_threads, mean_over_ranks, model_file_config, render_device_for, rollout_metrics,
        write_rollout_sample,
    )  # fmt: skip
    from f1.train.optim import make_optimizer
    from f1.train.online.ppo import ActionScorer
    from f1.train.online.rewards import AdversarialReward
    from f1.train.online.rollout import ExplorerPolicy, ScriptedPolicy, WorldModelStepper, collect_rollout, make_online_env, plan_round
    from f1.train.online.rollout_wm import num_chunks, train_world_model_on_rollout, world_model_loss_on
    from f1.train.run_outputs import MetricsLog
    from f1.train.offline.teacher_batch import ChunkModel

    use_cpu = gpus == 0 or forces_cpu() or not torch.cuda.is_available()
    accelerator = Accelerator(cpu=use_cpu)
    rank, world_size, is_main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    device = accelerator.device
    threads_before = limit_cpu_threads(device)
    if checkpoint is not None:
        check_online_resume(checkpoint, PHASE, world_size, s.envs, refs)
    log = setup_logging(cfg.logging, output_dir if is_main else None, PHASE)
    set_seed(t.seed)

    # ---- models: the world model (trains), the frozen tokenizer, the student's explorer, two optimizers
    teacher = load_world_model(teacher_path, "--teacher_checkpoint", device)
    world_model, tokenizer = teacher.world_model, freeze(teacher.tokenizer)
    arch_cfg = architecture_config(cfg, teacher.config)
    # the explorer first: its base backbone copies the teacher's weights, before the world model moves on
    explorer, base_path = load_explorer(student_path, "--student_checkpoint", arch_cfg, device, base=teacher)
    if checkpoint is not None:
        world_model.load_state_dict(checkpoint.model["model"])
        heads = load_file(checkpoint.path / EXPLORER_FILE)
        load_explorer_parts(explorer, heads, checkpoint.path)
    world_model.requires_grad_(True)
    wm_optimizer = make_optimizer(world_model, t, learning_rate=a.wm_learning_rate)
    explorer_optimizer = make_optimizer(explorer, t, learning_rate=s.learning_rate)
    progress = Progress()
    if checkpoint is not None:
        wm_optimizer.load_state_dict(checkpoint.training_state["wm_optimizer"])
        explorer_optimizer.load_state_dict(checkpoint.training_state["explorer_optimizer"])
        progress = Progress(**checkpoint.training_state["progress"])
    chunk_model, scorer, wm_optimizer, explorer_optimizer = accelerator.prepare(
        ChunkModel(world_model, tokenizer), ActionScorer(explorer), wm_optimizer, explorer_optimizer
    )
    log.info("adversarial: %d rank(s) on %s, %d env(s) each; teacher %s, student %s", world_size, device, s.envs, teacher_path, student_path)

    # ---- the live envs, the reference rollout, outputs
    history, stride = arch_cfg.training.n_obs_img_steps, arch_cfg.training.obs_img_stride
    venv = make_online_env(cfg, s.envs, record is not None, render_device_for(device))
    stepper = WorldModelStepper(world_model, tokenizer, teacher.normalizers, history, stride)
    reward = AdversarialReward(world_model.codes, a.prediction_error_weight)
    id_prefix = run_tag(PHASE, output_dir)
    if checkpoint is not None:
        random_ref = {k: v.to(device) for k, v in checkpoint.rank_state(rank)["random_rollout"].items()}
        restore_rng_state(checkpoint.rank_state(rank)["rng"])  # last: nothing above may draw after it
        log.info("resumed from %s at iteration %d", checkpoint.path, progress.iteration)
    else:
        world_model.eval()
        slots = plan_round(t.seed, RANDOM_STREAM, 0, rank * s.envs, s.envs, cfg.environment.scene_reset_interval, f"{id_prefix}-random")
        random_policy = ScriptedPolicy("random", t.action_dim, s.envs, device)
        ref = collect_rollout(venv, slots, random_policy, stepper, reward, num_steps=t.steps_per_episode, device=device)
        random_ref = {"tokens": ref.tokens, "frames": ref.frames, "applied": ref.applied, "states": ref.states}
        set_seed(t.seed + rank)  # ranks draw different action noise
    recorder = RolloutRecorder(record, cfg, PHASE, rank) if record is not None else None
    metrics_log = MetricsLog(output_dir, cfg.logging.tensorboard, resume_step=progress.iteration if checkpoint else None) if is_main else None
    model_config = model_file_config(
        arch_cfg, PHASE, teacher, teacher_path=str(teacher_path.resolve()), student_path=str(student_path.resolve()),
        explorer_base_path=str(base_path.resolve()),
    )  # fmt: skip
    total = planned_iterations(a.total_iterations, None, s.envs * world_size)
    chunks_per_rollout = num_chunks(t.steps_per_episode, t.bptt_length)
    if a.wm_updates_per_iteration < chunks_per_rollout:
        log.info(
            "world model: %d of a rollout's %d chunks per iteration; each iteration continues where the last stopped",
            a.wm_updates_per_iteration, chunks_per_rollout,
        )  # fmt: skip
    last_metrics: dict[str, Any] = {}

    def write_explorer(adapter_dir: Path) -> None:
        save_adapter(explorer, adapter_dir.parent)
        torch.save(explorer_heads_state(explorer), adapter_dir.parent / EXPLORER_FILE)

    def save() -> None:
        """Every rank gathers its RNG state and reference rollout; rank 0 writes checkpoint-<iteration>."""
        ranks = gather_rank_states({"rng": capture_rng_state(), "random_rollout": random_ref}, rank, world_size)
        if is_main:
            training_state = {
                "phase": PHASE,
                "wm_optimizer": wm_optimizer.state_dict(),
                "explorer_optimizer": explorer_optimizer.state_dict(),
                "step": progress.iteration,
                "progress": asdict(progress),
                "config": cfg.to_dict(),
                "world_size": world_size,
                "batch_size": s.envs,
                "ranks": ranks,
            }
            path = save_checkpoint(
                output_dir, progress.iteration, model_state=world_model.state_dict(), model_config=model_config,
                training_state=training_state, metrics=last_metrics, write_adapter=write_explorer,
            )  # fmt: skip
            log.info("saved %s", path)
        accelerator.wait_for_everyone()

    # ---- the loop
    process = psutil.Process()
    policy = ExplorerPolicy(explorer)
    bar = tqdm(total=total, initial=min(progress.iteration, total), disable=not is_main, desc=PHASE, unit="it", dynamic_ncols=True)
    def hook(buf: Any) -> None:
        if on_iteration is not None:
            on_iteration({"iteration": progress.iteration, "world_model": world_model, "tokenizer": tokenizer, "explorer": explorer, "buffer": buf})

    hook(None)
    try:
        while progress.iteration < total:
            # 1. the explorer plays against the current world model
            start = time.perf_counter()
            sample_now = is_main and ((progress.iteration + 1) % t.sample_every == 0 or progress.iteration + 1 == total)
            slots = plan_round(t.seed, EXPLORER_STREAM, progress.iteration, rank * s.envs, s.envs, cfg.environment.scene_reset_interval, id_prefix)
            world_model.eval()
            explorer.eval()
            buf = collect_rollout(
                venv, slots, policy, stepper, reward, num_steps=t.steps_per_episode, device=device,
                record=recorder is not None, keep_video=sample_now,
            )  # fmt: skip
            rollout_s = time.perf_counter() - start

            # 2. the score, both sides, with the world model as it played
            loss_random, accuracy_random = world_model_loss_on(
                chunk_model, world_model, random_ref, history, stride, teacher.normalizers
            )  # fmt: skip
            game = {
                "adv/wm_loss_explorer_data": float(buf.prediction_ce.mean()),
                "adv/wm_loss_random_data": loss_random,
                "adv/wm_token_accuracy_random_data": accuracy_random,
            }

            # 3. the world model learns from the explorer's fresh rollout
            start = time.perf_counter()
            wm_stats = train_world_model_on_rollout(
                chunk_model, world_model, wm_optimizer,
                {"tokens": buf.tokens, "frames": buf.frames, "applied": buf.applied, "states": buf.states},
                first_chunk=progress.iteration * a.wm_updates_per_iteration, updates=a.wm_updates_per_iteration,
                bptt_length=t.bptt_length, history=history, stride=stride, normalizers=teacher.normalizers,
                backward=accelerator.backward, clip_grad=lambda: accelerator.clip_grad_norm_(chunk_model.parameters(), t.grad_clip),
            )  # fmt: skip
            wm_s = time.perf_counter() - start

            # 4. the explorer learns from the rewards the world model's errors paid
            update, update_s = explorer_update(buf, scorer, explorer_optimizer, explorer, cfg, accelerator)

            progress.advance(s.envs * world_size, t.steps_per_episode)
            if recorder is not None:
                recorder.add(buf.episodes)
            bar.update(1)
            hook(buf)

            done = progress.iteration == total
            if progress.iteration % t.log_every == 0 or done:
                metrics = {
                    **rollout_metrics(buf),
                    **game,
                    **wm_stats,
                    **update,
                    "perf/rollout_s": rollout_s,
                    "perf/wm_update_s": wm_s,
                    "perf/update_s": update_s,
                    "perf/env_steps_per_s": t.steps_per_episode * s.envs / max(rollout_s, 1e-9),
                }
                metrics = mean_over_ranks(accelerator, metrics)
                metrics.update({
                    "perf/rss_mb": process.memory_info().rss / 2**20,
                    "train/iteration": progress.iteration,
                    "train/episodes": progress.episodes,
                })  # fmt: skip
                last_metrics = metrics
                if is_main:
                    metrics_log.write(progress.iteration, metrics)
                    bar.set_postfix(
                        wm_explorer=f"{metrics['adv/wm_loss_explorer_data']:.3f}", wm_random=f"{metrics['adv/wm_loss_random_data']:.3f}"
                    )
            if sample_now:
                write_rollout_sample(output_dir, progress.episodes - s.envs * world_size, buf, tokenizer, history, stride, cfg.environment.control_freq)
            if progress.iteration % t.save_every == 0 or done:
                save()
    finally:
        bar.close()
        venv.close()
        torch.set_num_threads(threads_before)  # this process may go on (tests, notebooks)
        if recorder is not None:
            recorder.close()
        if metrics_log is not None:
            metrics_log.close()
    log.info("adversarial stopped at iteration %d, %d episodes", progress.iteration, progress.episodes)
    accelerator.end_training()
    return progress
