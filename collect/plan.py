"""Which episodes a collect run still owes, and which worker and env slot runs each.

An episode is known by its index i in 0..E-1 for the run's seed. Its id, env
seed and scene are pure functions of (seed, i), so a rerun of the same command
finds what the store already holds by id and collects only the rest, and two
machines (nodes) writing one store never make the same episode.

Scenes are reused for `scene_reset_interval` episodes (DESIGN.md section 2), so
episodes go out in blocks of that many consecutive indices: one env slot runs a
whole block on one scene, and a block's scene seed derives from the block number.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

_SCENE_STREAM = 0x5CE7E  # separates scene seeds from episode seeds drawn from the same base seed


def episode_id(seed: int, index: int) -> str:
    """Globally unique for (seed, index); no dots (WebDataset splits keys at dots)."""
    return f"s{seed}-e{index:07d}"


def episode_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def scene_seed(seed: int, block: int) -> int:
    return int(np.random.SeedSequence([seed, _SCENE_STREAM, block]).generate_state(1)[0])


@dataclass
class EpisodeTask:
    index: int
    episode_id: str
    seed: int
    scene_id: int
    scene_seed: int


@dataclass
class WorkerPlan:
    """Per env slot, the episodes it runs in order (whole scene blocks)."""

    rank: int
    slots: list[list[EpisodeTask]] = field(default_factory=list)

    @property
    def num_episodes(self) -> int:
        return sum(len(s) for s in self.slots)

    def rounds(self) -> list[list[EpisodeTask | None]]:
        """Round r steps every slot's r-th episode together; a slot with none left idles (None)."""
        depth = max((len(s) for s in self.slots), default=0)
        return [[s[r] if r < len(s) else None for s in self.slots] for r in range(depth)]


def plan_collection(
    *,
    seed: int,
    total_episodes: int,
    scene_reset_interval: int,
    num_workers: int,
    envs_per_worker: int,
    node_rank: int = 0,
    num_nodes: int = 1,
    done_ids: set[str] = frozenset(),
) -> list[WorkerPlan]:
    """Split the missing episodes of this node into per-worker, per-slot queues, balanced by count."""
    blocks: list[list[EpisodeTask]] = []
    for start in range(0, total_episodes, scene_reset_interval):
        block = start // scene_reset_interval
        if block % num_nodes != node_rank:
            continue
        tasks = [
            EpisodeTask(i, episode_id(seed, i), episode_seed(seed, i), block, scene_seed(seed, block))
            for i in range(start, min(start + scene_reset_interval, total_episodes))
            if episode_id(seed, i) not in done_ids
        ]
        if tasks:
            blocks.append(tasks)

    num_slots = num_workers * envs_per_worker
    # A block larger than a fair share is split, so that no slot idles while
    # another runs a whole block: each piece rebuilds the block's scene, from
    # the same scene seed, so the episodes stay what they would have been.
    fair = max(1, -(-sum(map(len, blocks)) // num_slots))
    pieces = [block[i : i + fair] for block in blocks for i in range(0, len(block), fair)]
    slots: list[list[EpisodeTask]] = [[] for _ in range(num_slots)]
    # Largest pieces first onto the least-loaded slot keeps the rounds even.
    for piece in sorted(pieces, key=len, reverse=True):
        min(slots, key=len).extend(piece)
    for s in slots:
        s.sort(key=lambda t: t.index)
    return [
        WorkerPlan(rank, slots[rank * envs_per_worker : (rank + 1) * envs_per_worker]) for rank in range(num_workers)
    ]
