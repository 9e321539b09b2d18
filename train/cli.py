"""`f1 train tokenizer | teacher | student | adversarial` and `f1 evaluate`: options only.

Each phase's work is a `main(cfg, ...)` in its own module, imported when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from f1.shared.cli_options import (
    AutoResumeOpt,
    ConfigOpt,
    GpusOpt,
    MaxStepsOpt,
    NumEpisodesOpt,
    OutputDirOpt,
    PresetOpt,
    ResumeOpt,
    SetOpt,
    StepsPerEpisodeOpt,
    build_config,
)
from f1.shared.errors import UserError

app = typer.Typer(no_args_is_help=True)

DataOpt = Annotated[str, typer.Option("--data", help="Episode store: a directory or s3://bucket/prefix (from `f1 collect`).")]


@app.command()
def tokenizer(
    data: DataOpt,
    output_dir: OutputDirOpt = None,
    max_steps: MaxStepsOpt = None,
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Train the FSQ image tokenizer on a store's wrist frames."""
    cfg = build_config(
        config,
        set_,
        model__preset=preset,
        tokenizer__output_dir=str(output_dir) if output_dir else None,
        tokenizer__max_steps=max_steps,
    )
    from f1.train.offline.tokenizer_phase import main

    main(cfg, data)


@app.command()
def teacher(
    data: DataOpt,
    tokenizer: Annotated[
        Optional[Path], typer.Option("--tokenizer", "--tokenizer_path", help="Trained tokenizer directory.")
    ] = None,
    output_dir: OutputDirOpt = None,
    max_steps: MaxStepsOpt = None,
    num_episodes: NumEpisodesOpt = None,
    auto_resume: AutoResumeOpt = False,
    resume: ResumeOpt = None,
    gpus: GpusOpt = None,
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Replay a store in order and train the world model + GRU memory with truncated BPTT."""
    cfg = build_config(
        config,
        set_,
        model__preset=preset,
        teacher__output_dir=str(output_dir) if output_dir else None,
        teacher__tokenizer_path=str(tokenizer) if tokenizer else None,
        training__max_steps=max_steps,
        training__num_episodes=num_episodes,
    )
    from f1.train.offline.teacher import main

    main(cfg, data, resume=resume, auto_resume=auto_resume, gpus=gpus)


@app.command()
def student(
    teacher_path: Annotated[
        Optional[Path], typer.Option("--teacher-path", "--teacher_path", help="Teacher checkpoint directory.")
    ] = None,
    num_episodes: NumEpisodesOpt = None,
    steps_per_episode: StepsPerEpisodeOpt = None,
    total_iterations: Annotated[
        Optional[int], typer.Option("--total-iterations", "--total_iterations", min=1, help="PPO iterations.")
    ] = None,
    envs: Annotated[Optional[int], typer.Option("--envs", min=1, help="Live envs stepped together.")] = None,
    data: Annotated[
        Optional[str],
        typer.Option("--data", help="Train in the world model's imagination from this store's replayed steps (no simulator)."),
    ] = None,
    init_explorer: Annotated[
        Optional[Path],
        typer.Option("--init-explorer", "--init_explorer", help="Start from this student checkpoint's explorer (fine-tuning)."),
    ] = None,
    record: Annotated[
        Optional[str], typer.Option("--record", help="Also write the rollouts to this store (a directory or s3://bucket/prefix).")
    ] = None,
    output_dir: OutputDirOpt = None,
    auto_resume: AutoResumeOpt = False,
    resume: ResumeOpt = None,
    gpus: GpusOpt = None,
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Train the explorer (PPO + LoRA) against the frozen teacher world model: online, or with --data in its imagination."""
    cfg = build_config(
        config,
        set_,
        model__preset=preset,
        student__teacher_path=str(teacher_path) if teacher_path else None,
        student__init_explorer=str(init_explorer) if init_explorer else None,
        student__output_dir=str(output_dir) if output_dir else None,
        student__total_iterations=total_iterations,
        student__envs=envs,
        training__num_episodes=num_episodes,
        training__steps_per_episode=steps_per_episode,
    )
    if data is not None:
        if record is not None or envs is not None:
            raise UserError("--record and --envs belong to the online student; drop them with --data (imagination runs no env)")
        from f1.train.offline.imagine import main as imagine

        imagine(cfg, data, resume=resume, auto_resume=auto_resume, gpus=gpus)
        return
    from f1.train.online.student import main

    main(cfg, record=record, resume=resume, auto_resume=auto_resume, gpus=gpus)


@app.command()
def adversarial(
    teacher_checkpoint: Annotated[
        Optional[Path],
        typer.Option("--teacher-checkpoint", "--teacher_checkpoint", help="Teacher checkpoint directory."),
    ] = None,
    student_checkpoint: Annotated[
        Optional[Path],
        typer.Option("--student-checkpoint", "--student_checkpoint", help="Student checkpoint directory."),
    ] = None,
    total_iterations: Annotated[
        Optional[int], typer.Option("--total-iterations", "--total_iterations", min=1, help="Alternations.")
    ] = None,
    steps_per_episode: StepsPerEpisodeOpt = None,
    record: Annotated[
        Optional[str], typer.Option("--record", help="Also write the rollouts to this store (a directory or s3://bucket/prefix).")
    ] = None,
    output_dir: OutputDirOpt = None,
    auto_resume: AutoResumeOpt = False,
    resume: ResumeOpt = None,
    gpus: GpusOpt = None,
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Alternate world-model and explorer updates online: the explorer seeks what the model predicts badly."""
    cfg = build_config(
        config,
        set_,
        model__preset=preset,
        adversarial__teacher_checkpoint=str(teacher_checkpoint) if teacher_checkpoint else None,
        adversarial__student_checkpoint=str(student_checkpoint) if student_checkpoint else None,
        adversarial__output_dir=str(output_dir) if output_dir else None,
        adversarial__total_iterations=total_iterations,
        training__steps_per_episode=steps_per_episode,
    )
    from f1.train.online.adversarial import main

    main(cfg, record=record, resume=resume, auto_resume=auto_resume, gpus=gpus)


def evaluate(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="Teacher, student or adversarial checkpoint.")],
    data: Annotated[
        Optional[str], typer.Option("--data", help="Store with held-out episodes (a directory or s3://bucket/prefix).")
    ] = None,
    episodes: Annotated[
        int, typer.Option("--episodes", "--num-episodes", "--num_episodes", min=1, help="Episodes to evaluate.")
    ] = 4,
    steps_per_episode: StepsPerEpisodeOpt = None,
    output_dir: Annotated[
        Path, typer.Option("--output-dir", "--output_dir", help="Where the report goes.")
    ] = Path("outputs/evaluate"),
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """World-model prediction quality on stored episodes; explorer state coverage vs random in the live env."""
    cfg = build_config(config, set_, training__steps_per_episode=steps_per_episode)
    from f1.train.evaluate import main

    main(cfg, checkpoint, data=data, episodes=episodes, output_dir=output_dir)


def tokenize(
    store: Annotated[str, typer.Argument(help="Store: a directory or s3://bucket/prefix (from `f1 collect`).")],
    tokenizer: Annotated[Path, typer.Option("--tokenizer", help="Trained tokenizer directory (`f1 train tokenizer` output).")],
    out: Annotated[
        Optional[str],
        typer.Option("--out", help="Token store folder (default: STORE/tokens/<key>/; for an s3:// store ~/.cache/f1/tokens/...)."),
    ] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Local worker processes (one GPU each when there are GPUs).")] = 1,
    rank: Annotated[
        Optional[int], typer.Option("--rank", min=0, help="This process's share when several tokenise one store (default: RANK or SLURM_PROCID).")
    ] = None,
    world_size: Annotated[
        Optional[int], typer.Option("--world-size", "--world_size", min=1, help="How many processes share the work (default: WORLD_SIZE or SLURM_NTASKS).")
    ] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="Encode on this device (default: cuda when there is one).")] = None,
) -> None:
    """Tokenise every frame once into a token store beside the data (only the shards not tokenised yet)."""
    from f1.train.offline.token_store_writer import main

    main(store, tokenizer, out=out, workers=workers, rank=rank, world_size=world_size, device=device)
