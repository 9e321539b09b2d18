"""GPU pinning (DESIGN.md section 6).

SAPIEN picks its Vulkan device itself, preferring the GPU that matches a
visible CUDA device. So a process is pinned *before* SAPIEN or torch is
imported: `worker_env` gives the environment of a collect worker (one
physical GPU, seen as cuda:0), `pin_from_local_rank` pins a process started
by `accelerate launch` from LOCAL_RANK. The seed's variables
(VK_DEVICE_INDEX, SAPIEN_DEVICE_INDEX, EGL_DEVICE_ID) are set to the
physical index too, for tools that read them.
This module imports neither SAPIEN nor torch.
"""

from __future__ import annotations

import os
from typing import Mapping, MutableMapping, Optional

from f1.shared.errors import UserError

SEED_DEVICE_VARS = ("VK_DEVICE_INDEX", "SAPIEN_DEVICE_INDEX", "EGL_DEVICE_ID")


def visible_gpu_ids(environ: Mapping[str, str] = os.environ) -> Optional[list[str]]:
    """Physical GPU ids named by CUDA_VISIBLE_DEVICES, or None when it is unset (all GPUs visible)."""
    value = environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip() and part.strip() != "-1"]


def physical_gpu_ids(num_gpus: int, environ: Mapping[str, str] = os.environ) -> list[str]:
    """The physical ids of the first `num_gpus` GPUs this process may use."""
    visible = visible_gpu_ids(environ)
    if visible is None:
        return [str(i) for i in range(num_gpus)]
    if num_gpus > len(visible):
        raise UserError(
            f"asked for {num_gpus} GPUs but CUDA_VISIBLE_DEVICES={environ.get('CUDA_VISIBLE_DEVICES')!r} "
            f"exposes {len(visible)}; lower --gpus or widen CUDA_VISIBLE_DEVICES"
        )
    return visible[:num_gpus]


def worker_env(rank: int, gpu_ids: list[str], environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Environment for worker `rank`: pinned to gpu_ids[rank], or CPU-only when gpu_ids is empty."""
    env = dict(environ)
    if not gpu_ids:
        # CPU worker: hide CUDA so torch stays on the CPU; SAPIEN renders with lavapipe.
        env["CUDA_VISIBLE_DEVICES"] = ""
        for var in SEED_DEVICE_VARS:
            env.pop(var, None)
        return env
    gpu = gpu_ids[rank % len(gpu_ids)]
    env["CUDA_VISIBLE_DEVICES"] = gpu
    for var in SEED_DEVICE_VARS:
        env[var] = gpu
    return env


def pin_from_local_rank(environ: MutableMapping[str, str] = os.environ) -> Optional[str]:
    """Pin the current process (started by accelerate launch) to its GPU from LOCAL_RANK.

    Sets the seed's device variables to the physical id and returns it; returns
    None with nothing changed when no GPU is visible. CUDA_VISIBLE_DEVICES is left
    as it is: Accelerate picks cuda:LOCAL_RANK itself.
    """
    visible = visible_gpu_ids(environ)
    local_rank = int(environ.get("LOCAL_RANK", "0"))
    if visible is not None:
        if not visible:
            return None
        if local_rank >= len(visible):
            raise UserError(
                f"LOCAL_RANK={local_rank} but CUDA_VISIBLE_DEVICES={environ.get('CUDA_VISIBLE_DEVICES')!r} "
                f"has {len(visible)} GPUs; start fewer processes"
            )
        gpu = visible[local_rank]
    else:
        gpu = str(local_rank)
    for var in SEED_DEVICE_VARS:
        environ[var] = gpu
    return gpu


def sapien_render_device(environ: Mapping[str, str] = os.environ) -> Optional[str]:
    """'cuda:0' for a pinned GPU worker (its one visible GPU), None for the CPU (lavapipe)."""
    visible = visible_gpu_ids(environ)
    if visible is not None and not visible:
        return None
    return "cuda:0" if visible else None
