"""Start the ranks of a training command with Accelerate, so a user never has to type `accelerate launch`.

Three ways in, one result (N processes, each running `f1 train <phase> ...`):
- `f1 train teacher --gpus N` (N >= 2), not inside a launched process: re-exec
  `accelerate launch --multi_gpu --num_processes N -m f1 train teacher <args minus --gpus>`.
- `accelerate launch --num_processes N -m f1 train teacher ...`: already N ranks; nothing to do.
- `accelerate launch --cpu --num_processes N -m f1 ...`: Accelerate's simple launcher
  starts ONE process for `--cpu` (multi-CPU needs mpirun; huggingface/accelerate#2741).
  We detect that (ACCELERATE_USE_CPU set, MASTER_PORT set, no WORLD_SIZE), read N
  from the launcher's own command line, and re-exec through Accelerate's torchrun
  path with the CPU forced, so the N ranks talk over gloo.
This module imports neither torch nor the training code.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import Mapping, Optional, Sequence

from f1.shared.errors import UserError

TRUE_WORDS = ("1", "true", "yes", "on")


def is_launched_rank(environ: Mapping[str, str] = os.environ) -> bool:
    """True inside a process started by torchrun / accelerate's multi-process launcher."""
    return "WORLD_SIZE" in environ and "LOCAL_RANK" in environ


def forces_cpu(environ: Mapping[str, str] = os.environ) -> bool:
    """`accelerate launch --cpu` (or a user) asked for the CPU."""
    return environ.get("ACCELERATE_USE_CPU", "").lower() in TRUE_WORDS


def strip_option(argv: Sequence[str], *names: str) -> list[str]:
    """argv without `--name VALUE` / `--name=VALUE` for each of `names`."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in names:
            skip = True
            continue
        if any(arg.startswith(name + "=") for name in names):
            continue
        out.append(arg)
    return out


def cpu_launcher_processes(environ: Mapping[str, str] = os.environ) -> Optional[int]:
    """N when this single process was started by `accelerate launch --cpu --num_processes N` with N > 1, else None."""
    if is_launched_rank(environ) or not forces_cpu(environ) or "MASTER_PORT" not in environ:
        return None
    import psutil
    from accelerate.commands.launch import launch_command_parser

    parent = psutil.Process(os.getppid()).cmdline()  # `accelerate launch ...` or `python -m accelerate.commands.launch ...`
    starts = [i + 1 for i, arg in enumerate(parent) if arg == "launch" or arg.endswith("accelerate.commands.launch")]
    if not starts:
        return None
    args, _ = launch_command_parser().parse_known_args(parent[starts[0] :])
    n = args.num_processes
    return n if n is not None and n > 1 and (args.num_machines or 1) == 1 else None


def free_port() -> int:
    """A port nobody listens on now: concurrent runs on one machine must not share 29500."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_command(num_processes: int, argv: Sequence[str]) -> list[str]:
    """`python -m accelerate.commands.launch ... -m f1 <argv>` (the same interpreter, so the same venv)."""
    return [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu",  # the torchrun path: the only one that starts N processes without mpirun
        "--num_processes", str(num_processes),
        "--num_machines", "1",
        "--mixed_precision", "no",  # our Accelerator sets the precision from the config
        "--dynamo_backend", "no",
        "--main_process_port", str(free_port()),
        "-m", "f1", *argv,
    ]  # fmt: skip


def relaunch_if_needed(gpus: Optional[int], argv: Optional[Sequence[str]] = None) -> None:
    """Re-exec under Accelerate when this process must become N ranks; exits with the ranks' status.

    Returns (doing nothing) when this process is already the right one: inside
    a launched rank, `--gpus` 0 or 1 or not given.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    env = dict(os.environ)
    n_cpu = cpu_launcher_processes(env)
    if n_cpu is not None:
        env.update(ACCELERATE_USE_CPU="true", CUDA_VISIBLE_DEVICES="")  # no GPU may sneak in: --cpu was asked
        _run(accelerate_command(n_cpu, strip_option(argv, "--gpus")), env)
    if gpus is None or gpus <= 1 or is_launched_rank(env):
        return
    import torch

    available = torch.cuda.device_count()
    if available < gpus:
        raise UserError(f"--gpus {gpus} asked for {gpus} GPUs but this machine shows {available}; lower --gpus")
    _run(accelerate_command(gpus, strip_option(argv, "--gpus")), env)


def _run(command: list[str], env: dict[str, str]) -> None:
    import logging

    logging.getLogger("f1.launch").info("launching: %s", " ".join(command))
    sys.stdout.flush()
    sys.stderr.flush()
    raise SystemExit(subprocess.call(command, env=env))


def planned_world_size(gpus: Optional[int], environ: Mapping[str, str] = os.environ) -> int:
    """How many ranks this command will run as, known before any of them starts (for resume checks)."""
    if is_launched_rank(environ):
        return int(environ["WORLD_SIZE"])
    n_cpu = cpu_launcher_processes(environ)
    if n_cpu is not None:
        return n_cpu
    return gpus if gpus is not None and gpus > 1 else 1
