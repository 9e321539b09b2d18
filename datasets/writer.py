"""EpisodeWriter: episodes in, finalised shards out, one writer per worker process.

    with open_writer(store, "zarr", spec, worker="n0w3", collection_config=cfg,
                     episodes_per_shard=8, background=True) as writer:
        writer.add_episode(arrays, meta)   # validated now, encoded and written in the background
    # leaving the block finalises the last, partial shard

A shard is written as `shards/<worker>/<chunk>/shard-<worker>-<seq>.<zarr|tar>.tmp`,
renamed when complete, and only then entered in the store by its commit
record (f1.datasets.commit_log: one small create-only file, nothing
rewritten, no lock shared with other workers), so a reader never sees part
of one and a writer killed mid-shard leaves only a `.tmp` behind, or a
shard no record lists. The next writer of the same worker removes those
leftovers and continues the seq after the highest one it finds, so a resumed
run never overwrites a shard. A write that fails (a full disk) deletes the
unfinished shard at once, so its space is free again and the finished shards
stay as they are. A shard holding an episode the store already listed when
the writer opened, or that the writer wrote itself (the same scene block
run twice, as a retried Ray task may), is deleted instead of committed:
`dropped_episodes` names its episodes. Two writers committing the same
episode at once both succeed; readers keep the one in the lower-named shard
(f1.datasets.snapshot). Every COMPACT_EVERY commits the writer folds the
log into a new checkpoint (f1.datasets.compact).

A store on object storage (`s3://bucket/prefix`, an S3Path) has no rename:
the shard is built the same way in a local staging folder, then uploaded
under its final key (each file of a Zarr shard, the tar and its index;
multipart when large), and only then committed by a create-only PUT
(If-None-Match: *). A writer killed mid-upload leaves objects no record
lists; readers never see them, `f1 dataset verify` reports them, and the
next writer of the same worker deletes them and continues after their seq,
so it never lists a half-written shard.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from f1.datasets import commit_log
from f1.datasets.codecs import AUTO, resolve_codec
from f1.datasets.compact import COMPACT_EVERY, compact
from f1.datasets.create_only import child_names
from f1.datasets.episode_index import id_hashes
from f1.datasets.manifest import (
    check_format,
    open_or_create_manifest,
    read_header,
    shard_bytes,
    shard_checksum,
    shard_files,
)
from f1.datasets.s3 import S3Path, store_path
from f1.datasets.schema import (
    FORMATS,
    MANIFEST_NAME,
    SHARDS_DIR,
    SHARDS_PER_CHUNK,
    TMP_SUFFIX,
    WORKER_RE,
    EpisodeMeta,
    StoreError,
    StoreSpec,
    parse_shard_name,
    shard_name,
    shard_relpath,
    validate_episode,
)
from f1.datasets.snapshot import load_snapshot
from f1.datasets.store_checkpoint import newest_checkpoint
from f1.datasets.wds_shard import TarShardWriter
from f1.datasets.zarr_shard import ZarrShardWriter

_SHARD_WRITERS = {"zarr": ZarrShardWriter, "webdataset": TarShardWriter}
_CLOSE, _FINISH_SHARD = object(), object()
QUEUE_EPISODES = 2  # background queue bound: the simulator runs at most this many episodes ahead of the disk
log = logging.getLogger("f1.datasets.writer")


class EpisodeWriter:
    """Writes one worker's episodes into shards of `episodes_per_shard` episodes. Use `open_writer`."""

    def __init__(
        self,
        store_dir: Path | S3Path,
        fmt: str,
        spec: StoreSpec,
        worker: str,
        collection_config: dict[str, Any],
        episodes_per_shard: int,
        background: bool,
    ):
        self.fmt, self.spec, self.worker = fmt, spec, worker
        self.episodes_per_shard = episodes_per_shard
        # On object storage, shards are built in a local staging folder (self.store_dir) and uploaded whole.
        self.remote: S3Path | None = store_dir if isinstance(store_dir, S3Path) else None
        self.store_dir = Path(tempfile.mkdtemp(prefix=f"f1-staging-{worker}-")) if self.remote else store_dir
        self.store = store_dir
        header = open_or_create_manifest(store_dir, fmt, spec, collection_config)
        snapshot = load_snapshot(store_dir, header)
        # The commit-time duplicate check: the store's episodes when this writer opened, plus its own.
        self._listed_hashes = np.sort(snapshot.episode_column("id_hash"))
        self._own_hashes: set[int] = set()
        self.next_seq = self._clean_leftovers()
        self.commits = 0
        self.shards_written: list[str] = []
        self.dropped_episodes: list[str] = []
        """Episodes of shards dropped because the store already listed some of their episodes."""
        self._shard: ZarrShardWriter | TarShardWriter | None = None
        self._tmp: Path | None = None
        self._metas: list[EpisodeMeta] = []
        self._closed = False
        self._error: BaseException | None = None
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        if background:
            self._queue = queue.Queue(maxsize=QUEUE_EPISODES)
            self._thread = threading.Thread(target=self._run, name=f"f1-writer-{worker}", daemon=True)
            self._thread.start()

    def _clean_leftovers(self) -> int:
        """Remove this worker's temp shards and shards no record lists; return the next seq.

        A worker commits its shards in seq order, so only shards past its highest record (folded into a
        checkpoint or still in the log) can be unlisted; only the chunk folders that can hold them are listed."""
        checkpoint = newest_checkpoint(self.store)
        listed = max(commit_log.highest_seq(self.store, self.worker), checkpoint["folded"].get(self.worker, -1) if checkpoint else -1)
        highest = listed
        folder = self.store / SHARDS_DIR / self.worker
        for chunk in child_names(folder):
            if not chunk.isdigit() or (int(chunk) + 1) * SHARDS_PER_CHUNK - 1 <= listed:
                continue
            for name, remove in self._chunk_files(folder / chunk):
                parsed = parse_shard_name(name)
                if not parsed or parsed[0] != self.worker:
                    continue
                highest = max(highest, parsed[1])
                if TMP_SUFFIX in parsed[3] or parsed[1] > listed:
                    remove()  # a temp shard, or one finished but killed before its record: nothing refers to it
        return highest + 1

    @staticmethod
    def _chunk_files(folder: Path | S3Path) -> list[tuple[str, Any]]:
        """(file or object name, a function deleting it) for everything in one shard chunk folder."""
        if isinstance(folder, S3Path):
            return [(rel.split("/", 1)[0], lambda k=folder / rel: k.unlink(missing_ok=True)) for rel, _ in list(folder.list())]
        return [(p.name, lambda p=p: shutil.rmtree(p) if p.is_dir() else p.unlink()) for p in folder.iterdir()]

    # -- the caller's side ---------------------------------------------------------------

    def add_episode(self, arrays: dict[str, np.ndarray], meta: EpisodeMeta) -> None:
        """Validate now (SchemaError names the key and step); write now or hand to the background thread.

        In background mode the writer keeps `arrays` until written: do not modify them afterwards.
        """
        assert not self._closed, ("add_episode after close", self.worker)
        validate_episode(arrays, meta, self.spec)
        self._put((arrays, meta))

    def finish_shard(self) -> None:
        """Finalise the current shard now, however many episodes it has (none: nothing happens)."""
        self._put(_FINISH_SHARD)

    def close(self) -> None:
        """Finalise the last partial shard, stop the background thread, re-raise its error if it had one."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(_CLOSE)
            self._thread.join()
        elif self._error is None:
            self._guarded(self._safely, self._finish)
        if self.remote is not None:
            shutil.rmtree(self.store_dir, ignore_errors=True)  # the staging folder
        if self._error is not None:
            raise self._error

    def __enter__(self) -> "EpisodeWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _put(self, item: Any) -> None:
        if self._error is not None:
            raise self._error
        if self._queue is None:
            self._safely(self._handle, item)
        else:
            self._queue.put(item)

    # -- the writing side (the background thread when there is one) ----------------------

    def _run(self) -> None:
        while (item := self._queue.get()) is not _CLOSE:
            if self._error is None:  # after an error, drain so the caller never blocks on a full queue
                self._guarded(self._safely, self._handle, item)
        if self._error is None:
            self._guarded(self._safely, self._finish)

    def _guarded(self, fn, *args) -> None:
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            self._error = exc

    def _safely(self, fn, *args) -> None:
        """Run a write step; if it fails, delete the unfinished shard (it never reached the manifest)."""
        try:
            fn(*args)
        except BaseException:
            if self._tmp is not None:  # a shard was begun (perhaps only its folder, if creating it failed)
                if self._shard is not None:
                    self._shard.discard()
                for leftover in self._tmp.parent.glob(self._tmp.name + "*"):  # the shard, sidecars (...tar.tmp.idx.npy)
                    shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink(missing_ok=True)
                self._shard, self._tmp, self._metas = None, None, []
            raise

    def _handle(self, item: Any) -> None:
        if item is _FINISH_SHARD:
            self._finish()
            return
        arrays, meta = item
        if self._shard is None:
            name = shard_name(self.worker, self.next_seq, self.fmt)
            self._tmp = self.store_dir / (shard_relpath(name) + TMP_SUFFIX)
            self._tmp.parent.mkdir(parents=True, exist_ok=True)
            self._shard = _SHARD_WRITERS[self.fmt](self._tmp, self.spec)
            self.next_seq += 1
        self._shard.add_episode(arrays, meta)
        self._metas.append(meta)
        if len(self._metas) >= self.episodes_per_shard:
            self._finish()

    def _finish(self) -> None:
        """Close the shard, checksum it, rename it into place, then commit it (upload it first on object storage)."""
        if self._shard is None:
            return
        sidecars = self._shard.finish()
        tmp, final = self._tmp, self._tmp.with_name(self._tmp.name[: -len(TMP_SUFFIX)])
        entry = {
            "name": final.name,
            "path": shard_relpath(final.name),
            "format": self.fmt,
            "episodes": [
                # randomization: since format version 2 the store holds every episode's whole meta
                # (WebDataset samples no longer carry episode.json, so that all have the same members).
                {"id": m.episode_id, "length": m.length, "seed": m.seed, "scene_id": m.scene_id, "randomization": m.randomization}
                for m in self._metas
            ],
            "steps": sum(m.length for m in self._metas),
            "bytes": shard_bytes(tmp),
            "checksum": shard_checksum(tmp),
        }
        finals = [final.with_name(s.name.replace(tmp.name, final.name)) for s in sidecars]
        for sidecar, renamed in zip(sidecars, finals):  # shard-...tar.tmp.idx.npy -> shard-...tar.idx.npy, before the shard
            os.replace(sidecar, renamed)
        os.rename(tmp, final)
        metas, self._shard, self._tmp, self._metas = self._metas, None, None, []
        hashes = id_hashes(m.episode_id for m in metas)
        dropped = self._listed(hashes)
        uploaded: list[S3Path] = []
        try:
            if not dropped and self.remote is not None:
                self._upload(final, finals, entry["path"], uploaded)
            if not dropped:
                commit_log.commit(self.store, entry)
        except BaseException:
            self._remove_local(final, finals)  # not committed: no reader trusts it, and its space is needed (a full disk)
            for key in uploaded:  # best effort; what stays is unlisted, and the next writer of this worker deletes it
                try:
                    key.unlink(missing_ok=True)
                except Exception:  # noqa: BLE001
                    pass
            raise
        if self.remote is not None or dropped:
            self._remove_local(final, finals)
        if dropped:  # a second run of the same episodes: dropped, not an error
            self.dropped_episodes += [m.episode_id for m in metas]
            return
        self._own_hashes.update(int(h) for h in hashes)
        self.shards_written.append(final.name)
        self.commits += 1
        if self.commits % COMPACT_EVERY == 0:
            self._compact()

    def _listed(self, hashes: np.ndarray) -> bool:
        """Whether any of these episodes was in the store when this writer opened, or was written by it since."""
        listed = self._listed_hashes
        at = np.minimum(np.searchsorted(listed, hashes), len(listed) - 1)
        return (len(listed) > 0 and bool(np.any(listed[at] == hashes))) or any(int(h) in self._own_hashes for h in hashes)

    def _compact(self) -> None:
        """Fold the log into a checkpoint; a failure here costs readers a longer log, never a commit."""
        try:
            compact(self.store)
        except Exception:  # noqa: BLE001
            log.warning("compaction of %s failed; the next one folds these records too", self.store, exc_info=True)

    @staticmethod
    def _remove_local(final: Path, sidecars: list[Path]) -> None:
        shutil.rmtree(final, ignore_errors=True) if final.is_dir() else final.unlink(missing_ok=True)
        for sidecar in sidecars:
            sidecar.unlink(missing_ok=True)

    def _upload(self, final: Path, sidecars: list[Path], relpath: str, uploaded: list[S3Path]) -> None:
        """Upload the staged shard under its final keys, sidecars first; `uploaded` collects the keys written."""
        folder = relpath.rsplit("/", 1)[0]
        if final.is_dir():  # a Zarr shard: each of its files under <shard>/<relative path>
            files = [(p, f"{relpath}/{p.relative_to(final).as_posix()}") for p in shard_files(final)]
        else:
            files = [(final, relpath)]
        for local, key in [(s, f"{folder}/{s.name}") for s in sidecars] + files:
            (self.remote / key).upload(local)
            uploaded.append(self.remote / key)


def open_writer(
    store_dir: str | Path | S3Path,
    fmt: str,
    spec: StoreSpec,
    worker: str,
    collection_config: dict[str, Any],
    episodes_per_shard: int,
    image_codec: str | None = None,
    background: bool = False,
) -> EpisodeWriter:
    """A writer for one worker of a new or existing store; StoreError if the store's format or spec differ.

    `image_codec` (or, when None, `spec.image_codec`) 'auto' takes the store's codec when the
    store exists, else the format's default (f1.datasets.codecs).
    """
    store_dir = store_path(store_dir)
    if fmt not in FORMATS:
        raise StoreError(f"unknown store format {fmt!r}; use one of {list(FORMATS)}")
    if not WORKER_RE.match(worker):
        raise StoreError(f"worker name {worker!r} must be letters and digits only, like 'n0w3'")
    if episodes_per_shard < 1:
        raise StoreError(f"episodes_per_shard={episodes_per_shard} must be at least 1")
    spec = resolved_spec(store_dir, fmt, spec, image_codec)
    return EpisodeWriter(store_dir, fmt, spec, worker, collection_config, episodes_per_shard, background)


def resolved_spec(store_dir: str | Path | S3Path, fmt: str, spec: StoreSpec, image_codec: str | None = None) -> StoreSpec:
    """`spec` with a concrete codec: `image_codec` (or, when None, spec's) 'auto' takes an existing
    store's codec, else the format's default. StoreError if the existing store holds another format."""
    store_dir = store_path(store_dir)
    codec = image_codec if image_codec is not None else spec.image_codec
    if (store_dir / MANIFEST_NAME).exists():
        existing = read_header(store_dir)
        check_format(store_dir, existing, fmt)
        if codec == AUTO:
            codec = existing["spec"]["image_codec"]
    return spec.with_codec(resolve_codec(fmt, codec))
