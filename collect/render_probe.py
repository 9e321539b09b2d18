"""The render device, tried once in a short child process before any collect worker starts.

The parent never imports SAPIEN (DESIGN.md section 6), so it spawns one child
with worker 0's environment that opens the render system and exits. A machine
that cannot render then says why in one line, instead of every worker failing
alike; the line names the likelier cause: no Vulkan driver for the GPU at all
(the NVIDIA ICD file), or SAPIEN's own message.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path
from typing import Any, Optional

from f1.shared.errors import UserError

PROBE_TIMEOUT_S = 180  # importing SAPIEN and opening lavapipe take seconds; a hung driver should not hang f1
ICD_DIRS = (Path("/usr/share/vulkan/icd.d"), Path("/etc/vulkan/icd.d"), Path("/usr/local/share/vulkan/icd.d"))


def nvidia_icd_files() -> list[Path]:
    """The NVIDIA Vulkan driver's ICD manifests Vulkan would find (VK_ICD_FILENAMES, else the standard folders)."""
    named = os.environ.get("VK_ICD_FILENAMES") or os.environ.get("VK_DRIVER_FILES")
    candidates = [Path(p) for p in named.split(os.pathsep)] if named else [p for d in ICD_DIRS if d.is_dir() for p in d.iterdir()]
    return [p for p in candidates if "nvidia" in p.name.lower() and p.is_file()]


def _child(env_vars: dict[str, str], answer: Any) -> None:
    os.environ.clear()
    os.environ.update(env_vars)  # as a worker: pinned before SAPIEN is imported
    from f1.shared.gpu import sapien_render_device

    device = sapien_render_device()
    if device is not None and not nvidia_icd_files():
        answer.send(
            f"the GPU has no Vulkan driver (no NVIDIA ICD file in VK_ICD_FILENAMES or {', '.join(map(str, ICD_DIRS))}); "
            "install the NVIDIA driver's Vulkan part (e.g. libnvidia-gl-<driver version>), or use --gpus 0 for CPU workers"
        )
        return
    try:
        from f1.collect.rendering import create_render_system

        create_render_system()
    except UserError as exc:
        answer.send(str(exc))
    except Exception as exc:  # noqa: BLE001 - whatever it is, the parent says it in one line
        answer.send(f"{type(exc).__name__}: {exc}")
    else:
        answer.send(None)


def probe_render_device(env_vars: dict[str, str]) -> None:
    """Open the render device in a child with `env_vars`; a UserError with the child's one-line reason if it cannot."""
    ctx = mp.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(env_vars, send), name="f1-render-probe")
    child.start()
    send.close()
    reason: Optional[str]
    if receive.poll(PROBE_TIMEOUT_S):
        try:
            reason = receive.recv()
        except EOFError:  # it died without a word (a driver crash)
            child.join(timeout=5)
            reason = f"the render check process died with exit code {child.exitcode}"
    else:
        reason = f"the render check gave no answer in {PROBE_TIMEOUT_S} s (a hung Vulkan driver?)"
    child.join(timeout=10)
    if child.is_alive():
        child.kill()
        child.join()
    if reason is not None:
        raise UserError(f"cannot render, so no worker was started: {reason}")
