"""manifest.json: read it, create it; in formats 1 and 2 also add finalised shards to it under a lock.

Format 3 (f1.datasets.commit_log) writes manifest.json once, when the store
is created (create-only: of two writers creating a store at once, one
creates it and the other checks it), and never rewrites it: it holds the
format, the spec and the collection config; the shards are in the log and
the checkpoints (f1.datasets.snapshot). `read_manifest` still returns every
shard as an entry, whatever the format, for callers that want them all.

Formats 1 and 2, kept to read old stores and to bench them: several worker processes (on several machines, over a shared filesystem that
honours flock) append to one manifest, so every change is a read-modify-write
under `fcntl.flock` on manifest.lock, written to a temp file and renamed over
the old one: a reader without the lock sees the old manifest or the new one,
never half of one.

On object storage (an S3Path store) there is neither flock nor rename: the
manifest is created with If-None-Match: * and replaced with If-Match on the
ETag it was read with; a writer that loses the race reads it again and
retries, so concurrent workers never lose each other's entries.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import random
import time
from pathlib import Path
from typing import Any, Iterator

from f1.datasets.create_only import create_only
from f1.datasets.s3 import ConflictError, S3Path
from f1.datasets.schema import FORMAT_VERSION, LOCK_NAME, MANIFEST_NAME, StoreError, StoreSpec

CONFLICT_RETRIES = 200  # conditional manifest writes lost in a row before a writer gives up


@contextlib.contextmanager
def manifest_lock(store_dir: Path) -> Iterator[None]:
    """Exclusive lock over the manifest, shared by every process that writes this store."""
    with open(store_dir / LOCK_NAME, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_header(store_dir: Path | S3Path) -> dict[str, Any]:
    """manifest.json parsed (format 3: no shards in it); a StoreError naming the file when it is missing, unreadable or too new."""
    return parse_manifest(store_dir, manifest_text(store_dir))


def read_manifest(store_dir: Path | S3Path) -> dict[str, Any]:
    """The manifest with every shard's entry under "shards", whatever the format. Format 3 reads the whole
    episode index for it: open_store (which reads only the columns asked for) is the way for large stores."""
    manifest = read_header(store_dir)
    if int(manifest["format_version"]) >= 3:
        from f1.datasets.snapshot import load_snapshot

        manifest["shards"] = load_snapshot(store_dir, manifest).shard_entries()
    return manifest


def manifest_text(store_dir: Path | S3Path) -> str:
    if isinstance(store_dir, S3Path):
        found = (store_dir / MANIFEST_NAME).read_with_etag()
        if found is None:
            raise StoreError(f"{store_dir} is not an f1 store (no {MANIFEST_NAME}); point at a store written by `f1 collect`")
        return found[0].decode()
    path = Path(store_dir) / MANIFEST_NAME
    if not Path(store_dir).is_dir():
        raise StoreError(f"{store_dir} is not a directory; point at a store written by `f1 collect`")
    if not path.is_file():
        raise StoreError(f"{store_dir} is not an f1 store (no {MANIFEST_NAME}); point at a store written by `f1 collect`")
    return path.read_text()


def parse_manifest(store_dir: Path | S3Path, text: str) -> dict[str, Any]:
    path = store_dir / MANIFEST_NAME
    try:
        manifest = json.loads(text)
        version = int(manifest["format_version"])
        StoreSpec.from_dict(manifest["spec"])
        if version < 3:
            manifest["shards"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"{path} is not a valid manifest ({type(exc).__name__}: {exc}); restore it or re-collect the store") from None
    if version > FORMAT_VERSION:
        raise StoreError(
            f"{path} has format version {version}, newer than this f1 reads ({FORMAT_VERSION}); upgrade f1"
        )
    return manifest


def write_manifest(store_dir: Path, manifest: dict[str, Any]) -> None:
    tmp = store_dir / f"{MANIFEST_NAME}.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps(manifest, indent=1))
        os.replace(tmp, store_dir / MANIFEST_NAME)
    finally:
        tmp.unlink(missing_ok=True)  # only left when the write failed (a full disk): the old manifest stands


def new_manifest(fmt: str, spec: StoreSpec, collection_config: dict[str, Any], version: int = FORMAT_VERSION) -> dict[str, Any]:
    manifest = {
        "format_version": version,
        "format": fmt,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "spec": spec.to_dict(),
        "collection_config": collection_config,
    }
    return manifest if version >= 3 else {**manifest, "shards": []}


def open_or_create_manifest(
    store_dir: Path | S3Path, fmt: str, spec: StoreSpec, collection_config: dict[str, Any]
) -> dict[str, Any]:
    """Create a format-3 store's manifest.json, or check that the existing store holds the same format and spec
    (and is format 3: an older store is upgraded first, by `f1 dataset upgrade`)."""
    manifest = new_manifest(fmt, spec, collection_config)
    if not isinstance(store_dir, S3Path):
        store_dir.mkdir(parents=True, exist_ok=True)
    # Only a new store is created: trying create_only on every open would leave its temporary file behind
    # whenever a writer is killed inside the call (a Ray actor lost at the start of a task).
    if not (store_dir / MANIFEST_NAME).exists():
        try:
            if create_only(store_dir / MANIFEST_NAME, json.dumps(manifest, indent=1).encode()):
                return manifest
        except StoreError:  # there with other content: another run's store (or the same asked again), checked below
            pass
    manifest = read_header(store_dir)
    check_format(store_dir, manifest, fmt)
    have = StoreSpec.from_dict(manifest["spec"])
    if have != spec:
        diff = {k: (v, spec.to_dict()[k]) for k, v in have.to_dict().items() if spec.to_dict()[k] != v}
        raise StoreError(
            f"{store_dir / MANIFEST_NAME} was written with a different spec (field: (store, asked) = {diff}); "
            "use the store's settings or a new store directory"
        )
    if int(manifest["format_version"]) < 3:
        raise StoreError(
            f"{store_dir} is a format-{manifest['format_version']} store; run `f1 dataset upgrade {store_dir}` "
            "to write into it (in place, crash-safe), or write to a new store"
        )
    return manifest


def check_format(store_dir: Path, manifest: dict[str, Any], fmt: str) -> None:
    if manifest.get("format") != fmt:
        raise StoreError(
            f"{store_dir / MANIFEST_NAME} holds {manifest.get('format')} shards, not {fmt}; "
            f"write {fmt} to a new store or convert with `f1 dataset convert`"
        )


class DuplicateEpisodes(StoreError):
    """The shard holds episodes the manifest already lists (a task that ran twice): it is not added."""


def check_new_episodes(manifest: dict[str, Any], entry: dict[str, Any]) -> None:
    """DuplicateEpisodes if the entry's shard holds an episode the manifest already lists (its name must be new too)."""
    names = {s["name"] for s in manifest["shards"]}
    assert entry["name"] not in names, ("shard already in the manifest", entry["name"])
    listed = {e["id"] for s in manifest["shards"] for e in s["episodes"]}
    twice = sorted(listed.intersection(e["id"] for e in entry["episodes"]))
    if twice:
        raise DuplicateEpisodes(f"{entry['name']} holds {len(twice)} episode(s) already listed, e.g. {twice[0]}")


