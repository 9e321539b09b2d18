"""The store spec a collect run writes: the config's sizes plus the env's real action/state dims."""

from __future__ import annotations

from f1.collect.env_spec import REAL_ACTION_DIMS, REAL_STATE_DIMS
from f1.datasets.schema import StoreSpec
from f1.shared.config import F1Config


def collection_spec(cfg: F1Config, cameras: tuple[str, ...] = ("head", "wrist")) -> StoreSpec:
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
    )
