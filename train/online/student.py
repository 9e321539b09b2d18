"""`f1 train student`: the explorer learns online, by PPO, to go where the frozen teacher world model is surprised.

Top to bottom (DESIGN §5, §7): check the inputs (teacher checkpoint, resume,
record store); start the ranks; load the teacher's world model and tokenizer,
frozen (eval, requires_grad off: their weights stay bit-identical); build the
explorer from the world model's backbone and embeddings with LoRA on the
backbone, so only the adapters and the explorer's heads train; then per
iteration:

    rollout   M live wrist-only envs, one whole episode each; the explorer acts on the
              current frame's tokens and the world model's memory; the world model steps
              alongside, carrying the memory (zeros at each episode's start)
    reward    student.memory_divergence_weight x memory divergence
              + student.wm_uncertainty_weight x world-model uncertainty
              (+ student.prediction_error_weight x prediction error + student.surprise_weight x surprise
              + student.unexplained_change_weight x unexplained change
              + student.clutter_motion_weight x clutter motion)             (f1.train.online.rewards)
              + student.ensemble_error_weight x ensemble error + student.ensemble_disagreement_weight
                x ensemble disagreement, over the running spread of their return  (f1.train.online.curiosity)
              A departure from DESIGN §5, which names the first two only: by default only the ensemble's
              error is paid (the others 0). The world-model terms, measured, lead the explorer to odd
              views instead of the clutter; the ensemble predicts the arm's next proprioceptive state,
              which contact perturbs, and reads nothing a real robot lacks (docs/online.md, "Rewards").
    curiosity the ensemble scores the rollout (before it trains on it), then learns from it
    update    GAE, then PPO epochs over shuffled minibatches (f1.train.online.ppo)

The world model's prediction (motion warp, proposal codes, a backbone pass: most of a rollout's
time on a CPU) runs only in rollouts where a paid term needs it or where every term is logged
(the logging and sampling iterations); elsewhere the world model only carries the memory the
explorer reads. With the default reward (the ensemble's error) that is 1 rollout in training.log_every.

Logging (`reward/...`, `policy/...`, `explore/...`, `perf/...`), videos and
checkpoints on the config's cadence, counted in iterations. The run lasts
`student.total_iterations` iterations, or, when `training.num_episodes` is set,
as many as it takes to roll out that many episodes (M x ranks per iteration).
With --gpus G each rank runs its own M envs, rendering and training on its own GPU.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Optional

from f1.shared.config import F1Config
from f1.shared.errors import UserError
from f1.shared.gpu import pin_from_local_rank
from f1.train.checkpoint import CheckpointError, load_checkpoint, resolve_resume
from f1.train.launch import forces_cpu, planned_world_size, relaunch_if_needed
from f1.train.online.models import WORLD_MODEL_PHASES, checkpoint_phase, read_model_file
from f1.train.online.record import check_record_store
from f1.train.online.common import Progress, check_online_resume, planned_iterations
from f1.train.offline.teacher_inputs import check_fresh_output_dir

PHASE = "student"
SEED_STREAM = 1  # episode seeds of student rollouts (f1.train.online.rollout.plan_round)


def check_teacher(path: Optional[str], flag: str) -> Path:
    """The teacher checkpoint directory, checked: complete, and holding a world model."""
    if not path:
        raise UserError(f"no teacher checkpoint given; pass {flag} CKPT (a checkpoint-<step> directory of `f1 train teacher`)")
    model_file = read_model_file(Path(path), flag)
    phase = checkpoint_phase(model_file)
    if phase not in WORLD_MODEL_PHASES:
        raise UserError(f"{flag} {path} is a {phase} checkpoint, not a teacher's; pass a checkpoint of `f1 train teacher`")
    return Path(path)


def check_init_explorer(path: str, teacher_path: Path) -> Path:
    """A student checkpoint (online or imagined) to start the explorer from: it must be built on this teacher."""
    from f1.train.online.models import EXPLORER_PHASES, explorer_base_path

    model_file = read_model_file(Path(path), "--init-explorer")
    phase = checkpoint_phase(model_file)
    if phase not in EXPLORER_PHASES:
        raise UserError(f"--init-explorer {path} is a {phase} checkpoint without an explorer; pass a checkpoint of `f1 train student`")
    base = explorer_base_path(Path(path), model_file)
    if base.resolve() != teacher_path.resolve():
        raise UserError(f"--init-explorer {path} was trained on teacher {base}, not {teacher_path}; pass --teacher_path {base}")
    return Path(path)


def init_explorer_ref(init_path: Optional[Path], checkpoint: Any) -> dict[str, str]:
    """model_config's record of the explorer a run started from: this run's, or, resumed, the checkpoint's."""
    if init_path is not None:
        return {"init_explorer": str(init_path.resolve())}
    saved = checkpoint.model["model_config"].get("init_explorer") if checkpoint is not None else None
    return {"init_explorer": saved} if saved else {}