def add_shard(store_dir: Path | S3Path, entry: dict[str, Any]) -> None:
    """The format-1/2 commit: append one finalised shard's entry to manifest.json; its name must be new, and
    DuplicateEpisodes if an episode is listed already. Writers no longer call it (they write format 3);
    it builds old stores for the tests and is the baseline of bench/bench_store_scale.py."""
    if isinstance(store_dir, S3Path):
        _add_shard_s3(store_dir, entry)
        return
    with manifest_lock(store_dir):
        manifest = read_header(store_dir)
        assert int(manifest["format_version"]) < 3, ("add_shard is the format-1/2 commit; format 3 commits records", store_dir)
        check_new_episodes(manifest, entry)
        manifest["shards"].append(entry)
        write_manifest(store_dir, manifest)


def _add_shard_s3(store_dir: S3Path, entry: dict[str, Any]) -> None:
    """Read-modify-write with If-Match on the ETag read; on 412 (another worker won) read again and retry."""
    key = store_dir / MANIFEST_NAME
    for attempt in range(CONFLICT_RETRIES):
        found = key.read_with_etag()
        if found is None:
            raise StoreError(f"{key} disappeared while this run wrote the store; re-create the store")
        manifest = parse_manifest(store_dir, found[0].decode())
        check_new_episodes(manifest, entry)  # re-checked on every retry: another worker may just have listed them
        manifest["shards"].append(entry)
        try:
            key.put(json.dumps(manifest, indent=1).encode(), mode={"e_tag": found[1]})
            return
        except ConflictError:
            time.sleep(random.uniform(0, min(0.5, 0.01 * 2**min(attempt, 6))))  # jittered backoff, then re-read
    raise StoreError(f"{key}: {CONFLICT_RETRIES} conditional writes in a row lost to other writers; rerun to resume")


def shard_files(path: Path) -> list[Path]:
    """A shard's files in a fixed order: the file itself, or a Zarr directory's files sorted by relative path."""
    if path.is_dir():
        return sorted((p for p in path.rglob("*") if p.is_file()), key=lambda p: p.relative_to(path).as_posix())
    return [path]


def shard_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in shard_files(path))


def shard_checksum(path: Path) -> str:
    """sha256 over the shard's files (for a directory: each relative path, then its bytes, in sorted order)."""
    h = hashlib.sha256()
    for p in shard_files(path):
        if path.is_dir():
            h.update(p.relative_to(path).as_posix().encode() + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return f"sha256:{h.hexdigest()}"
