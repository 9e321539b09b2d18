"""How many GPUs a run may use, found without importing torch or SAPIEN (the collect parent imports neither).

The NVIDIA driver answers through `nvidia-smi -L` (one "GPU i: ..." line per
GPU) and, without the tool, through /proc/driver/nvidia/gpus/ (one folder per
GPU). CUDA_VISIBLE_DEVICES, when set, narrows that to the GPUs it names.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Mapping

from f1.shared.errors import UserError
from f1.shared.gpu import visible_gpu_ids

PROC_GPUS = Path("/proc/driver/nvidia/gpus")
SMI_TIMEOUT_S = 30


def count_driver_gpus(proc_gpus: Path = PROC_GPUS) -> tuple[int, str]:
    """(GPUs the NVIDIA driver reports, what was looked at, for the user)."""
    try:
        result = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=SMI_TIMEOUT_S)
        if result.returncode == 0:
            n = sum(line.startswith("GPU ") for line in result.stdout.splitlines())
            return n, f"`nvidia-smi -L` lists {n}"
        said = (result.stderr or result.stdout).strip().splitlines()
        smi = f"`nvidia-smi -L` failed: {said[0] if said else 'no output'}"
    except FileNotFoundError:
        smi = "no nvidia-smi"
    except subprocess.TimeoutExpired:
        smi = f"`nvidia-smi -L` gave no answer in {SMI_TIMEOUT_S} s"
    if proc_gpus.is_dir():
        n = sum(1 for _ in proc_gpus.iterdir())
        return n, f"{smi}; {proc_gpus} lists {n}"
    return 0, f"{smi}, no {proc_gpus}"


def gpus_for_run(asked: int, environ: Mapping[str, str] = os.environ, proc_gpus: Path = PROC_GPUS) -> list[str]:
    """The physical ids of `asked` usable GPUs ([] for 0); a UserError naming what was found when there are fewer."""
    if asked == 0:
        return []
    n, found = count_driver_gpus(proc_gpus)
    usable = [str(i) for i in range(n)]
    visible = visible_gpu_ids(environ)
    if visible is not None:
        # Ids by index must exist; UUIDs (GPU-...) and MIG ids cannot be checked here and are trusted.
        usable = [v for v in visible if not v.isdigit() or int(v) < n] if n else []
        found += f", CUDA_VISIBLE_DEVICES={environ.get('CUDA_VISIBLE_DEVICES')!r}"
    if asked > len(usable):
        cpu = "--gpus 0 to run CPU workers (rendering with lavapipe)"
        fix = f"use --gpus {len(usable)}, or {cpu}" if usable else f"use {cpu}"
        raise UserError(f"--gpus {asked} asks for {asked} GPUs, but {len(usable)} can be used here ({found}); {fix}")
    return usable[:asked]
