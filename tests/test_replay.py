"""Ordered replay and random windows for truncated BPTT, on in-memory episodes (DESIGN §2, §4)."""

from __future__ import annotations

import gc
import threading
from dataclasses import dataclass

import numpy as np
import pytest

from f1.datasets.replay import OrderedReplay, RandomWindows, assign_lanes
from f1.datasets.replay_chunk import ReplayError

WINDOW_KEYS = ("wrist_rgb", "head_rgb", "state", "action")


@dataclass(frozen=True)
class Episode:
    episode_id: str
    length: int


class MemoryStore:
    """Episodes held as numpy arrays; every value is nonzero and encodes (episode, step), so zeros mean 'not read'."""

    def __init__(self, lengths: list[int], image: int = 4) -> None:
        self.episodes = [Episode(f"ep{i:03d}", n) for i, n in enumerate(lengths)]
        self.arrays = {}
        for i, n in enumerate(lengths):
            k = np.arange(n)
            state = np.zeros((n, 5), np.float32)
            state[:, 0], state[:, 1] = i + 1, k + 1
            action = np.zeros((n, 3), np.float32)
            action[:, 0], action[:, 2] = k + 1, i + 1
            self.arrays[f"ep{i:03d}"] = {
                "wrist_rgb": np.broadcast_to(((i * 37 + k) % 250 + 1).astype(np.uint8)[:, None, None, None], (n, image, image, 3)).copy(),
                "head_rgb": np.broadcast_to(((i * 11 + 3 * k) % 250 + 1).astype(np.uint8)[:, None, None, None], (n, image, image, 3)).copy(),
                "state": state,
                "action": action,
                "is_first": k == 0,
                "is_last": k == n - 1,
                "is_terminal": np.zeros(n, bool),
            }
        self.calls: list[tuple[str, int, int, tuple[str, ...]]] = []
        self._lock = threading.Lock()

    def read_steps(self, info, start, stop, keys=None):
        with self._lock:
            self.calls.append((info.episode_id, start, stop, tuple(keys)))
        data = self.arrays[info.episode_id]
        assert 0 <= start < stop <= len(data["state"]), (info.episode_id, start, stop)
        return {key: data[key][start:stop].copy() for key in keys}


LENGTHS = [9, 3, 14, 1, 6, 11, 2, 7, 5, 20, 4, 8, 3, 12]


def make(cls=OrderedReplay, lengths=LENGTHS, **kwargs):
    store = MemoryStore(lengths)
    args = dict(batch_size=3, bptt_length=5, history=4, stride=1, rank=0, world_size=1, seed=7, prefetch=2)
    args.update(kwargs)
    return store, cls(store.episodes, store.read_steps, **args)


def assert_chunks_equal(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b), (len(a), len(b))
    for x, y in zip(a, b):
        assert x.keys() == y.keys(), (x.keys(), y.keys())
        for key in x:
            assert np.array_equal(x[key], y[key]), (key, x["chunk_index"], y["chunk_index"])


def check_chunk(chunk: dict, store: MemoryStore, history: int, stride: int) -> None:
    """Every valid position, its history, its next frame and its masks agree with the episodes; the rest is zero.

    One read serves a run of one episode, so with stride > 1 the steps between
    history frames of that episode are read too: the expected filled set is
    the hull of each episode's needed window positions.
    """
    context = (history - 1) * stride
    n_lanes, length = chunk["valid"].shape
    assert chunk["wrist_rgb"].shape[:2] == (n_lanes, context + length + 1), chunk["wrist_rgb"].shape
    for b in range(n_lanes):
        needed_by_episode: dict[int, set[int]] = {}
        for p in range(length):
            e, k = chunk["episode_index"][b, p], chunk["step"][b, p]
            if not chunk["valid"][b, p]:
                assert e == -1 and k == -1 and not chunk["target_valid"][b, p] and not chunk["is_first"][b, p], (b, p)
                continue
            episode = store.episodes[e]
            needed = needed_by_episode.setdefault(int(e), set())
            data = store.arrays[episode.episode_id]
            assert chunk["is_last"][b, p] == (k == episode.length - 1), (b, p, k)
            assert chunk["target_valid"][b, p] == (k < episode.length - 1), (b, p, k)
            for key in WINDOW_KEYS:
                assert np.array_equal(chunk[key][b, context + p], data[key][k]), (key, b, p, e, k)
            if chunk["target_valid"][b, p]:
                needed.add(context + p + 1)
                for key in WINDOW_KEYS:
                    assert np.array_equal(chunk[key][b, context + p + 1], data[key][k + 1]), ("next", key, b, p)
            for j in range(history):
                want_step = k - (history - 1 - j) * stride
                w = chunk["history_index"][b, p, j]
                needed.add(int(w))
                assert chunk["history_pad"][b, p, j] == (want_step < 0), (b, p, j, k)
                # history repeats step 0 before the start and never reaches into another episode
                assert np.array_equal(chunk["state"][b, w], data["state"][max(want_step, 0)]), (b, p, j, w)
                assert np.array_equal(chunk["wrist_rgb"][b, w], data["wrist_rgb"][max(want_step, 0)]), (b, p, j)
        needed = {w for ws in needed_by_episode.values() for w in range(min(ws), max(ws) + 1)}
        filled = {w for w in range(chunk["state"].shape[1]) if chunk["state"][b, w, 0] != 0}
        assert filled == needed, ("window positions read vs needed", b, sorted(filled), sorted(needed))
        for key in WINDOW_KEYS:
            unread = [w for w in range(chunk[key].shape[1]) if w not in needed]
            assert not chunk[key][b, unread].any(), (key, b, unread)


