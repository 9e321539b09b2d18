"""Replay for truncated BPTT (DESIGN §4): ordered lanes of whole episodes, or random windows.

    replay = OrderedReplay(store.episodes, store.read_steps, batch_size=B, bptt_length=L,
                           history=h, stride=s, rank=r, world_size=n, seed=seed)
    for chunk in replay.iter_chunks(epoch, start_chunk=c):   # numpy arrays; the trainer converts
        ...                                                  # chunk["wrist_rgb"]: (B, C+L+1, H, W, 3)

Chunk keys (C = (h-1)*s; window position C+p is chunk position p):
    wrist_rgb, head_rgb (B, C+L+1, H, W, 3) uint8, state (B, C+L+1, S), action (B, C+L+1, A)
        whichever of them `keys` names; positions no step needs stay zero and are never read.
    is_first (B, L)        the memory resets here (episode step 0; RandomWindows: also each window's start)
    is_last (B, L)         the episode's last step: its action is padding, it has no next frame
    valid (B, L)           a real step (False: lane padding, masked out of the loss)
    target_valid (B, L)    valid and not is_last: window position C+p+1 is its next frame
    history_index (B, L, h) int64 window positions of steps [k-(h-1)s .. k] of the same episode
    history_pad (B, L, h)  the slot lies before the episode's start (it repeats step 0)
    episode_index (B, L)   index into `episodes`, -1 for padding;  step (B, L): k, -1 for padding
    is_terminal (B, L)     only when `keys` names it
    chunk_index, epoch     ints
"""

from __future__ import annotations

import math
import threading
from contextlib import closing
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from f1.datasets.prefetch import prefetched
from f1.datasets.replay_chunk import MARKER_KEYS, LaneTail, ReadSteps, ReplayError, build_chunk, probe_specs
from f1.datasets.replay_lanes import RANDOM_WINDOWS_STREAM, assign_lanes, seed_words

DEFAULT_KEYS = ("wrist_rgb", "head_rgb", "state", "action", "is_first", "is_last")

Cursor = list[tuple[Optional[str], int]]  # per lane (episode_id, step); (None, -1) for a padded lane


