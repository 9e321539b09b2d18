"""Episode -> (rank, lane, order): the pure, seeded plan behind ordered replay (DESIGN §4).

Every rank calls `assign_lanes` with the same arguments and gets the same global
plan, then reads only its own slice, so ranks read disjoint episodes without
talking to each other.
"""

from __future__ import annotations

import heapq
from typing import Sequence

import numpy as np

# Tags keep the random streams of different uses apart for the same (seed, epoch).
LANES_STREAM = 0
RANDOM_WINDOWS_STREAM = 1


def seed_words(seed: int, *words: int) -> list[int]:
    """Non-negative words for np.random.SeedSequence; a negative seed maps to a distinct word."""
    return [int(seed) % 2**64] + [int(w) % 2**64 for w in words]


def assign_lanes(
    episode_ids: Sequence[str],
    lengths: Sequence[int],
    seed: int,
    epoch: int,
    world_size: int,
    batch_size: int,
) -> list[list[list[int]]]:
    """Split episodes over world_size * batch_size lanes; returns plan[rank][lane] = episode indices in stream order.

    Indices refer to positions in `episode_ids`. The plan depends only on
    (seed, epoch, the set of (episode_id, length)): episodes are first put in
    id order, so two ranks listing the same store in a different order agree.

    Steps: a seeded shuffle, then a stable sort longest-first, then each
    episode goes to the least-loaded lane (ties broken by a seeded lane order,
    so the remainder of an uneven split does not always land on rank 0).
    Within a lane, episodes play in shuffled order, not longest-first.

    Balance bound: max(lane steps) - min(lane steps) <= the longest episode.
    Greedy least-loaded keeps it as an invariant: the episode x goes to the
    lane at the minimum m, so the new spread is at most max(old spread, x).
    With equal lengths this means lane episode counts differ by at most one.
    """
    n = len(episode_ids)
    assert len(lengths) == n, ("episode_ids and lengths differ in length", n, len(lengths))
    assert world_size >= 1 and batch_size >= 1, ("world_size, batch_size", world_size, batch_size)
    if len(set(episode_ids)) != n:
        raise ValueError(f"episode ids are not unique ({n - len(set(episode_ids))} repeats)")
    lengths_arr = np.asarray(lengths, dtype=np.int64)
    assert n == 0 or lengths_arr.min() >= 1, ("every episode needs at least one step", lengths_arr.min())

    n_lanes = world_size * batch_size
    canonical = sorted(range(n), key=lambda i: episode_ids[i])  # id order, independent of the input order
    rng = np.random.default_rng(seed_words(seed, epoch, LANES_STREAM))
    shuffled = [canonical[i] for i in rng.permutation(n)]
    shuffle_rank = {episode: r for r, episode in enumerate(shuffled)}
    longest_first = sorted(shuffled, key=lambda i: -lengths_arr[i])  # stable: equal lengths keep shuffled order
    tiebreak = rng.permutation(n_lanes)

    lanes: list[list[int]] = [[] for _ in range(n_lanes)]
    heap = [(0, int(tiebreak[lane]), lane) for lane in range(n_lanes)]  # (steps, tiebreak, lane)
    heapq.heapify(heap)
    for episode in longest_first:
        load, tie, lane = heapq.heappop(heap)
        lanes[lane].append(episode)
        heapq.heappush(heap, (load + int(lengths_arr[episode]), tie, lane))
    for lane in lanes:
        lane.sort(key=shuffle_rank.__getitem__)

    return [lanes[r * batch_size : (r + 1) * batch_size] for r in range(world_size)]
