"""A store's contents at one moment: which shards and episodes a reader sees, as columns.

Format 3: the newest complete checkpoint's index parts plus, per worker, the
commit records after the seq that checkpoint folded. A pinned snapshot
(`pin`: per worker, the highest seq it saw) sees exactly those records again,
whatever compactions ran since: a row is kept iff its shard's seq is within
the pin. Formats 1 and 2: the manifest's entries.

Order is canonical: shards by name, episodes by their offset in the shard,
so every process (and a resumed run) lists the same episodes alike, however
the records were folded. An episode id listed twice (a Ray task that ran
twice) is kept once: the occurrence in the shard with the lowest name wins,
the others are `shadowed` (verify reports them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from f1.datasets import commit_log
from f1.datasets.episode_index import EntriesPart, ParquetPart, Part
from f1.datasets.s3 import S3Path
from f1.datasets.schema import parse_shard_name
from f1.datasets.store_checkpoint import newest_checkpoint


@dataclass
class Snapshot:
    parts: list[Part]
    identity: dict[str, int] = field(default_factory=dict)
    """Per worker, the highest record seq this snapshot includes (format 3); what a training run pins."""
    checkpoint: Optional[int] = None
    """The checkpoint it was read from (None: none, or a format-1/2 store)."""
    pending_records: int = 0
    """Records read beyond the checkpoint."""

    def __post_init__(self) -> None:
        self._shard_offsets = np.cumsum([0] + [p.num_shards for p in self.parts])
        self._cache: dict[tuple[str, str], np.ndarray] = {}
        self._order: Optional[np.ndarray] = None
        self._shard_order: Optional[np.ndarray] = None
        self.shadowed: list[tuple[str, str]] = []
        """(shard name, episode id) of each episode hidden by the same id in a lower-named shard."""

    # -- columns over all parts, in part order ------------------------------------------------

    def _raw(self, table: str, name: str) -> np.ndarray:
        key = (table, name)
        if key not in self._cache:
            cols = [p.column(table, name) for p in self.parts]
            if table == "episodes" and name == "shard":  # rows of each part's table -> rows of the whole
                cols = [c + off for c, off in zip(cols, self._shard_offsets)]
            self._cache[key] = np.concatenate(cols) if cols else np.zeros(0, object if name in ("id",) else np.int64)
        return self._cache[key]

    @property
    def shard_order(self) -> np.ndarray:
        """(S,) raw shard rows sorted by name."""
        if self._shard_order is None:
            names = self._raw("shards", "name")
            self._shard_order = np.argsort(names.astype(str), kind="stable") if len(names) else np.zeros(0, np.int64)
            ordered = names[self._shard_order]
            assert not np.any(ordered[1:] == ordered[:-1]), ("a shard listed twice", ordered[1:][ordered[1:] == ordered[:-1]][:3])
        return self._shard_order

    def _shard_rank(self) -> np.ndarray:
        """(S,) each raw shard row's position in name order."""
        rank = np.empty(len(self.shard_order), np.int64)
        rank[self.shard_order] = np.arange(len(self.shard_order))
        return rank

    def _rows_by_shard(self) -> np.ndarray:
        """(E,) raw episode rows by shard name, then offset in the shard; duplicates included."""
        return np.lexsort((self._raw("episodes", "start"), self._shard_rank()[self._raw("episodes", "shard")]))

    @property
    def order(self) -> np.ndarray:
        """(E,) raw episode rows in canonical order, duplicates removed."""
        if self._order is None:
            order = self._rows_by_shard()
            hashes = self._raw("episodes", "id_hash")[order]
            _, first = np.unique(hashes, return_index=True)
            if len(first) < len(order):
                first = self._resolve_duplicates(order)
            self._order = order[np.sort(first)]
        return self._order

    def _resolve_duplicates(self, order: np.ndarray) -> np.ndarray:
        """Positions (into `order`) to keep, by the ids themselves: a hash collision keeps both."""
        ids = self._raw("episodes", "id")[order]
        _, first = np.unique(ids.astype(str), return_index=True)
        kept = np.zeros(len(order), bool)
        kept[first] = True
        names, shard_rows = self._raw("shards", "name"), self._raw("episodes", "shard")[order]
        self.shadowed = [(names[shard_rows[i]], ids[i]) for i in np.flatnonzero(~kept)]
        return first

    def episode_column(self, name: str) -> np.ndarray:
        """(E,) one episode column in canonical order."""
        return self._raw("episodes", name)[self.order]

    def shard_column(self, name: str) -> np.ndarray:
        """(S,) one shard column, shards sorted by name."""
        return self._raw("shards", name)[self.shard_order]

    def episode_shard_rows(self) -> np.ndarray:
        """(E,) each episode's shard as a row of the name-sorted shard columns."""
        return self._shard_rank()[self.episode_column("shard")]

    @property
    def num_episodes(self) -> int:
        return len(self.order)

    def shard_entries(self, shadowed_too: bool = False, randomization: bool = True) -> list[dict[str, Any]]:
        """Every shard as a format-2 manifest entry (name, path, format, steps, bytes, checksum, episodes), by name;
        `shadowed_too` keeps the episodes a lower-named shard shadows (the shard's whole content, as committed);
        `randomization` False leaves the largest column unread (verify compares ids, lengths, seeds and scenes).
        Costs the whole index: for verify, convert, merge, compaction and old callers, not for opening a store."""
        cols = {c: self.shard_column(c) for c in ("name", "path", "format", "steps", "bytes", "checksum")}
        entries = [
            {"name": n, "path": p, "format": f, "steps": int(s), "bytes": int(b), "checksum": c, "episodes": []}
            for n, p, f, s, b, c in zip(*cols.values())
        ]
        order = self._rows_by_shard() if shadowed_too else self.order
        rows = self._shard_rank()[self._raw("episodes", "shard")[order]]
        ep = {c: self._raw("episodes", c)[order] for c in ("id", "length", "seed", "scene_id")}
        extra = self._raw("episodes", "randomization")[order] if randomization else None
        for i, row in enumerate(rows):
            e = {"id": ep["id"][i], "length": int(ep["length"][i]), "seed": int(ep["seed"][i]), "scene_id": int(ep["scene_id"][i])}
            if extra is not None:
                e["randomization"] = json.loads(extra[i])
            entries[row]["episodes"].append(e)
        return entries