class ReplayCounters:
    """Thread-safe running totals for `stats()`: reads happen in the prefetch thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals = {"chunks": 0, "steps_read": 0, "read_calls": 0, "read_s": 0.0, "data_wait_s": 0.0}

    def add_read(self, steps: int, seconds: float) -> None:
        with self._lock:
            self._totals["steps_read"] += steps
            self._totals["read_calls"] += 1
            self._totals["read_s"] += seconds

    def add_wait(self, seconds: float) -> None:
        with self._lock:
            self._totals["data_wait_s"] += seconds

    def add_chunk(self) -> None:
        with self._lock:
            self._totals["chunks"] += 1

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return dict(self._totals)


class _ChunkSource:
    """What both replays share: validation, chunk assembly, prefetch, cursor and stats.

    A subclass says how many chunks an epoch has and which (episode, step)
    sits at each [B, L] position of a chunk; everything else follows from that.
    """

    def __init__(
        self,
        episodes: Sequence[Any],
        read_steps: ReadSteps,
        *,
        batch_size: int,
        bptt_length: int,
        history: int,
        stride: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        keys: Sequence[str] = DEFAULT_KEYS,
        prefetch: int = 4,
    ) -> None:
        assert batch_size >= 1 and bptt_length >= 1, ("batch_size, bptt_length", batch_size, bptt_length)
        assert history >= 1 and stride >= 1, ("history, stride", history, stride)
        assert 0 <= rank < world_size, ("rank, world_size", rank, world_size)
        assert prefetch >= 0, ("prefetch", prefetch)
        self.episodes = list(episodes)
        if not self.episodes:
            raise ReplayError("replay got no episodes: point it at a store that `f1 collect` has filled")
        self.read_steps = read_steps
        self.batch_size, self.bptt_length = batch_size, bptt_length
        self.history, self.stride = history, stride
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.keys, self.prefetch = tuple(keys), prefetch
        self.context = (history - 1) * stride  # C: window positions before the chunk
        self.window_length = self.context + bptt_length + 1
        self._ids = [e.episode_id for e in self.episodes]
        self._lengths = np.array([e.length for e in self.episodes], dtype=np.int64)
        window_keys = [k for k in self.keys if k not in MARKER_KEYS]
        # One step of the first episode fixes each key's shape and dtype, so an all-padding chunk has them too.
        self._specs = probe_specs(self.episodes[0], read_steps, window_keys)
        self._counters = ReplayCounters()

    def num_chunks(self, epoch: int) -> int:
        raise NotImplementedError

    def _positions(self, epoch: int, chunk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(episode_index, step, reset), each (B, L); -1 marks padding."""
        raise NotImplementedError

    def read_chunk(self, epoch: int, chunk: int) -> dict[str, Any]:
        """Assemble chunk `chunk` of `epoch` in the calling thread."""
        return self._read_chunk(epoch, chunk, None)[0]

    def _read_chunk(
        self, epoch: int, chunk: int, tails: Optional[list[Optional[LaneTail]]]
    ) -> tuple[dict[str, Any], list[Optional[LaneTail]]]:
        episode_index, step, reset = self._positions(epoch, chunk)
        out, tails = build_chunk(
            self.episodes,
            self.read_steps,
            self._lengths,
            episode_index,
            step,
            reset,
            history=self.history,
            stride=self.stride,
            keys=self.keys,
            specs=self._specs,
            on_read=self._counters.add_read,
            tails=tails,
        )
        out["chunk_index"], out["epoch"] = chunk, epoch
        return out, tails

    def iter_chunks(self, epoch: int, start_chunk: int = 0) -> Iterator[dict[str, Any]]:
        """Chunks start_chunk .. num_chunks(epoch)-1 in order, `prefetch` of them read ahead in a thread."""
        total = self.num_chunks(epoch)
        if not 0 <= start_chunk <= total:
            raise ValueError(f"start_chunk {start_chunk} is outside epoch {epoch}'s 0..{total} chunks")
        return self._iter(epoch, start_chunk, total)

    def _iter(self, epoch: int, start_chunk: int, total: int) -> Iterator[dict[str, Any]]:
        planned = self._in_order(epoch, start_chunk, total)
        with closing(prefetched(planned, self.prefetch, self._counters.add_wait)) as chunks:
            for chunk in chunks:
                self._counters.add_chunk()
                yield chunk

    def _in_order(self, epoch: int, start_chunk: int, total: int) -> Iterator[dict[str, Any]]:
        """The plain loop the prefetch thread runs; lane tails carry from one chunk to the next."""
        tails = None
        for c in range(start_chunk, total):
            chunk, tails = self._read_chunk(epoch, c, tails)
            yield chunk

    def cursor(self, epoch: int, chunk: int) -> Cursor:
        """Per lane, the (episode_id, step) at the start of `chunk`: saved in checkpoints, checked on resume."""
        episode_index, step, _ = self._positions(epoch, chunk)
        return [
            (self._ids[e], int(k)) if e >= 0 else (None, -1) for e, k in zip(episode_index[:, 0], step[:, 0])
        ]

    def check_cursor(self, epoch: int, chunk: int, saved: Cursor) -> None:
        """Raise if a checkpoint's cursor is not where this replay's plan puts `chunk`."""
        planned = self.cursor(epoch, chunk)
        saved = [(e, int(k)) for e, k in saved]
        if len(saved) != len(planned):
            raise ReplayError(
                f"checkpoint cursor has {len(saved)} lanes but the replay has {len(planned)}: "
                "resume with the batch_size the checkpoint was written with"
            )
        wrong = [b for b, (a, p) in enumerate(zip(saved, planned)) if a != p]
        if wrong:
            b = wrong[0]
            raise ReplayError(
                f"checkpoint cursor at epoch {epoch} chunk {chunk} lane {b} is {saved[b]} but the replay plan has "
                f"{planned[b]}: the store, seed, bptt_length or world size changed since the checkpoint; "
                "resume with the same ones"
            )

    def stats(self) -> dict[str, float]:
        """chunks yielded, steps_read, read_calls, read_s (time in read_steps), data_wait_s (consumer waiting)."""
        return self._counters.snapshot()


