"""`f1 dataset verify`: every shard against its listing (commit record, checkpoint or manifest), the schema
and the episode markers.

Checks, each problem naming shard, episode and step:
- the shard is present, its bytes and sha256 match its listing;
- its episodes (ids, lengths, seeds, scenes, order) and step count match the listing;
- the layout: Zarr arrays' dtypes, shapes and episode_ends; WebDataset keys
  `<episode_id>_<k:06d>` in order with k rising by one, every member present,
  the index sidecar equal to the tar's headers;
- each episode's schema and markers (f1.datasets.schema.episode_problems);
- no episode split across shards, no duplicate episode ids (formats 1 and 2; in format 3 an id listed
  twice, as two writers of one retried task may commit it, is `shadowed`: readers keep the occurrence in
  the lower-named shard, and verify names the other without failing).

A store on object storage is checked the same way, each shard downloaded
into a temporary folder in turn; `unlisted_objects` names the shards no
listing holds (left by a killed writer: readers never see them, and the
next writer of that worker deletes them), which verify reports without failing.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TransferSpeedColumn

from f1.datasets.create_only import child_names
from f1.datasets.manifest import read_header, shard_bytes, shard_checksum
from f1.datasets.s3 import S3Path, store_path
from f1.datasets.schema import SHARDS_DIR, EpisodeMeta, StoreError, StoreSpec, episode_problems, parse_shard_name
from f1.datasets.snapshot import load_snapshot
from f1.datasets.wds_shard import index_path, iter_tar_episodes, scan_index
from f1.datasets.zarr_shard import ZarrShardReader


def _zarr_episodes(path: Path, spec: StoreSpec, problems: list[str]):
    try:
        reader = ZarrShardReader(path, spec)
    except StoreError as exc:
        problems.append(str(exc))
        return
    structure = reader.structure_problems()
    problems.extend(structure)
    if structure:
        return  # per-episode reads of a malformed layout would only repeat it
    yield from reader.iter_episodes()


def _tar_episodes(path: Path, spec: StoreSpec, problems: list[str], listed: dict[str, dict]):
    sidecar = index_path(path)
    if sidecar.exists():
        scanned, _ = scan_index(path, spec, [])  # its problems come out of iter_tar_episodes below
        try:
            stored = np.load(sidecar)
        except (ValueError, OSError) as exc:
            problems.append(f"index {sidecar.name} is unreadable ({exc}); delete it, readers rebuild it")
        else:
            if stored.shape != scanned.shape or not np.array_equal(stored, scanned):
                problems.append(f"index {sidecar.name} does not match the tar's headers; delete it, readers rebuild it")
    yield from iter_tar_episodes(path, spec, problems, listed)


def _verify_remote_shard(store: S3Path, entry: dict, spec: StoreSpec) -> list[str]:
    """Download the shard (and a tar's index) into a temporary folder, then check it as a local one."""
    path = entry["path"]
    with tempfile.TemporaryDirectory(prefix="f1-verify-") as tmp:
        local = Path(tmp)
        keys = [path, path + ".idx.npy"] if entry["format"] == "webdataset" else [path]
        for key in keys:
            obj = store / key
            if obj.is_file() or (entry["format"] == "zarr" and key == path and obj.is_dir()):
                obj.download_to(local / key)
        return _verify_shard(local, entry, spec)


def unlisted_objects(store: Path | S3Path, listed_paths: set[str]) -> list[str]:
    """Shards (files or objects) in the store that nothing lists, as paths relative to the store."""
    folders = [""] + [f"{SHARDS_DIR}/{w}/{c}/" for w in child_names(store / SHARDS_DIR) for c in child_names(store / SHARDS_DIR / w)]
    out = []
    for folder in folders:
        where = store / folder.rstrip("/") if folder else store
        if isinstance(store, S3Path):
            names = sorted({n for n in child_names(where)})
        else:
            names = child_names(Path(where))
        for name in names:
            parsed = parse_shard_name(name)
            if parsed and folder + name[: len(name) - len(parsed[3])] not in listed_paths:
                out.append(folder + name)
    return out


def _verify_shard(store_dir: Path, entry: dict, spec: StoreSpec) -> list[str]:
    name = entry["name"]
    path = store_dir / entry["path"]
    if not path.exists():
        return [f"{name}: missing (listed in the store)"]
    problems = []
    size = shard_bytes(path)
    if size != entry["bytes"]:
        problems.append(f"{name}: {size} bytes, the store lists {entry['bytes']} (truncated or changed)")
    checksum = shard_checksum(path)
    if checksum != entry["checksum"]:
        problems.append(f"{name}: checksum {checksum[:19]}... does not match the listed {entry['checksum'][:19]}...")
    found: list[EpisodeMeta] = []
    shard_problems: list[str] = []
    listed_metas = {e["id"]: e for e in entry["episodes"]}
    if entry["format"] == "zarr":
        episodes = _zarr_episodes(path, spec, shard_problems)
    else:
        episodes = _tar_episodes(path, spec, shard_problems, listed_metas)
    try:
        for meta, arrays in episodes:
            found.append(meta)
            shard_problems.extend(episode_problems(arrays, meta, spec))
    except Exception as exc:  # noqa: BLE001 - a shard too broken to read is one problem, not a crash
        shard_problems.append(f"unreadable ({type(exc).__name__}: {exc})")
    problems += [f"{name}: {p}" for p in shard_problems]
    listed = [(e["id"], e["length"], e["seed"], e["scene_id"]) for e in entry["episodes"]]
    have = [(m.episode_id, m.length, m.seed, m.scene_id) for m in found]
    if have != listed:
        missing = [e for e in listed if e not in have]
        extra = [e for e in have if e not in listed]
        problems.append(
            f"{name}: episodes (id, length, seed, scene) differ from the store's listing: missing {missing}, "
            f"unexpected {extra}" + ("" if missing or extra else ", order differs")
        )
    steps = sum(m.length for m in found)
    if steps != entry["steps"]:
        problems.append(f"{name}: {steps} steps, the store lists {entry['steps']}")
    return problems


def listed_shards(store_dir: Path | S3Path) -> tuple[dict, list[dict]]:
    """(manifest.json, every listed shard's entry with all the episodes committed in it), by name."""
    header = read_header(store_dir)
    return header, load_snapshot(store_dir, header).shard_entries(shadowed_too=True, randomization=False)


def duplicates(shards: list[dict]) -> list[str]:
    """'<shard>: episode '<id>' also in <lower-named shard> (duplicate id)' for each id listed twice."""
    seen: dict[str, str] = {}
    out = []
    for entry in shards:
        for e in entry["episodes"]:
            if e["id"] in seen:
                out.append(f"{entry['name']}: episode {e['id']!r} also in {seen[e['id']]} (duplicate id)")
            seen.setdefault(e["id"], entry["name"])
    return out


def verify_store(store: str | Path | S3Path, progress: bool = False) -> list[str]:
    """Every problem of the store, one line each; [] when it verifies. StoreError if it is not a store."""
    store_dir = store_path(store)
    manifest, shards = listed_shards(store_dir)
    spec = StoreSpec.from_dict(manifest["spec"])
    problems = duplicates(shards) if int(manifest["format_version"]) < 3 else []
    columns = (
        TextColumn("verify {task.fields[done]}/{task.fields[shards]} shards"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), disable=not progress) as bar:
        task = bar.add_task("verify", total=sum(s["bytes"] for s in shards), done=0, shards=len(shards))
        for i, entry in enumerate(shards):
            if isinstance(store_dir, S3Path):
                problems += _verify_remote_shard(store_dir, entry, spec)
            else:
                problems += _verify_shard(store_dir, entry, spec)
            bar.update(task, advance=entry["bytes"], done=i + 1)
    return problems


def main(store: str | Path) -> int:
    """0 when the store verifies, 1 when anything is wrong (each problem printed on its own line).

    Shards nothing lists and (format 3) shadowed duplicate episodes are reported too, without failing:
    no reader sees them."""
    store = store_path(store)
    problems = verify_store(store, progress=sys.stderr.isatty())
    console = Console(highlight=False)
    manifest, shards = listed_shards(store)
    for path in unlisted_objects(store, {s["path"] for s in shards}):
        console.print(
            f"[yellow]unlisted[/yellow] {escape(str(store / path))}: nothing in the store lists it (left by a "
            "killed writer; readers ignore it, the next collect of that worker deletes it)",
            soft_wrap=True,
        )
    if int(manifest["format_version"]) >= 3:
        for line in duplicates(shards):
            console.print(f"[yellow]shadowed[/yellow] {escape(line)}: readers keep the lower-named shard's", soft_wrap=True)
    if problems:
        for p in problems:
            console.print(f"[red]problem[/red] {escape(p)}", soft_wrap=True)
        console.print(f"{store}: {len(problems)} problem(s)")
        return 1
    episodes = len({e["id"] for s in shards for e in s["episodes"]})
    steps = sum(s["steps"] for s in shards)
    console.print(f"[green]ok[/green] {store}: {len(shards)} shards, {episodes} episodes, {steps} steps")
    return 0
