"""`f1 dataset convert`: copy a store into the other format (or another codec), bit-exactly; or, through
`route`, export a store as a LeRobot v3.0 dataset (lerobot_export) or import one (lerobot_import).

Episodes keep their order, their metadata and their shard grouping: each
source shard becomes one destination shard of the same worker, so
`shard-n0w1-000002.zarr` becomes `shard-n0w1-000002.tar` when the source's
seqs run from 0 without gaps (as a fresh collection's do). The collection
config and the spec carry over (the image codec excepted, when asked);
normalizer.json is copied as it is, being computed from the same arrays.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


from f1.datasets.codecs import resolve_codec
from f1.datasets.manifest import open_or_create_manifest
from f1.datasets.progress import count_bar
from f1.datasets.reader import open_store
from f1.datasets.s3 import store_path
from f1.datasets.schema import FORMATS, StoreError, parse_shard_name
from f1.datasets.writer import EpisodeWriter, open_writer
from f1.shared.normalizers import NORMALIZER_FILE

_MAX_EPISODES_PER_SHARD = 1 << 30  # shards end where the source's do (finish_shard), never by count


LEROBOT = "lerobot"
EXPORT_OPTIONS = ("lossless", "keep_last", "task")
IMPORT_OPTIONS = ("camera", "state", "action", "image_size")


def route(src: str, dst: str, fmt: str, image_codec: str | None = None, **options: Any) -> None:
    """Export to LeRobot, import from LeRobot, or convert between f1 formats; options of another direction refused."""
    from f1.datasets.lerobot_import import is_lerobot_dataset

    given = {k for k, v in options.items() if v not in (None, False, [])}
    if fmt == LEROBOT:
        direction, allowed = "an export to lerobot", EXPORT_OPTIONS
    elif fmt not in FORMATS:
        raise StoreError(f"unknown format {fmt!r}; use one of {[*FORMATS, LEROBOT]}")
    elif is_lerobot_dataset(src):
        direction, allowed = "an import from lerobot", IMPORT_OPTIONS
    else:
        direction, allowed = "a store-to-store convert", ()
    wrong = sorted(given - set(allowed))
    if wrong or (fmt == LEROBOT and image_codec):
        flags = ", ".join("--" + k.replace("_", "-") for k in wrong + (["image_codec"] if fmt == LEROBOT and image_codec else []))
        raise StoreError(f"{flags} do not apply to {direction}; drop them (see `f1 dataset convert --help`)")
    if fmt == LEROBOT:
        from f1.datasets.lerobot_export import main as export

        export(src, dst, **{k: options[k] for k in EXPORT_OPTIONS if k in options})
    elif direction == "an import from lerobot":
        from f1.datasets.lerobot_import import main as import_

        import_(src, dst, fmt, image_codec=image_codec, **{k: options[k] for k in IMPORT_OPTIONS if k in options})
    else:
        main(src, dst, fmt, image_codec=image_codec)


def main(src: Path, dst: Path, fmt: str, image_codec: str | None = None) -> None:
    src, dst = store_path(src), store_path(dst)
    reader = open_store(src)
    if image_codec is None and fmt == reader.format:
        image_codec = reader.spec.image_codec
    codec = resolve_codec(fmt, image_codec)  # a bad name fails here, before dst exists
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise StoreError(f"{dst} exists and is not empty; convert into a new directory")
    if dst.resolve() == src.resolve():
        raise StoreError(f"{dst} is the source store; convert into a new directory")
    spec = reader.spec.with_codec(codec)
    config = reader.manifest["collection_config"]
    writer: EpisodeWriter | None = None
    with count_bar("convert", len(reader.episodes)) as advance:
        for shard in reader.shards:  # sorted by name: one worker's shards come together, in seq order
            worker = parse_shard_name(shard["name"])[0]
            if writer is None or writer.worker != worker:
                if writer is not None:
                    writer.close()
                writer = open_writer(dst, fmt, spec, worker, config, _MAX_EPISODES_PER_SHARD)
            for meta, arrays in reader.iter_shard(shard["name"]):
                writer.add_episode(arrays, meta)
                advance()
            writer.finish_shard()
        if writer is not None:
            writer.close()
    if not reader.shards:  # an empty store converts to an empty store
        open_or_create_manifest(dst, fmt, spec, config)
    if (src / NORMALIZER_FILE).is_file():
        (dst / NORMALIZER_FILE).write_bytes((src / NORMALIZER_FILE).read_bytes())
    print(f"wrote {dst}: {len(reader.shards)} {fmt} shards, {len(reader.episodes)} episodes, image codec {codec}")