LOAD_RETRIES = 5  # a cleanup removed what the checkpoint this reader took had not folded: read the newer one


def load_snapshot(store: Path | S3Path, manifest: dict[str, Any], pin: Optional[dict[str, int]] = None) -> Snapshot:
    """The snapshot a reader opening `store` now sees (or the pinned one); `manifest` is its manifest.json."""
    if int(manifest["format_version"]) < 3:
        return Snapshot([EntriesPart(manifest["shards"])])
    for _ in range(LOAD_RETRIES - 1):
        try:
            return _load_log(store, pin)
        except FileNotFoundError:
            continue
    return _load_log(store, pin)


def _load_log(store: Path | S3Path, pin: Optional[dict[str, int]]) -> Snapshot:
    checkpoint = newest_checkpoint(store)
    folded: dict[str, int] = dict(checkpoint["folded"]) if checkpoint else {}
    parts: list[Part] = [ParquetPart(store, info) for info in checkpoint["parts"]] if checkpoint else []
    if pin is not None and any(seq > pin.get(w, -1) for w, seq in folded.items()):
        parts = [_pinned(parts, pin)]  # the checkpoint folded records the pin did not see: drop their rows
    identity = {w: s for w, s in folded.items() if pin is None or w in pin}
    pending = []
    for worker in commit_log.writers(store):
        after = folded.get(worker, -1)
        if pin is not None and after >= pin.get(worker, -1):
            continue
        for seq, entry in commit_log.records_after(store, worker, after):
            if pin is not None and seq > pin.get(worker, -1):
                break
            pending.append(entry)
            identity[worker] = max(identity.get(worker, -1), seq)
    if pin is not None:
        identity = {w: min(s, pin[w]) for w, s in identity.items()}
    if pending:
        parts.append(EntriesPart(pending))
    return Snapshot(parts, identity, checkpoint["n"] if checkpoint else None, len(pending))


def _pinned(parts: list[Part], pin: dict[str, int]) -> Part:
    """The rows of `parts` whose shard's seq is within `pin`, as one in-memory part."""
    entries = Snapshot(parts).shard_entries(shadowed_too=True)
    keep = []
    for entry in entries:
        worker, seq, _, _ = parse_shard_name(entry["name"])
        if seq <= pin.get(worker, -1):
            keep.append(entry)
    return EntriesPart(keep)