class OrderedReplay(_ChunkSource):
    """Each of this rank's B lanes streams whole episodes in the seeded order of `assign_lanes`."""

    _plan_epoch: Optional[int] = None  # the epoch whose lane plan is loaded

    def lanes(self, epoch: int) -> list[list[int]]:
        """This rank's lanes: episode indices in stream order."""
        self._load_plan(epoch)
        return [indices.tolist() for indices in self._lane_indices]

    def num_chunks(self, epoch: int) -> int:
        """ceil(longest lane over ALL ranks / L): the same on every rank, so none waits at the epoch's end."""
        self._load_plan(epoch)
        return math.ceil(self._longest_lane / self.bptt_length)

    def _load_plan(self, epoch: int) -> None:
        if self._plan_epoch == epoch:
            return
        plan = assign_lanes(self._ids, self._lengths, self.seed, epoch, self.world_size, self.batch_size)
        self._longest_lane = max(int(self._lengths[lane].sum()) for rank_lanes in plan for lane in rank_lanes)
        self._lane_indices = [np.asarray(lane, dtype=np.int64) for lane in plan[self.rank]]
        self._lane_ends = [np.cumsum(self._lengths[indices]) for indices in self._lane_indices]  # stream offsets
        self._plan_epoch = epoch

    def _positions(self, epoch: int, chunk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self._load_plan(epoch)
        stream = chunk * self.bptt_length + np.arange(self.bptt_length)  # (L,) lane stream offsets
        episode_index = np.full((self.batch_size, self.bptt_length), -1, dtype=np.int64)
        step = np.full((self.batch_size, self.bptt_length), -1, dtype=np.int64)
        for b, (indices, ends) in enumerate(zip(self._lane_indices, self._lane_ends)):
            j = np.searchsorted(ends, stream, side="right")  # (L,) which episode of the lane; the seek
            real = j < len(ends)
            episode_index[b, real] = indices[j[real]]
            step[b, real] = stream[real] - (ends[j[real]] - self._lengths[indices[j[real]]])
        return episode_index, step, step == 0


class RandomWindows(_ChunkSource):
    """For `sequential_training: false`: each lane of each chunk is an L-step window of a random episode.

    Windows start uniformly over all window starts of this rank's episodes
    (an episode shorter than L gives one window, padded). The rank's episodes
    are its lane of `assign_lanes(..., batch_size=1)`, so ranks stay disjoint.
    Each window restarts the memory (is_first at its first position), so the
    memory learns nothing across windows. Chunk c is a pure function of
    (seed, epoch, c, rank), so a resume is exact. An epoch has about as many
    steps as the store: ceil(total steps / (world_size * B * L)) chunks.
    """

    _owned_epoch: Optional[int] = None  # the epoch whose owned episodes are loaded

    def owned_episodes(self, epoch: int) -> list[int]:
        """Indices of the episodes this rank samples from in `epoch`."""
        self._load_owned(epoch)
        return self._owned.tolist()

    def num_chunks(self, epoch: int) -> int:
        return math.ceil(int(self._lengths.sum()) / (self.world_size * self.batch_size * self.bptt_length))

    def _load_owned(self, epoch: int) -> None:
        if self._owned_epoch == epoch:
            return
        plan = assign_lanes(self._ids, self._lengths, self.seed, epoch, self.world_size, 1)
        self._owned = np.asarray(plan[self.rank][0], dtype=np.int64)
        starts = np.maximum(self._lengths[self._owned] - self.bptt_length, 0) + 1  # window starts per episode
        self._start_ends = np.cumsum(starts)
        self._owned_epoch = epoch

    def _positions(self, epoch: int, chunk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self._load_owned(epoch)
        shape = (self.batch_size, self.bptt_length)
        if len(self._owned) == 0:  # more ranks than episodes: this rank only pads
            empty = np.full(shape, -1, dtype=np.int64)
            return empty, empty.copy(), np.zeros(shape, bool)
        rng = np.random.default_rng(seed_words(self.seed, epoch, RANDOM_WINDOWS_STREAM, chunk, self.rank))
        draw = rng.integers(self._start_ends[-1], size=self.batch_size)  # (B,) over all window starts
        j = np.searchsorted(self._start_ends, draw, side="right")  # (B,) which owned episode
        first_start = self._start_ends[j] - (np.maximum(self._lengths[self._owned[j]] - self.bptt_length, 0) + 1)
        step = (draw - first_start)[:, None] + np.arange(self.bptt_length)  # (B, L)
        real = step < self._lengths[self._owned[j]][:, None]
        episode_index = np.where(real, self._owned[j][:, None], -1)
        reset = np.zeros(shape, bool)
        reset[:, 0] = True
        return episode_index, np.where(real, step, -1), reset