def check_privileged_terms(cfg: F1Config) -> None:
    """A reward term that reads the simulator's object poses needs an env that exposes them."""
    if not cfg.environment.privileged_info and cfg.student.clutter_motion_weight != 0:
        raise UserError(
            "student.clutter_motion_weight pays for the simulator's object poses, which environment.privileged_info=false "
            "hides; set student.clutter_motion_weight=0 or environment.privileged_info=true"
        )


def main(
    cfg: F1Config,
    record: Optional[Path] = None,
    resume: Optional[Path] = None,
    auto_resume: bool = False,
    gpus: Optional[int] = None,
    on_iteration: Optional[Callable[[dict[str, Any]], None]] = None,
) -> Progress:
    """Train the explorer; returns where it stopped.

    `on_iteration(record)` (for tests) sees the models before the first iteration and after each one:
    {"iteration", "world_model", "tokenizer", "explorer", "buffer" (None before the first)}.
    """
    s, t = cfg.student, cfg.training
    output_dir = Path(s.output_dir)

    # ---- inputs: every check before a rank starts or a file is written
    check_privileged_terms(cfg)
    teacher_path = check_teacher(s.teacher_path, "--teacher_path")
    resume_path = resolve_resume(output_dir, resume, auto_resume)
    check_fresh_output_dir(output_dir, resuming=resume_path is not None)
    checkpoint = load_checkpoint(resume_path) if resume_path is not None else None
    if checkpoint is not None:
        check_online_resume(checkpoint, PHASE, planned_world_size(gpus), s.envs, {"teacher_path": str(teacher_path)})
    if record is not None:
        check_record_store(record, cfg)
    init_path = check_init_explorer(s.init_explorer, teacher_path) if checkpoint is None and s.init_explorer else None

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
        architecture_config, explorer_heads_state, freeze, load_explorer, load_explorer_parts, load_world_model, new_explorer,
    )  # fmt: skip
    from f1.train.online.record import RolloutRecorder, run_tag
    from f1.train.online.common import (
        explorer_update, limit_cpu_threads, mean_over_ranks, model_file_config, render_device_for, rollout_metrics,
        write_rollout_sample,
    )  # fmt: skip
    from f1.train.optim import count_parameters, make_optimizer
    from f1.train.online.ppo import ActionScorer
    from f1.train.online.curiosity import Curiosity
    from f1.train.online.rewards import StudentReward
    from f1.train.online.rollout import ExplorerPolicy, WorldModelStepper, collect_rollout, make_online_env, plan_round
    from f1.train.run_outputs import MetricsLog

    use_cpu = gpus == 0 or forces_cpu() or not torch.cuda.is_available()
    accelerator = Accelerator(cpu=use_cpu)
    rank, world_size, is_main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    device = accelerator.device
    threads_before = limit_cpu_threads(device)
    if checkpoint is not None:
        check_online_resume(checkpoint, PHASE, world_size, s.envs, {"teacher_path": str(teacher_path)})
    log = setup_logging(cfg.logging, output_dir if is_main else None, PHASE)
    set_seed(t.seed)

    # ---- models: the frozen teacher, the explorer (LoRA + heads), its optimizer
    teacher = load_world_model(teacher_path, "--teacher_path", device)
    world_model, tokenizer = freeze(teacher.world_model), freeze(teacher.tokenizer)
    arch_cfg = architecture_config(cfg, teacher.config)
    explorer = new_explorer(world_model, arch_cfg).to(device)
    if checkpoint is not None:
        load_explorer_parts(explorer, checkpoint.model["model"], checkpoint.path)
    elif init_path is not None:  # fine-tuning: the explorer's weights, nothing of its run's state
        explorer, _ = load_explorer(init_path, "--init-explorer", arch_cfg, device, base=teacher)
        log.info("explorer from %s", init_path)
    optimizer = make_optimizer(explorer, t, learning_rate=s.learning_rate)
    curiosity = Curiosity.from_config(cfg, device)  # each rank's own, trained on its own rollouts
    progress = Progress()
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint.training_state["optimizer"])
        progress = Progress(**checkpoint.training_state["progress"])
    scorer, optimizer = accelerator.prepare(ActionScorer(explorer), optimizer)
    if checkpoint is not None:
        rank_state = checkpoint.rank_state(rank)
        if "curiosity" not in rank_state:
            raise CheckpointError(f"checkpoint {checkpoint.path} has no curiosity ensemble (an older f1's); start a new output dir")
        curiosity.load_state_dict(rank_state["curiosity"])
        restore_rng_state(rank_state["rng"])  # last: nothing above may draw after it
        log.info("resumed from %s at iteration %d (%d episodes)", checkpoint.path, progress.iteration, progress.episodes)
    else:
        set_seed(t.seed + rank)  # ranks draw different action noise
    params = count_parameters(explorer)
    log.info(
        "student: %d rank(s) on %s, %d env(s) each, teacher %s; explorer trains %d of %d parameters (LoRA + heads)",
        world_size, device, s.envs, teacher_path, params["trainable"], params["total"],
    )  # fmt: skip

    # ---- the live envs, rewards, outputs
    history, stride = arch_cfg.training.n_obs_img_steps, arch_cfg.training.obs_img_stride
    venv = make_online_env(cfg, s.envs, record is not None, render_device_for(device))
    stepper = WorldModelStepper(world_model, tokenizer, teacher.normalizers, history, stride)
    reward = StudentReward.from_config(world_model.codes, s)
    policy = ExplorerPolicy(explorer)
    recorder = RolloutRecorder(record, cfg, PHASE, rank) if record is not None else None
    metrics_log = MetricsLog(output_dir, cfg.logging.tensorboard, resume_step=progress.iteration if checkpoint else None) if is_main else None
    refs = init_explorer_ref(init_path, checkpoint)
    model_config = model_file_config(arch_cfg, PHASE, teacher, teacher_path=str(teacher_path.resolve()), **refs)
    id_prefix = run_tag(PHASE, output_dir)
    total = planned_iterations(s.total_iterations, t.num_episodes, s.envs * world_size)
    last_metrics: dict[str, Any] = {}

    def save() -> None:
        """Every rank gathers its RNG state and curiosity ensemble; rank 0 writes checkpoint-<iteration>."""
        ranks = gather_rank_states({"rng": capture_rng_state(), "curiosity": curiosity.state_dict()}, rank, world_size)
        if is_main:
            training_state = {
                "phase": PHASE,
                "optimizer": optimizer.state_dict(),
                "step": progress.iteration,
                "progress": asdict(progress),
                "config": cfg.to_dict(),
                "world_size": world_size,
                "batch_size": s.envs,
                "ranks": ranks,
            }
            path = save_checkpoint(
                output_dir, progress.iteration, model_state=explorer_heads_state(explorer), model_config=model_config,
                training_state=training_state, metrics=last_metrics, write_adapter=lambda d: save_adapter(explorer, d.parent),
            )  # fmt: skip
            log.info("saved %s", path)
        accelerator.wait_for_everyone()

    # ---- the loop
    process = psutil.Process()
    bar = tqdm(total=total, initial=min(progress.iteration, total), disable=not is_main, desc=PHASE, unit="it", dynamic_ncols=True)
    def hook(buf: Any) -> None:
        if on_iteration is not None:
            on_iteration({"iteration": progress.iteration, "world_model": world_model, "tokenizer": tokenizer, "explorer": explorer, "buffer": buf})

    hook(None)
    try:
        while progress.iteration < total:
            start = time.perf_counter()
            sample_now = is_main and ((progress.iteration + 1) % t.sample_every == 0 or progress.iteration + 1 == total)
            logs_now = (progress.iteration + 1) % t.log_every == 0 or progress.iteration + 1 == total
            # the world model's prediction (most of a rollout's time) where a paid term needs it, or to log every term
            predict = reward.needs_prediction or logs_now or sample_now
            slots = plan_round(t.seed, SEED_STREAM, progress.iteration, rank * s.envs, s.envs, cfg.environment.scene_reset_interval, id_prefix)
            explorer.eval()
            buf = collect_rollout(
                venv, slots, policy, stepper, reward, num_steps=t.steps_per_episode, device=device,
                record=recorder is not None, keep_video=sample_now, predict=predict,
            )  # fmt: skip
            rollout_s = time.perf_counter() - start
            start = time.perf_counter()
            curiosity_figures = curiosity(buf)  # scores the rollout, pays its part of buf.rewards, then learns from it
            curiosity_s = time.perf_counter() - start

            update, update_s = explorer_update(buf, scorer, optimizer, explorer, cfg, accelerator)

            progress.advance(s.envs * world_size, t.steps_per_episode)
            if recorder is not None:
                recorder.add(buf.episodes)
            bar.update(1)
            hook(buf)

            done = progress.iteration == total
            if logs_now:
                metrics = {
                    **rollout_metrics(buf),
                    **update,
                    **curiosity_figures,
                    "perf/rollout_s": rollout_s,
                    "perf/curiosity_s": curiosity_s,
                    "perf/update_s": update_s,
                    "perf/env_steps_per_s": t.steps_per_episode * s.envs / max(rollout_s, 1e-9),
                }
                metrics = mean_over_ranks(accelerator, metrics)
                metrics.update({
                    "loss": metrics["policy/loss"],
                    "perf/rss_mb": process.memory_info().rss / 2**20,
                    "train/iteration": progress.iteration,
                    "train/episodes": progress.episodes,
                })  # fmt: skip
                last_metrics = metrics
                if is_main:
                    metrics_log.write(progress.iteration, metrics)
                    bar.set_postfix(reward=f"{metrics['reward/total']:.3f}", kl=f"{metrics['policy/approx_kl']:.4f}")
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
    if checkpoint is not None and progress.iteration == checkpoint.step and progress.iteration >= total:
        log.info("nothing to do: the checkpoint is already at iteration %d of %d", progress.iteration, total)
    log.info("student stopped at iteration %d, %d episodes, %d env steps", progress.iteration, progress.episodes, progress.env_steps)
    accelerator.end_training()
    return progress
