"""Build one [B, L] replay chunk from per-position (episode, step) pairs: window arrays, history indices, masks.

A lane's chunk positions p = 0..L-1 hold (episode_index, step) pairs; within
a lane, consecutive positions of one episode are consecutive steps, and the
lane switches episodes only at an episode's end, onto the next one's step 0.
Window arrays span C + L + 1 positions per lane, C = (h-1)*s: window
position C+p is chunk position p, the C before it serve the history, the
one after is the next-frame target of p = L-1. Only the steps some position
needs are read, at most one `read_steps` call per run of one episode in a
lane (so with stride > 1 the steps between history frames of that episode
come along in the same call); the rest stays zero.

Reading is bound by image decoding, and consecutive chunks of a lane overlap
by C+1 steps (history before, next frame after), so each lane keeps its last
read (a `LaneTail`) and the next chunk reads only the steps past it: an
ordered epoch then reads every step from disk once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from f1.shared.errors import UserError

# Per-step booleans: read per chunk position (B, L), not per window position.
MARKER_KEYS = ("is_first", "is_last", "is_terminal")

ReadSteps = Callable[[Any, int, int, Sequence[str]], Mapping[str, np.ndarray]]
KeySpecs = dict[str, tuple[tuple[int, ...], np.dtype]]


@dataclass(frozen=True)
class LaneTail:
    """A lane's last read: steps [lo, hi) of episode `episode` (an index), every key."""

    episode: int
    lo: int
    hi: int
    data: dict[str, np.ndarray]


class ReplayError(UserError):
    """The store or the checkpoint does not fit the replay plan."""


def probe_specs(episode: Any, read_steps: ReadSteps, window_keys: Sequence[str]) -> KeySpecs:
    """Per-step shape and dtype of each window key, from step 0 of one episode (one tiny read)."""
    if not window_keys:
        return {}
    data = read_steps(episode, 0, 1, tuple(window_keys))
    return {key: (tuple(data[key].shape[1:]), data[key].dtype) for key in window_keys}


def lane_runs(episode_index: np.ndarray, step: np.ndarray) -> list[list[tuple[int, int]]]:
    """Per lane, the [p0, p1) position ranges that are one episode's consecutive steps."""
    valid = episode_index >= 0  # (B, L)
    continues = np.zeros_like(valid)  # position p continues the run of p-1
    continues[:, 1:] = valid[:, 1:] & valid[:, :-1] & (episode_index[:, 1:] == episode_index[:, :-1])
    continues[:, 1:] &= step[:, 1:] == step[:, :-1] + 1
    starts = valid & ~continues
    ends = valid.copy()  # position p is the last of its run
    ends[:, :-1] &= ~continues[:, 1:]
    runs = []
    for b in range(episode_index.shape[0]):
        run_starts, run_ends = np.flatnonzero(starts[b]), np.flatnonzero(ends[b]) + 1
        assert len(run_starts) == len(run_ends), (b, run_starts, run_ends)
        runs.append(list(zip(run_starts.tolist(), run_ends.tolist())))
    return runs


