"""Write a token store (token_store.py): the data shards it lacks, split over ranks and local workers.

    f1 dataset tokenize STORE --tokenizer TOK [--out DIR] [--workers N] [--rank R --world-size W]

The work is the data shards in name order: rank r of W takes every W-th of
them, from the r-th, skips those with a token shard already, and its N local
worker processes take the rest one at a time. A token shard is written under `.tmp-<name>+<host>+<pid>`
and renamed into place when whole: a writer killed mid-way leaves only its
temporary folder, which the next writer on that host removes once the pid is
gone, and the shard is written again. The teacher builds a missing store with
the same code (its ranks are the writers), before its first step.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import psutil
import torch

from f1.datasets.reader import EpisodeInfo, StoreReader, open_store
from f1.datasets.s3 import is_s3, store_path
from f1.shared.errors import UserError
from f1.train.models.tokenizer import FSQTokenizer
from f1.train.offline.token_cache import encode_episode, episode_frames
from f1.train.offline.token_store import (
    EPISODES_FILE,
    SHARDS_DIR,
    TMP_PREFIX,
    temporary_name,
    claim_meta,
    committed_shards,
    default_location,
    expected_meta,
    shard_folder,
    store_cameras,
    token_dtype,
    tokenizer_key,
)

@dataclass
class Built:
    """What one writer did: token shards written by it, and the frames it encoded."""

    shards: int = 0
    episodes: int = 0
    frames: int = 0
    seconds: float = 0.0


def pending_shards(store: StoreReader, root: Path, rank: int = 0, world_size: int = 1) -> list[tuple[str, list[EpisodeInfo]]]:
    """(token shard folder, its episodes in the data shard's order) for each data shard of rank's share not
    tokenised yet. The share (every world_size-th data shard in name order, from the rank-th) does not depend
    on what is done already, so ranks that look at different moments still split the work without a gap."""
    by_shard: OrderedDict[str, list[EpisodeInfo]] = OrderedDict()
    for info in sorted(store.episodes, key=lambda i: (i.shard, i.start)):
        by_shard.setdefault(info.shard, []).append(info)
    done = committed_shards(root)
    todo = []
    for shard, infos in list(by_shard.items())[rank::world_size]:
        folder = shard_folder(shard)
        if folder not in done:
            todo.append((folder, infos))
            continue
        if [e["id"] for e in done[folder]] != [i.episode_id for i in infos]:
            raise UserError(
                f"token shard {root / SHARDS_DIR / folder} holds other episodes than data shard {shard} "
                f"(the store was rewritten); delete {root} and tokenise again"
            )
    return todo


def leftover_owner(path: Path) -> Optional[tuple[str, int]]:
    """(host, pid) of a writer's temporary folder or file, from its name; None for any other name."""
    parts = path.name[len(TMP_PREFIX) :].rsplit("+", 2)
    return (parts[1], int(parts[2])) if path.name.startswith(TMP_PREFIX) and len(parts) == 3 and parts[2].isdigit() else None


def remove_dead_leftovers(root: Path) -> int:
    """Remove the temporary shards of writers that died on this host; returns how many."""
    host, removed = socket.gethostname(), 0
    for path in sorted(root.rglob(TMP_PREFIX + "*")):
        owner = leftover_owner(path)
        if owner is None or owner[0] != host or psutil.pid_exists(owner[1]):
            continue  # another host's (cannot be checked from here) or a live writer's
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        removed += 1
    return removed


def write_shard(root: Path, folder: str, infos: Sequence[EpisodeInfo], store: StoreReader, tokenizer: FSQTokenizer) -> int:
    """Encode one data shard's episodes into root/shards/<folder>/; returns the frames encoded (0: already there).

    Arrays are preallocated .npy files filled episode by episode, so a writer holds one episode at a time.
    """
    final = root / SHARDS_DIR / folder
    if (final / EPISODES_FILE).is_file():
        return 0  # another writer finished it meanwhile
    tmp = final.parent / temporary_name(final.name)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cameras = store_cameras(store)
    total, n, size = sum(i.length for i in infos), tokenizer.n_tokens, tokenizer.image_size
    arrays = {
        f"{camera}_tokens": np.lib.format.open_memmap(tmp / f"{camera}_tokens.npy", "w+", token_dtype(tokenizer), (total, n))
        for camera in cameras
    }
    arrays["wrist_frames"] = np.lib.format.open_memmap(tmp / "wrist_frames.npy", "w+", np.uint8, (total, 3, size, size))
    entries, row = [], 0
    for info in infos:
        episode = store.read_episode(info, keys=[f"{camera}_rgb" for camera in cameras])
        for camera in cameras:
            images = torch.from_numpy(episode[f"{camera}_rgb"])  # (N,H,W,3) uint8
            arrays[f"{camera}_tokens"][row : row + info.length] = encode_episode(tokenizer, images).numpy()  # (N,n)
            if camera == "wrist":
                arrays["wrist_frames"][row : row + info.length] = episode_frames(tokenizer, images).numpy()  # (N,3,S,S)
        entries.append({"id": info.episode_id, "start": row, "length": info.length})
        row += info.length
    for array in arrays.values():
        array.flush()
    del arrays
    (tmp / EPISODES_FILE).write_text(json.dumps({"data_shard": infos[0].shard, "episodes": entries}, indent=1))
    try:
        os.rename(tmp, final)  # the commit: the shard appears whole or not at all
    except OSError:
        if not (final / EPISODES_FILE).is_file():
            raise
        shutil.rmtree(tmp)  # another writer committed the same shard first: same bytes, keep theirs
        return 0
    return total * len(cameras)


def plan(store: StoreReader, tokenizer: FSQTokenizer, root: Path, rank: int, world_size: int, key: Optional[str] = None) -> list:
    """Claim (or check) the folder for this tokenizer, clear dead writers' leftovers, and return this rank's
    pending shards."""
    claim_meta(root, expected_meta(tokenizer, key or tokenizer_key(tokenizer), store_cameras(store)))
    remove_dead_leftovers(root)
    return pending_shards(store, root, rank, world_size)


def tally(done: Iterable[tuple[Sequence[EpisodeInfo], int]], episodes: int, progress: bool, desc: str) -> Built:
    """Count (episodes of a shard, frames its writer encoded) pairs as they come, behind a progress bar."""
    from tqdm import tqdm

    start, built = time.perf_counter(), Built()
    with tqdm(total=episodes, desc=desc, unit="episode", disable=not progress or not episodes, dynamic_ncols=True) as bar:
        for infos, frames in done:
            built.shards += frames > 0
            built.episodes += len(infos) if frames else 0
            built.frames += frames
            bar.update(len(infos))
    built.seconds = time.perf_counter() - start
    return built


def build(
    store: StoreReader,
    tokenizer: FSQTokenizer,
    root: Path,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    desc: str = "tokenising",
) -> Built:
    """Tokenise this rank's share of the store's untokenised shards into `root`, in this process."""
    mine = plan(store, tokenizer, root, rank, world_size)
    done = ((infos, write_shard(root, folder, infos, store, tokenizer)) for folder, infos in mine)
    return tally(done, sum(len(infos) for _, infos in mine), progress, desc)


# ------------------------------------------------------------------ `f1 dataset tokenize`, with local workers

_worker: dict[str, Any] = {}


def _start_worker(store_location: str, tokenizer_dir: str, devices: Any, threads: int) -> None:
    """A pool process: its own store reader, tokenizer and device (one GPU each when there are GPUs)."""
    torch.set_num_threads(threads)
    device = devices.get()
    _worker.update(store=open_store(store_path(store_location)), tokenizer=FSQTokenizer.load(tokenizer_dir).to(device).eval())


def _write_in_worker(root: str, folder: str, episode_indices: list[int]) -> int:
    store = _worker["store"]
    return write_shard(Path(root), folder, [store.episodes[i] for i in episode_indices], store, _worker["tokenizer"])


def ranks_from_environment() -> tuple[int, int]:
    """(rank, world size) from torchrun's RANK/WORLD_SIZE or Slurm's SLURM_PROCID/SLURM_NTASKS; (0, 1) without."""
    for rank_key, size_key in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        if rank_key in os.environ and size_key in os.environ:
            return int(os.environ[rank_key]), int(os.environ[size_key])
    return 0, 1


def main(
    store_location: str,
    tokenizer_dir: Path,
    out: Optional[str] = None,
    workers: int = 1,
    rank: Optional[int] = None,
    world_size: Optional[int] = None,
    device: Optional[str] = None,
) -> Built:
    """Check the inputs, then tokenise this rank's share with `workers` processes; one summary line."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    if rank is None or world_size is None:
        env_rank, env_size = ranks_from_environment()
        rank, world_size = (env_rank if rank is None else rank), (env_size if world_size is None else world_size)
    if not 0 <= rank < world_size:
        raise UserError(f"--rank {rank} is not below --world-size {world_size}; give 0 <= rank < world size")
    if out is not None and is_s3(out):
        raise UserError(f"--out {out}: a token store is read by memory map and needs a filesystem; pass a local or shared folder")
    store = open_store(store_path(store_location))
    if not store.episodes:
        raise UserError(f"store {store_location} has no episodes; collect some with `f1 collect --out {store_location}`")
    tokenizer = FSQTokenizer.load(tokenizer_dir)
    key = tokenizer_key(tokenizer)
    root = Path(out) if out else default_location(store.store_dir, key)
    if workers == 1:
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        built = build(store, tokenizer.to(device).eval(), root, rank, world_size)
    else:
        mine = plan(store, tokenizer, root, rank, world_size, key)
        context = multiprocessing.get_context("spawn")  # never fork a process that holds torch threads
        devices = context.Manager().Queue()
        gpus = torch.cuda.device_count()
        for w in range(workers):
            devices.put(device or (f"cuda:{w % gpus}" if gpus else "cpu"))
        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(workers, context, _start_worker, (str(store.store_dir), str(tokenizer_dir), devices, threads)) as pool:
            jobs = {pool.submit(_write_in_worker, str(root), folder, [i.index for i in infos]): infos for folder, infos in mine}
            built = tally(((jobs[job], job.result()) for job in as_completed(jobs)), sum(map(len, jobs.values())), True, "tokenising")
    print(
        f"token store {root}: {len(store.episodes)} episodes; this writer (rank {rank} of {world_size}) "
        f"encoded {built.episodes} episodes ({built.frames} frames, {built.shards} shards) in {built.seconds:.1f} s"
    )
    return built
