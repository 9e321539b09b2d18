"""`--record DIR`: the online phases' episodes written to a store in `f1 collect`'s format, for the offline stage.

Episodes are built by `f1.collect.episode_buffer.EpisodeBuffer` during the rollout
(head + wrist frames, state, the action as applied) and written by this rank's
own `open_writer` (worker `<phase><rank>`, so ranks never share a shard). Ids
are `<phase>-<run tag>-r<round>-g<env slot>`, the run tag a hash of the output
directory: a resumed run re-rolls the rounds after its last checkpoint, and
episodes the store already holds are skipped, never written twice.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Sequence

from f1.shared.config import F1Config

log = logging.getLogger("f1.online")


def run_tag(phase: str, output_dir: Path) -> str:
    """The episode-id prefix of one run: phase plus 8 hex digits of its output directory's absolute path."""
    digest = hashlib.sha1(str(Path(output_dir).resolve()).encode()).hexdigest()[:8]
    return f"{phase}-{digest}"


def check_record_store(store_dir: Path, cfg: F1Config) -> None:
    """Raise (one line, StoreError) if an existing store at `store_dir` cannot take this run's episodes."""
    from f1.collect.store_spec import collection_spec
    from f1.datasets import MANIFEST_NAME
    from f1.datasets.manifest import read_manifest
    from f1.datasets.s3 import store_path
    from f1.datasets.schema import StoreError, StoreSpec

    store_dir = store_path(store_dir)  # a directory or s3://bucket/prefix
    want = collection_spec(cfg)  # first: it refuses an env that hides what a store keeps
    if not (store_dir / MANIFEST_NAME).is_file():
        if store_dir.exists() and any(store_dir.iterdir()):
            raise StoreError(f"--record {store_dir} exists and is not an f1 store (no {MANIFEST_NAME}); choose an empty or new directory")
        return
    manifest = read_manifest(store_dir)
    if manifest["format"] != cfg.collect.format:
        raise StoreError(
            f"--record {store_dir} holds {manifest['format']} shards; pass --set collect.format={manifest['format']} or a new directory"
        )
    have = StoreSpec.from_dict(manifest["spec"])
    diff = {k: v for k, v in have.to_dict().items() if k != "image_codec" and want.to_dict()[k] != v}
    if diff:
        raise StoreError(f"--record {store_dir} was written with other settings {diff}; match them or record to a new directory")


class RolloutRecorder:
    """One rank's writer into the record store."""

    def __init__(self, store_dir: Path, cfg: F1Config, phase: str, rank: int):
        from f1.collect.store_spec import open_config_writer
        from f1.datasets import MANIFEST_NAME, open_store
        from f1.datasets.s3 import store_path

        store_dir = store_path(store_dir)
        self.known: set[str] = set()
        exists = (store_dir / MANIFEST_NAME).is_file()
        if exists:
            self.known = {info.episode_id for info in open_store(store_dir).episodes}
        # An existing store keeps its codec; a new one takes collect.image_codec.
        self.writer = open_config_writer(cfg, store_dir, worker=f"{phase}{rank}", image_codec="auto" if exists else None)
        self.written = self.skipped = 0

    def add(self, episodes: Sequence[tuple[dict, Any]]) -> None:
        for arrays, meta in episodes:
            if meta.episode_id in self.known:
                self.skipped += 1
                continue
            self.writer.add_episode(arrays, meta)
            self.known.add(meta.episode_id)
            self.written += 1

    def close(self) -> None:
        self.writer.close()
        log.info("recorded %d episodes (%d already in the store)", self.written, self.skipped)