# --- lane assignment ---------------------------------------------------------------------------------------


def test_assign_lanes_is_deterministic_covering_and_balanced():
    lengths = np.random.default_rng(0).integers(1, 60, size=57).tolist()
    ids = [f"e{i}" for i in range(len(lengths))]
    plan = assign_lanes(ids, lengths, seed=3, epoch=1, world_size=3, batch_size=4)
    assert plan == assign_lanes(ids, lengths, seed=3, epoch=1, world_size=3, batch_size=4)
    assert len(plan) == 3 and all(len(rank) == 4 for rank in plan)
    flat = [e for rank in plan for lane in rank for e in lane]
    assert sorted(flat) == list(range(len(lengths))), "every episode exactly once, ranks disjoint"
    loads = [sum(lengths[e] for e in lane) for rank in plan for lane in rank]
    assert max(loads) - min(loads) <= max(lengths), (loads, max(lengths))


def test_assign_lanes_equal_lengths_split_evenly_and_ignore_input_order():
    ids = [f"e{i:02d}" for i in range(23)]
    plan = assign_lanes(ids, [10] * 23, seed=0, epoch=0, world_size=2, batch_size=3)
    counts = [len(lane) for rank in plan for lane in rank]
    assert max(counts) - min(counts) <= 1, counts
    order = np.random.default_rng(1).permutation(23)
    shuffled_ids = [ids[i] for i in order]
    replan = assign_lanes(shuffled_ids, [10] * 23, seed=0, epoch=0, world_size=2, batch_size=3)
    as_ids = lambda p, names: [[[names[e] for e in lane] for lane in rank] for rank in p]  # noqa: E731
    assert as_ids(plan, ids) == as_ids(replan, shuffled_ids)


def test_assign_lanes_epochs_and_seeds_change_the_order():
    ids = [f"e{i}" for i in range(30)]
    lengths = [5] * 30
    base = assign_lanes(ids, lengths, seed=0, epoch=0, world_size=1, batch_size=2)
    assert base != assign_lanes(ids, lengths, seed=0, epoch=1, world_size=1, batch_size=2)
    assert base != assign_lanes(ids, lengths, seed=1, epoch=0, world_size=1, batch_size=2)


def test_assign_lanes_with_fewer_episodes_than_lanes():
    plan = assign_lanes(["a", "b", "c"], [4, 2, 9], seed=0, epoch=0, world_size=2, batch_size=4)
    lanes = [lane for rank in plan for lane in rank]
    assert sorted(e for lane in lanes for e in lane) == [0, 1, 2]
    assert sum(1 for lane in lanes if not lane) == 5, lanes


# --- ordered replay ----------------------------------------------------------------------------------------


def test_all_ranks_agree_on_num_chunks_and_read_disjoint_episodes():
    world = 3
    read_by_rank, counts = [], []
    for rank in range(world):
        store, replay = make(rank=rank, world_size=world, batch_size=2)
        counts.append(replay.num_chunks(0))
        for _ in replay.iter_chunks(0):
            pass
        probe = store.calls[0]  # the shape probe reads step 0 of episode 0 on every rank
        assert probe[1:3] == (0, 1), probe
        read_by_rank.append({c[0] for c in store.calls[1:]})
        planned = {store.episodes[e].episode_id for lane in replay.lanes(0) for e in lane}
        assert read_by_rank[-1] == planned, (rank, read_by_rank[-1], planned)
    assert len(set(counts)) == 1, counts
    assert set().union(*read_by_rank) == {e.episode_id for e in make()[0].episodes}
    for a in range(world):
        for b in range(a + 1, world):
            assert not read_by_rank[a] & read_by_rank[b], (a, b)


