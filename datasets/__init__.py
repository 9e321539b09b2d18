"""f1.datasets: episode schema, Zarr/WebDataset shard writers and readers, manifest, replay, stats, verify.

The public names below load on first use (PEP 562), so `import f1.datasets`
(which every `f1` command does for its CLI options) does not import zarr.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FORMAT_VERSION": "schema",
    "MANIFEST_NAME": "schema",
    "Episode": "schema",
    "EpisodeMeta": "schema",
    "SchemaError": "schema",
    "StoreError": "schema",
    "StoreSpec": "schema",
    "validate_episode": "schema",
    "EpisodeWriter": "writer",
    "open_writer": "writer",
    "EpisodeInfo": "reader",
    "StoreReader": "reader",
    "open_store": "reader",
    "verify_store": "verify",
    "compute_stats": "stats",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'f1.datasets' has no attribute {name!r}")
    return getattr(importlib.import_module(f"f1.datasets.{_EXPORTS[name]}"), name)
