"""Which share of a multi-machine run this machine takes: its node rank and the node count.

`--node-rank R --num-nodes N` (or `collect.node_rank`/`collect.num_nodes` in the
config) say it outright. Without them the launcher's variables do, looked up in
this order (the launcher closest to this process first):

- torchrun and launchers like it: `RANK` and `WORLD_SIZE`;
- Slurm: under `srun`, `SLURM_PROCID` of `SLURM_NTASKS` (only inside a job step,
  i.e. with `SLURM_STEP_ID` set: a batch script itself also carries
  `SLURM_PROCID=0` and the job's `SLURM_NTASKS`, and would take one share only);
  in a job array, task `SLURM_ARRAY_TASK_ID` of `SLURM_ARRAY_TASK_COUNT`
  (counted from `SLURM_ARRAY_TASK_MIN` in steps of `SLURM_ARRAY_TASK_STEP`);
  both at once (srun inside an array task) multiply: array index * ntasks + procid.

Node R takes the scene blocks b with b % N == R (`f1.collect.plan`), so any of
these gives the same split as typing the flags. This module imports nothing heavy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Optional

from f1.shared.errors import UserError


@dataclass(frozen=True)
class NodeRanks:
    rank: int
    count: int
    source: str
    """Where the pair came from, for the run's first line, e.g. 'Slurm srun (SLURM_PROCID=1, SLURM_NTASKS=4)'."""


def _int(environ: Mapping[str, str], name: str) -> int:
    value = environ[name]
    try:
        return int(value)
    except ValueError:
        raise UserError(
            f"{name}={value!r} is not an integer; unset it or give --node-rank and --num-nodes"
        ) from None


def _torchrun(environ: Mapping[str, str]) -> Optional[NodeRanks]:
    if "RANK" not in environ or "WORLD_SIZE" not in environ:
        return None
    rank, size = _int(environ, "RANK"), _int(environ, "WORLD_SIZE")
    if not 0 <= rank < size:
        raise UserError(f"RANK={rank} is not below WORLD_SIZE={size}; fix the launcher or give --node-rank and --num-nodes")
    return NodeRanks(rank, size, f"torchrun-style variables (RANK={rank}, WORLD_SIZE={size})")


def _slurm_array(environ: Mapping[str, str]) -> Optional[tuple[int, int, str]]:
    if "SLURM_ARRAY_TASK_ID" not in environ:
        return None
    if "SLURM_ARRAY_TASK_COUNT" not in environ:
        raise UserError(
            "SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not (Slurm older than 17.11?); "
            "give --node-rank $SLURM_ARRAY_TASK_ID --num-nodes N"
        )
    task, count = _int(environ, "SLURM_ARRAY_TASK_ID"), _int(environ, "SLURM_ARRAY_TASK_COUNT")
    low = _int(environ, "SLURM_ARRAY_TASK_MIN") if "SLURM_ARRAY_TASK_MIN" in environ else 0
    step = _int(environ, "SLURM_ARRAY_TASK_STEP") if "SLURM_ARRAY_TASK_STEP" in environ else 1
    index, off = divmod(task - low, max(step, 1))
    if off or not 0 <= index < count:
        raise UserError(
            f"SLURM_ARRAY_TASK_ID={task} is not on the array's range (min {low}, step {step}, {count} tasks); "
            f"submit a range such as --array=0-{count - 1}, or give --node-rank and --num-nodes"
        )
    return index, count, f"SLURM_ARRAY_TASK_ID={task} of SLURM_ARRAY_TASK_COUNT={count}"


def _slurm_step(environ: Mapping[str, str]) -> Optional[tuple[int, int, str]]:
    if "SLURM_PROCID" not in environ or "SLURM_NTASKS" not in environ:
        return None
    procid, ntasks = _int(environ, "SLURM_PROCID"), _int(environ, "SLURM_NTASKS")
    if "SLURM_STEP_ID" not in environ and "SLURM_STEPID" not in environ:
        if ntasks > 1:
            raise UserError(
                f"SLURM_NTASKS={ntasks} but this is the batch script, not a job step: start f1 collect with "
                "`srun` so that each task gets its SLURM_PROCID, or give --node-rank and --num-nodes"
            )
        return None
    if not 0 <= procid < ntasks:
        raise UserError(f"SLURM_PROCID={procid} is not below SLURM_NTASKS={ntasks}; give --node-rank and --num-nodes")
    return procid, ntasks, f"SLURM_PROCID={procid}, SLURM_NTASKS={ntasks}"


def _slurm(environ: Mapping[str, str]) -> Optional[NodeRanks]:
    array, step = _slurm_array(environ), _slurm_step(environ)
    if array and step:
        rank, count = array[0] * step[1] + step[0], array[1] * step[1]
        return NodeRanks(rank, count, f"Slurm job array and srun ({array[2]}; {step[2]})")
    if array:
        return NodeRanks(array[0], array[1], f"Slurm job array ({array[2]})")
    if step:
        return NodeRanks(step[0], step[1], f"Slurm srun ({step[2]})")
    return None


def ranks_from_environment(environ: Mapping[str, str] = os.environ) -> Optional[NodeRanks]:
    """The launcher's (rank, count), or None when no launcher variables are set. UserError on inconsistent ones."""
    return _torchrun(environ) or _slurm(environ)


def resolve_node_ranks(
    flag_rank: Optional[int], flag_count: Optional[int], config_rank: int, config_count: int,
    environ: Mapping[str, str] = os.environ,
) -> Optional[NodeRanks]:
    """The ranks a run uses and their source; None for a lone machine with nothing set (rank 0 of 1).

    The flags, or config values other than the defaults (0 of 1), win; then the environment.
    """
    if flag_rank is not None or flag_count is not None or (config_rank, config_count) != (0, 1):
        return NodeRanks(config_rank, config_count, "--node-rank/--num-nodes (or collect.node_rank/num_nodes)")
    return ranks_from_environment(environ)