@pytest.mark.parametrize("history,stride,length", [(1, 1, 5), (4, 1, 5), (3, 2, 4), (2, 3, 7)])
def test_lanes_stream_whole_episodes_across_chunk_borders(history, stride, length):
    store, replay = make(history=history, stride=stride, bptt_length=length, batch_size=3)
    chunks = list(replay.iter_chunks(1))
    assert len(chunks) == replay.num_chunks(1)
    longest = max(sum(LENGTHS[e] for e in lane) for lane in replay.lanes(1))
    assert len(chunks) == -(-longest // length), (len(chunks), longest)
    for chunk in chunks:
        check_chunk(chunk, store, history, stride)
    for b, lane in enumerate(replay.lanes(1)):
        stream = [(int(c["episode_index"][b, p]), int(c["step"][b, p])) for c in chunks for p in range(length)]
        want = [(e, k) for e in lane for k in range(LENGTHS[e])]
        assert stream[: len(want)] == want, (b, stream[: len(want)], want)
        assert all(pair == (-1, -1) for pair in stream[len(want) :]), ("lane padding only at the end", b)
        firsts = [bool(c["is_first"][b, p]) for c in chunks for p in range(length)]
        assert firsts == [k == 0 for _, k in stream[: len(want)]] + [False] * (len(stream) - len(want)), b


def test_seek_gives_the_same_chunks_as_skipping():
    _, replay = make(bptt_length=4)
    full = list(replay.iter_chunks(2))
    for start in [0, 1, 3, len(full) - 1, len(full)]:
        _, fresh = make(bptt_length=4)
        assert_chunks_equal(list(fresh.iter_chunks(2, start_chunk=start)), full[start:])
    with pytest.raises(ValueError, match="start_chunk"):
        replay.iter_chunks(2, start_chunk=len(full) + 1)


@pytest.mark.parametrize("cls", [OrderedReplay, RandomWindows])
def test_prefetch_does_not_change_the_sequence(cls):
    sequences = []
    for prefetch in (0, 1, 4):
        _, replay = make(cls, prefetch=prefetch, history=3, stride=2)
        sequences.append(list(replay.iter_chunks(0)))
    assert_chunks_equal(sequences[0], sequences[1])
    assert_chunks_equal(sequences[0], sequences[2])


def test_reads_cover_each_step_once_at_most_one_call_per_segment_and_only_the_asked_keys():
    store, replay = make(keys=("state", "is_first", "is_last"), history=2, stride=2, prefetch=0)
    store.calls.clear()
    all_calls = []
    for chunk in replay.iter_chunks(0):
        assert "wrist_rgb" not in chunk and "head_rgb" not in chunk and "state" in chunk
        segments = sum(len(set(chunk["episode_index"][b][chunk["valid"][b]].tolist())) for b in range(3))
        calls, store.calls[:] = list(store.calls), []
        assert len(calls) <= segments, (chunk["chunk_index"], calls, segments)
        assert all(c[3] == ("state", "is_first", "is_last") for c in calls), calls
        all_calls += calls
    # Lane tails carry the overlap (history, next frame) between chunks: an epoch reads every step exactly once.
    read = {e.episode_id: [] for e in store.episodes}
    for episode_id, start, stop, _ in all_calls:
        read[episode_id] += range(start, stop)
    assert all(sorted(read[e.episode_id]) == list(range(e.length)) for e in store.episodes), read
    assert replay.stats()["steps_read"] == sum(LENGTHS), replay.stats()


def test_cursor_names_each_lanes_position_and_guards_resume():
    _, replay = make(bptt_length=6)
    chunks = list(replay.iter_chunks(0))
    c = 2
    cursor = replay.cursor(0, c)
    for b, (episode_id, step) in enumerate(cursor):
        e = chunks[c]["episode_index"][b, 0]
        assert (episode_id, step) == ((replay.episodes[e].episode_id, chunks[c]["step"][b, 0]) if e >= 0 else (None, -1))
    replay.check_cursor(0, c, cursor)
    moved = list(cursor)
    moved[1] = (moved[1][0], moved[1][1] + 1)
    with pytest.raises(ReplayError, match="lane 1"):
        replay.check_cursor(0, c, moved)


def test_stats_count_chunks_steps_and_wait():
    _, replay = make()
    chunks = list(replay.iter_chunks(0))
    stats = replay.stats()
    assert stats["chunks"] == len(chunks)
    assert stats["steps_read"] >= sum(int(c["valid"].sum()) for c in chunks), stats
    assert stats["read_s"] > 0 and stats["data_wait_s"] >= 0, stats


# --- random windows ----------------------------------------------------------------------------------------


def test_random_windows_are_deterministic_rank_disjoint_and_well_formed():
    history, stride, world = 3, 1, 2
    owned = []
    for rank in range(world):
        store, windows = make(RandomWindows, rank=rank, world_size=world, history=history, stride=stride)
        _, again = make(RandomWindows, rank=rank, world_size=world, history=history, stride=stride)
        chunks = list(windows.iter_chunks(3))
        assert len(chunks) == windows.num_chunks(3) == -(-sum(LENGTHS) // (world * 3 * 5))
        assert_chunks_equal(chunks, list(again.iter_chunks(3)))
        assert_chunks_equal(chunks[2:], list(again.iter_chunks(3, start_chunk=2)))
        owned.append(set(windows.owned_episodes(3)))
        for chunk in chunks:
            check_chunk(chunk, store, history, stride)
            used = set(chunk["episode_index"][chunk["valid"]].tolist())
            assert used <= owned[-1], (used, owned[-1])
            assert np.array_equal(chunk["is_first"], chunk["valid"] & (np.arange(5) == 0)), chunk["is_first"]
            for b in range(3):  # one episode per window, consecutive steps
                steps = chunk["step"][b][chunk["valid"][b]]
                assert np.array_equal(steps, steps[0] + np.arange(len(steps))), steps
    assert not owned[0] & owned[1] and owned[0] | owned[1] == set(range(len(LENGTHS))), owned
    _, other_epoch = make(RandomWindows, rank=0, world_size=world)
    _, same = make(RandomWindows, rank=0, world_size=world)
    assert not np.array_equal(next(other_epoch.iter_chunks(4))["episode_index"], next(same.iter_chunks(5))["episode_index"])


# --- errors and the background thread ----------------------------------------------------------------------


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "f1-replay-prefetch" and t.is_alive()]


def test_reader_error_in_the_thread_surfaces_in_the_main_thread():
    store = MemoryStore(LENGTHS)
    calls = []

    def failing_read(info, start, stop, keys):
        calls.append(info)
        if len(calls) == 6:
            raise OSError("shard-0-0.zarr: disk gone")
        return store.read_steps(info, start, stop, keys)

    replay = OrderedReplay(store.episodes, failing_read, batch_size=2, bptt_length=3, history=2, stride=1, prefetch=4)
    with pytest.raises(OSError, match="disk gone"):
        for _ in replay.iter_chunks(0):
            pass
    assert not prefetch_threads()


def test_closing_early_stops_the_thread():
    _, replay = make(prefetch=2, bptt_length=2)
    chunks = replay.iter_chunks(0)
    next(chunks)
    assert prefetch_threads()
    chunks.close()
    assert not prefetch_threads()
    dropped = replay.iter_chunks(0)
    next(dropped)
    del dropped
    gc.collect()
    assert not prefetch_threads()


def test_store_markers_that_disagree_with_lengths_raise():
    store = MemoryStore([4, 5])
    store.arrays["ep001"]["is_first"][2] = True
    replay = OrderedReplay(store.episodes, store.read_steps, batch_size=2, bptt_length=5, history=1, stride=1)
    with pytest.raises(ReplayError, match="ep001: is_first at step 2"):
        list(replay.iter_chunks(0))


def test_no_episodes_is_a_user_error():
    with pytest.raises(ReplayError, match="no episodes"):
        OrderedReplay([], lambda *a: {}, batch_size=1, bptt_length=1, history=1, stride=1)


# --- a real on-disk store ----------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Numcodecs codecs are not in the Zarr version 3 specification")
@pytest.mark.parametrize("fmt", ["zarr", "webdataset"])
def test_replay_of_a_real_store_matches_the_same_episodes_in_memory(tmp_path, fmt):
    from f1.datasets import EpisodeMeta, StoreSpec, open_store, open_writer

    spec = StoreSpec(image_hw=(8, 8), state_dim=8, action_dim=8)
    source = MemoryStore([7, 3, 9, 5, 4], image=8)
    with open_writer(tmp_path / "store", fmt, spec, "n0w0", {}, episodes_per_shard=2) as writer:
        for i, episode in enumerate(source.episodes):
            arrays = dict(source.arrays[episode.episode_id])
            arrays["state"] = np.pad(arrays["state"], ((0, 0), (0, 3)))
            arrays["action"] = np.pad(arrays["action"], ((0, 0), (0, 5)))
            arrays["action"][-1] = 0  # the last step's action is padding
            source.arrays[episode.episode_id] = arrays
            writer.add_episode(arrays, EpisodeMeta(episode.episode_id, i, 0, {}, episode.length))
    store = open_store(tmp_path / "store")
    args = dict(batch_size=2, bptt_length=4, history=3, stride=2, seed=5, keys=(*WINDOW_KEYS, "is_first", "is_last"))
    on_disk = list(OrderedReplay(store.episodes, store.read_steps, **args).iter_chunks(0))
    in_memory = list(OrderedReplay(source.episodes, source.read_steps, **args).iter_chunks(0))
    assert_chunks_equal(on_disk, in_memory)
    for chunk in on_disk:
        check_chunk(chunk, source, history=3, stride=2)
