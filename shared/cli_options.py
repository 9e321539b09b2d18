"""Options every command shares, and the one way a command turns its flags into a config.

Flags use dashes; the seed's underscore spellings are accepted as aliases
(`--num_episodes`, `--auto_resume`, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from f1.shared.config import F1Config, load_config

ConfigOpt = Annotated[
    Optional[Path], typer.Option("--config", help="Config YAML (default: the packaged configs/rl_config.yaml).")
]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", help="Override a config key, e.g. --set training.bptt_length=4 (repeatable)."),
]
PresetOpt = Annotated[Optional[str], typer.Option("--preset", help="Model size preset: tiny (CPU) or base (GPU).")]
OutputDirOpt = Annotated[
    Optional[Path], typer.Option("--output-dir", "--output_dir", help="Where checkpoints and outputs go.")
]
AutoResumeOpt = Annotated[
    bool, typer.Option("--auto-resume", "--auto_resume", help="Resume from the newest complete checkpoint.")
]
ResumeOpt = Annotated[Optional[Path], typer.Option("--resume", help="Resume from this checkpoint directory.")]
MaxStepsOpt = Annotated[
    Optional[int], typer.Option("--max-steps", "--max_steps", min=1, help="Stop after N optimizer steps.")
]
NumEpisodesOpt = Annotated[
    Optional[int], typer.Option("--num-episodes", "--num_episodes", min=1, help="Stop after N episodes.")
]
StepsPerEpisodeOpt = Annotated[
    Optional[int],
    typer.Option("--steps-per-episode", "--steps_per_episode", min=1, help="Actions per episode, T (T + 1 steps)."),
]
GpusOpt = Annotated[Optional[int], typer.Option("--gpus", min=0, help="GPUs to use (0: CPU only).")]


def build_config(config: Optional[Path], overrides: Optional[list[str]], **flags: Any) -> F1Config:
    """Load the config with `--set` overrides, then the command's own flags (dotted keys, None = not given)."""
    dotted = {key.replace("__", "."): value for key, value in flags.items()}
    return load_config(config, overrides or [], dotted)
