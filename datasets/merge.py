"""`f1 dataset merge SRC... --out DST`: join stores written by separate runs (one per Slurm node, one per site).

Every source must hold the same format and spec (the image codec included)
and no episode id may be in two sources: either is one line, before DST is
touched. DST is a new format-3 store; each source shard keeps its episodes
and is renamed only when two sources use one worker name (then every worker
of source i becomes `m<i><worker>`). Files are hard-linked where source and
destination share a filesystem, copied otherwise (object storage included).
The shards go in first, then one index part and checkpoint 0 list them all:
a merge killed before that leaves DST with nothing listed (delete it and rerun).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any


from f1.datasets.create_only import create_only
from f1.datasets.episode_index import EntriesPart, concat_parts, write_part
from f1.datasets.manifest import new_manifest
from f1.datasets.progress import count_bar
from f1.datasets.reader import StoreReader, open_store
from f1.datasets.s3 import S3Path, store_path
from f1.datasets.schema import MANIFEST_NAME, TAR_INDEX_SUFFIX, StoreError, parse_shard_name, shard_name, shard_relpath
from f1.datasets.store_checkpoint import write_checkpoint


def _check_sources(readers: list[StoreReader]) -> None:
    first = readers[0]
    for r in readers[1:]:
        if (r.format, r.spec) != (first.format, first.spec):
            diff = {k: (v, r.spec.to_dict()[k]) for k, v in first.spec.to_dict().items() if r.spec.to_dict()[k] != v}
            raise StoreError(
                f"{r.store_dir} differs from {first.store_dir} (format {r.format} vs {first.format}, spec fields {diff}); "
                "merge only stores of one format and spec (`f1 dataset convert` changes a format or codec)"
            )
    owner: dict[str, Any] = {}
    for r in readers:
        for episode_id in r.snapshot.episode_column("id"):
            if episode_id in owner:
                raise StoreError(
                    f"episode {episode_id!r} is in both {owner[episode_id]} and {r.store_dir}; "
                    "merge stores of different seeds (or leave one of them out)"
                )
            owner[episode_id] = r.store_dir


def _files(shard: Path | S3Path) -> list[str]:
    """The shard's files relative to it ('' for a single-file shard)."""
    if isinstance(shard, S3Path):
        return [rel for rel, _ in shard.list()] or [""]
    return [p.relative_to(shard).as_posix() for p in sorted(shard.rglob("*")) if p.is_file()] if shard.is_dir() else [""]


def _transfer(src: Path | S3Path, dst: Path | S3Path) -> None:
    """One file: a hard link where both are on one filesystem, else a copy (object storage on either side)."""
    if isinstance(dst, S3Path):
        if isinstance(src, S3Path):
            dst.put(src.read_bytes())
        else:
            dst.upload(src)
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(src, S3Path):
        dst.write_bytes(src.read_bytes())
        return
    try:
        os.link(src, dst)
    except OSError:  # another filesystem (EXDEV), or one without hard links
        shutil.copyfile(src, dst)


def _copy_shard(src_store: Path | S3Path, entry: dict[str, Any], dst_store: Path | S3Path, new_path: str) -> None:
    src = src_store / entry["path"]
    for rel in _files(src):
        _transfer(src / rel if rel else src, dst_store / (f"{new_path}/{rel}" if rel else new_path))
    sidecar = src_store / (entry["path"] + TAR_INDEX_SUFFIX)
    if entry["format"] == "webdataset" and sidecar.is_file():
        _transfer(sidecar, dst_store / (new_path + TAR_INDEX_SUFFIX))


def _same(a: Path | S3Path, b: Path | S3Path) -> bool:
    if isinstance(a, S3Path) or isinstance(b, S3Path):
        return a == b
    return a.resolve() == b.resolve()


def merge(sources: list[str | Path | S3Path], dst: str | Path | S3Path, progress: bool = False) -> tuple[int, int]:
    """Merge; (shards, episodes) in DST."""
    dst = store_path(dst)
    readers = [open_store(s) for s in sources]
    if any(_same(dst, r.store_dir) for r in readers):
        raise StoreError(f"{dst} is one of the sources; merge into a new store")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise StoreError(f"{dst} exists and is not empty; merge into a new store")
    _check_sources(readers)
    per_source = [r.snapshot.shard_entries(shadowed_too=True) for r in readers]
    workers = [{parse_shard_name(e["name"])[0] for e in entries} for entries in per_source]
    rename = sum(len(w) for w in workers) != len(set().union(*workers))
    header = new_manifest(readers[0].format, readers[0].spec, readers[0].manifest.get("collection_config", {}))
    header["merged_from"] = [str(r.store_dir) for r in readers]
    if not isinstance(dst, S3Path):
        dst.mkdir(parents=True, exist_ok=True)
    create_only(dst / MANIFEST_NAME, json.dumps(header, indent=1).encode())
    merged, folded = [], {}
    with count_bar("merge", sum(len(e) for e in per_source), "shards", show=progress) as advance:
        for i, (reader, entries) in enumerate(zip(readers, per_source)):
            for entry in entries:
                worker, seq, _, _ = parse_shard_name(entry["name"])
                worker = f"m{i}{worker}" if rename else worker
                name = shard_name(worker, seq, entry["format"])
                _copy_shard(reader.store_dir, entry, dst, shard_relpath(name))
                merged.append({**entry, "name": name, "path": shard_relpath(name)})
                folded[worker] = max(folded.get(worker, -1), seq)
                advance()
    if merged:
        write_checkpoint(dst, 0, [write_part(dst, concat_parts([EntriesPart(merged)]))], folded)
    return len(merged), sum(len(e["episodes"]) for e in merged)


def main(sources: list[str], out: str) -> None:
    shards, episodes = merge(sources, out, progress=sys.stderr.isatty())
    print(f"wrote {store_path(out)}: {shards} shards, {episodes} episodes from {len(sources)} stores")