def build_chunk(
    episodes: Sequence[Any],
    read_steps: ReadSteps,
    lengths: np.ndarray,
    episode_index: np.ndarray,
    step: np.ndarray,
    reset: np.ndarray,
    *,
    history: int,
    stride: int,
    keys: Sequence[str],
    specs: KeySpecs,
    on_read: Callable[[int, float], None],
    tails: Optional[list[Optional[LaneTail]]] = None,
) -> tuple[dict[str, np.ndarray], list[Optional[LaneTail]]]:
    """Read and assemble one chunk; returns it and each lane's tail for the next chunk's `tails`.

    episode_index, step: (B, L) int64, -1 for padding; reset: (B, L) bool marks
    where the memory restarts (the caller's rule), `is_first` is reset on valid
    positions. `on_read(steps, seconds)` is told of each disk read. `tails`
    (the previous chunk's, or None) lets a lane skip steps it already holds.
    """
    n_lanes, length = episode_index.shape
    context = (history - 1) * stride  # C
    window_length = context + length + 1
    valid = episode_index >= 0  # (B, L)
    n_steps = np.where(valid, lengths[np.maximum(episode_index, 0)], 0)  # (B, L) length of each position's episode
    assert np.all(step[valid] < n_steps[valid]), ("steps beyond their episode", step[valid], n_steps[valid])

    window = {key: np.zeros((n_lanes, window_length) + shape, dtype) for key, (shape, dtype) in specs.items()}
    markers = {key: np.zeros((n_lanes, length), bool) for key in keys if key in MARKER_KEYS}
    new_tails: list[Optional[LaneTail]] = [None] * n_lanes
    for b, runs in enumerate(lane_runs(episode_index, step)):
        for i, (p0, p1) in enumerate(runs):
            e, k0 = int(episode_index[b, p0]), int(step[b, p0])
            if i > 0:  # the window layout relies on whole episodes following each other
                prev_e, prev_last = int(episode_index[b, p0 - 1]), int(step[b, p0 - 1])
                assert k0 == 0 and p0 == runs[i - 1][1] and prev_last == lengths[prev_e] - 1, (
                    "a lane may switch episodes only from one's last step to the next one's step 0",
                    b, p0, prev_e, prev_last, e, k0,
                )
            k1 = k0 + (p1 - p0)  # steps [k0, k1) sit at positions [p0, p1)
            lo, hi = max(0, k0 - context), min(int(lengths[e]), k1 + 1)  # plus history before, next frame after
            tail = tails[b] if tails is not None and i == 0 else None
            data = _read_run(episodes, read_steps, e, lo, hi, tuple(keys), tail, on_read)
            new_tails[b] = LaneTail(e, lo, hi, data)
            w0 = context + p0 - (k0 - lo)  # window position of step lo
            for key in window:
                arr = data[key]
                assert arr.shape == (hi - lo,) + specs[key][0] and arr.dtype == specs[key][1], (
                    key, episodes[e].episode_id, lo, hi, arr.shape, arr.dtype, specs[key],
                )
                window[key][b, w0 : w0 + hi - lo] = arr
            for key in markers:
                markers[key][b, p0:p1] = data[key][k0 - lo : k1 - lo]

    is_last = valid & (step == n_steps - 1)  # (B, L)
    _check_markers(episodes, markers, episode_index, step, valid, is_last)

    positions = np.arange(length)  # (L,)
    offsets = (np.arange(history) - (history - 1)) * stride  # (h,) oldest first, the last is 0
    history_step = step[..., None] + offsets  # (B, L, h)
    history_pad = (history_step < 0) | ~valid[..., None]  # (B, L, h) before the episode's start (or padding)
    # A history step k' of the position p at step k sits at window position C + p - (k - k');
    # steps before 0 repeat step 0 (DESIGN §2), so history never leaves its episode.
    history_index = context + positions[None, :, None] + np.maximum(history_step, 0) - step[..., None]
    history_index = np.where(valid[..., None], history_index, context + positions[None, :, None])  # (B, L, h)

    chunk = dict(window)
    chunk.update(
        is_first=valid & reset,
        is_last=is_last,
        valid=valid,
        target_valid=valid & ~is_last,  # the next frame, window position C+p+1, exists
        history_index=history_index.astype(np.int64),
        history_pad=history_pad,
        episode_index=episode_index.astype(np.int64),
        step=step.astype(np.int64),
    )
    if "is_terminal" in markers:
        chunk["is_terminal"] = markers["is_terminal"]
    return chunk, new_tails


def _read_run(
    episodes: Sequence[Any],
    read_steps: ReadSteps,
    e: int,
    lo: int,
    hi: int,
    keys: tuple[str, ...],
    tail: Optional[LaneTail],
    on_read: Callable[[int, float], None],
) -> dict[str, np.ndarray]:
    """Steps [lo, hi) of episode e: the part the tail holds is reused, only the rest is read."""
    reuse_until = lo
    if tail is not None and tail.episode == e and tail.lo <= lo < tail.hi:
        reuse_until = min(hi, tail.hi)
    kept = {key: tail.data[key][lo - tail.lo : reuse_until - tail.lo] for key in keys} if reuse_until > lo else None
    if reuse_until == hi:
        return kept
    start = time.perf_counter()
    fresh = read_steps(episodes[e], reuse_until, hi, keys)
    on_read(hi - reuse_until, time.perf_counter() - start)
    if kept is None:
        return fresh
    return {key: np.concatenate([kept[key], fresh[key]]) for key in keys}


def _check_markers(
    episodes: Sequence[Any],
    markers: dict[str, np.ndarray],
    episode_index: np.ndarray,
    step: np.ndarray,
    valid: np.ndarray,
    is_last: np.ndarray,
) -> None:
    """The store's is_first/is_last must agree with its episode lengths, or the plan replays garbage."""
    expected = {"is_first": valid & (step == 0), "is_last": is_last}
    for key, want in expected.items():
        if key not in markers:
            continue
        bad = np.argwhere(markers[key] != want)
        if len(bad):
            b, p = bad[0]
            name = episodes[episode_index[b, p]].episode_id
            raise ReplayError(
                f"store episode {name}: {key} at step {step[b, p]} disagrees with the episode's length; "
                "run `f1 dataset verify <store>` and re-collect the broken shard"
            )
