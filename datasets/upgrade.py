"""`f1 dataset upgrade STORE`: turn a format-1, -2 or -3 store into the current format in place, crash-safe.

A format-3 store has the current layout already; format 4 only allows per-step camera keys (which the
old store's spec does not list), so its upgrade is step 2 alone: the header replaced with version 4.
A format-1 or -2 store takes both steps:

Two steps, each leaving a store that reads:
1. an index part and a checkpoint holding every shard the manifest lists (shards stay where they are:
   each entry's `path` is its old top-level name); a format-1/2 reader ignores these files, so a store
   killed here still reads as before, and a rerun writes a newer checkpoint over the same manifest;
2. manifest.json replaced whole (rename locally; one PUT with If-Match on object storage) by the
   format-3 header, the old one kept as manifest.v<N>.json. Killed before the replace, the store is
   the old one; after, the new one.

The upgrade holds the old format's manifest lock (locally) or checks the manifest's ETag (object
storage), so an old f1 still writing the store cannot add a shard the upgrade would miss.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from f1.datasets.create_only import replace_file
from f1.datasets.episode_index import EntriesPart, concat_parts, write_part
from f1.datasets.manifest import manifest_text, parse_manifest, manifest_lock, write_manifest
from f1.datasets.s3 import ConflictError, S3Path, store_path
from f1.datasets.schema import FORMAT_VERSION, MANIFEST_NAME, StoreError, parse_shard_name
from f1.datasets.store_checkpoint import newest_checkpoint, write_checkpoint


def write_upgrade_checkpoint(store: Path | S3Path, manifest: dict[str, Any]) -> int:
    """Step 1: a checkpoint of every shard `manifest` lists; its number."""
    entries = [{**e, "path": e.get("path", e["name"])} for e in manifest["shards"]]
    folded: dict[str, int] = {}
    for e in entries:
        worker, seq, _, _ = parse_shard_name(e["name"])
        folded[worker] = max(folded.get(worker, -1), seq)
    part = write_part(store, concat_parts([EntriesPart(entries)]))
    base = newest_checkpoint(store)
    n = base["n"] + 1 if base else 0
    if not write_checkpoint(store, n, [part], folded):
        raise StoreError(f"{store}: another upgrade or compaction ran at the same time; rerun `f1 dataset upgrade {store}`")
    return n


def _header(manifest: dict[str, Any]) -> bytes:
    header = {k: v for k, v in manifest.items() if k != "shards"}
    return json.dumps({**header, "format_version": FORMAT_VERSION}, indent=1).encode()


def upgrade(store: Path | S3Path) -> int | None:
    """Upgrade in place; the old version, or None when the store was already the current format."""
    if isinstance(store, S3Path):
        found = (store / MANIFEST_NAME).read_with_etag()
        if found is None:
            raise StoreError(f"{store} is not an f1 store (no {MANIFEST_NAME}); point at a store written by `f1 collect`")
        manifest = parse_manifest(store, found[0].decode())
        version = int(manifest["format_version"])
        if version >= FORMAT_VERSION:
            return None
        if version < 3:
            write_upgrade_checkpoint(store, manifest)
        (store / f"manifest.v{version}.json").put(found[0])
        try:
            (store / MANIFEST_NAME).put(_header(manifest), mode={"e_tag": found[1]})
        except ConflictError:
            raise StoreError(f"{store / MANIFEST_NAME} changed during the upgrade (a writer of the old format); rerun when it is done") from None
        return version
    with manifest_lock(store):
        manifest = parse_manifest(store, manifest_text(store))
        version = int(manifest["format_version"])
        if version >= FORMAT_VERSION:
            return None
        if version < 3:
            write_upgrade_checkpoint(store, manifest)
        replace_file(store / f"manifest.v{version}.json", json.dumps(manifest, indent=1).encode())
        write_manifest(store, json.loads(_header(manifest)))
    return version


def main(store: str) -> None:
    store_dir = store_path(store)
    version = upgrade(store_dir)
    if version is None:
        print(f"{store_dir} is already format {FORMAT_VERSION}; nothing to do")
    else:
        print(f"upgraded {store_dir} from format {version} to {FORMAT_VERSION} (the old manifest kept as manifest.v{version}.json)")
