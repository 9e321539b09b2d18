"""The store a run writes: its spec (the config's sizes plus the env's real action/state dims) and writer."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from f1.collect.env_spec import REAL_ACTION_DIMS, REAL_STATE_DIMS
from f1.datasets.schema import StoreSpec
from f1.shared.config import F1Config
from f1.shared.errors import UserError


def collection_spec(cfg: F1Config, cameras: tuple[str, ...] = ("head", "wrist")) -> StoreSpec:
    if not cfg.environment.privileged_info:
        raise UserError(
            "a store keeps the clutter's poses and contacts, which environment.privileged_info=false hides; "
            "set environment.privileged_info=true to collect or --record"
        )
    return StoreSpec(
        image_hw=tuple(cfg.environment.image_size),
        cameras=cameras,
        state_dim=cfg.training.state_dim,
        action_dim=cfg.training.action_dim,
        real_state_dims=REAL_STATE_DIMS,
        real_action_dims=REAL_ACTION_DIMS,
        control_mode=cfg.environment.control_mode,
        control_freq=cfg.environment.control_freq,
        image_codec=cfg.collect.image_codec,
        object_slots=cfg.environment.domain_randomization.max_objects,
        camera_geometry=True,
        depth_cameras=("wrist",) if cfg.environment.depth else (),
    )


def open_config_writer(cfg: F1Config, store_dir: Path, worker: str, image_codec: Optional[str] = None):
    """A background writer of `worker`'s own shards into `store_dir`, sized and encoded as `cfg` says.

    `image_codec` None takes `cfg.collect.image_codec`.
    """
    from f1.datasets import open_writer

    return open_writer(
        store_dir,
        cfg.collect.format,
        collection_spec(cfg),
        worker=worker,
        collection_config=cfg.to_dict(),
        episodes_per_shard=cfg.collect.episodes_per_shard,
        image_codec=cfg.collect.image_codec if image_codec is None else image_codec,
        background=True,
    )
