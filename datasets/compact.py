"""Compaction (format 3): fold commit records into a new checkpoint, and clear what no reader needs any more.

    f1 dataset compact STORE [--retention-minutes 15]   # by hand; `f1 collect` also runs it every COMPACT_EVERY records and at the end

One compaction:
1. takes the newest checkpoint n (or none) and, per worker, the records after the seq it folded;
2. writes them as a new index part (Parquet), merged with the newest small parts so a store keeps a few
   parts of geometric sizes (at most MAX_PART_EPISODES rows each) rather than one per compaction;
3. creates checkpoint n + 1 (create-only) listing the parts and the new per-worker seqs. If another
   compactor created n + 1 first, it starts again from that one; its own part is left for step 4.

Nothing is lost to a race: a record that appears after step 1 has a seq above what n + 1 folds, so
readers still take it from the log, and two compactors can only both fail to create the same name.

4. cleanup: a checkpoint is deleted once a later one has existed for the retention period (the newest
   never is); a log chunk folder once a checkpoint that has existed for the retention period folded it,
   and every remaining one too; an index part once no checkpoint lists it (the newest checkpoint names
   the parts merged away within the retention period, which older ones may list) and it is older than
   the retention period (a compactor in step 2 may be about to list it). A reader takes far less than
   the retention period between reading a checkpoint and listing the records after it, so it never
   finds them gone; a training run pins records, not a checkpoint (f1.datasets.snapshot).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from f1.datasets import commit_log
from f1.datasets.create_only import child_names, modified_times
from f1.datasets.episode_index import EntriesPart, ParquetPart, concat_parts, delete_part, write_part
from f1.datasets.s3 import S3Path, store_path
from f1.datasets.schema import CHECKPOINT_DIR, INDEX_DIR, LOG_DIR, RECORDS_PER_CHUNK, StoreError
from f1.datasets.store_checkpoint import checkpoint_path, load_checkpoint, newest_checkpoint, write_checkpoint

COMPACT_EVERY = 100  # records a writer commits between the compactions it runs
MAX_PART_EPISODES = 50_000  # an index part is not merged further past this many episodes
DEFAULT_RETENTION_S = 900.0
RACE_RETRIES = 20  # checkpoint names lost in a row to other compactors before giving up


@dataclass
class Compaction:
    checkpoint: int | None
    """The checkpoint now newest (None: the store has no records yet)."""
    folded: int
    """Records this compaction folded (0: there was nothing new)."""
    deleted: int
    """Files and folders the cleanup removed."""


def compact(store: Path | S3Path, retention_s: float = DEFAULT_RETENTION_S) -> Compaction:
    for _ in range(RACE_RETRIES):
        base = newest_checkpoint(store)
        done = dict(base["folded"]) if base else {}
        folded, entries = dict(done), []
        try:
            for worker in commit_log.writers(store):
                for seq, entry in commit_log.records_after(store, worker, done.get(worker, -1)):
                    entries.append(entry)
                    folded[worker] = seq
        except FileNotFoundError:  # another compactor's cleanup removed records folded since `base`: start from its checkpoint
            continue
        if not entries:
            return Compaction(base["n"] if base else None, 0, cleanup(store, retention_s))
        parts = list(base["parts"]) if base else []
        merging, rows = [EntriesPart(entries)], sum(len(e["episodes"]) for e in entries)
        while parts and parts[-1]["episodes"] <= rows and parts[-1]["episodes"] + rows <= MAX_PART_EPISODES:
            last = parts.pop()
            merging.insert(0, ParquetPart(store, last))
            rows += last["episodes"]
        now = time.time()
        retired = [r for r in (base.get("retired", []) if base else []) if now - r["since"] < retention_s]
        retired += [{"name": p.name, "since": now} for p in merging if isinstance(p, ParquetPart)]
        n = base["n"] + 1 if base else 0
        if write_checkpoint(store, n, parts + [write_part(store, concat_parts(merging))], folded, retired):
            return Compaction(n, len(entries), cleanup(store, retention_s))
    raise StoreError(f"{store}: {RACE_RETRIES} compactions in a row lost to other compactors; rerun `f1 dataset compact {store}`")


def _remove(path: Path | S3Path) -> None:
    if isinstance(path, S3Path):
        for rel, _ in list(path.list()):
            (path / rel).unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def cleanup(store: Path | S3Path, retention_s: float) -> int:
    """Delete checkpoints, folded log folders and index parts past the retention period; how many went."""
    now, deleted = time.time(), 0
    times = {int(name[:-5]): t for name, t in modified_times(store / CHECKPOINT_DIR).items() if name[:-5].isdigit()}
    numbers = sorted(times)
    if not numbers:
        return 0
    kept = [n for n, successor in zip(numbers[:-1], numbers[1:]) if now - times[successor] < retention_s] + [numbers[-1]]
    for n in sorted(set(numbers) - set(kept)):
        checkpoint_path(store, n).unlink(missing_ok=True)
        deleted += 1
    # `folded` never decreases from one checkpoint to the next, so what the oldest kept one folded, every
    # kept one did; it may go once a checkpoint that folded it has stood for the retention period.
    if any(now - times[n] >= retention_s for n in kept):
        floor = load_checkpoint(store, kept[0])
        for worker, seq in (floor or {"folded": {}})["folded"].items():
            for chunk in child_names(store / LOG_DIR / worker):
                if chunk.isdigit() and (int(chunk) + 1) * RECORDS_PER_CHUNK - 1 <= seq:
                    _remove(store / LOG_DIR / worker / chunk)
                    deleted += 1
    newest = load_checkpoint(store, numbers[-1]) or {"parts": [], "retired": []}
    live = {p["name"] for p in newest["parts"]} | {r["name"] for r in newest.get("retired", [])}
    parts = modified_times(store / INDEX_DIR)
    for name in {n.split(".")[0] for n in parts} - live:
        if all(now - t >= retention_s for n, t in parts.items() if n.split(".")[0] == name):
            delete_part(store, name)
            deleted += 1
    return deleted


def main(store: str, retention_minutes: float) -> None:
    from f1.datasets.manifest import read_header

    store_dir = store_path(store)
    header = read_header(store_dir)
    if int(header["format_version"]) < 3:
        raise StoreError(f"{store_dir} is a format-{header['format_version']} store; run `f1 dataset upgrade {store}` first")
    start = time.perf_counter()
    result = compact(store_dir, retention_minutes * 60)
    print(
        f"{store_dir}: checkpoint {result.checkpoint}, {result.folded} record(s) folded, "
        f"{result.deleted} old file(s) or folder(s) removed, {time.perf_counter() - start:.2f} s"
    )

