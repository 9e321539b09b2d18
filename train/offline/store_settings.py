"""What a store already knows, taken from its manifest rather than asked of the user.

A store records its camera size, cameras, state/action dims (and which are
real: the normalizer reads those from the spec itself) and control frequency.
The config's values for these are only defaults until the user sets them: a
value the user did not set (in their config file, a `--set` or a flag) is
replaced by the store's, and a value they did set is left as it is, so that
`check_store` reports the contradiction in one line.
"""

from __future__ import annotations

import logging
from pathlib import Path

from f1.datasets.manifest import read_manifest
from f1.datasets.s3 import store_path
from f1.datasets.schema import StoreSpec
from f1.shared.config import F1Config, set_explicitly

log = logging.getLogger("f1.teacher")


def adopt_store_settings(cfg: F1Config, data: Path) -> None:
    """Set, in place, the config keys the user left alone to what the store at `data` holds."""
    spec = StoreSpec.from_dict(read_manifest(store_path(data))["spec"])  # a StoreError names a missing or broken store
    store_values = {
        "environment.image_size": list(spec.image_hw),
        "environment.control_freq": spec.control_freq,
        "training.state_dim": spec.state_dim,
        "training.action_dim": spec.action_dim,
    }
    if "head" not in spec.cameras:
        store_values["teacher.use_head_camera"] = False  # a wrist-only store: the teacher does without the head frame
    for key, value in store_values.items():
        section, name = key.split(".")
        current = getattr(getattr(cfg, section), name)
        if current != value and not set_explicitly(cfg, key):
            log.debug("%s=%s from the store's manifest (the config's default was %s)", key, value, current)
            setattr(getattr(cfg, section), name, value)
