"""The teacher's inputs, checked before anything trains or is written: store, tokenizer, normalizer, output dir.

Each bad input is one `UserError` line naming the file and the fix. The
store check is the cheap, manifest-level one (every listed shard is present
with the listed size, episode ids are unique, the spec fits the config);
`f1 dataset verify` does the full checksum pass.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Optional

import numpy as np

from f1.datasets.reader import StoreReader, open_store, stored_bytes
from f1.datasets.schema import StoreError
from f1.shared.config import F1Config
from f1.shared.errors import UserError
from f1.shared.normalizers import NORMALIZER_FILE, Normalizer, normalizers_from_json
from f1.train.checkpoint import CHECKPOINT_PATTERN, Checkpoint, is_complete
from f1.train.models.tokenizer import CONFIG_FILE, WEIGHTS_FILE, FSQTokenizer
from f1.train.offline.token_store import META_FILE, check_meta, default_location, expected_meta, store_cameras, tokenizer_key

log = logging.getLogger("f1.teacher")


STORE_SNAPSHOT_ENV = "F1_STORE_SNAPSHOT"  # the snapshot the launching process pinned, for the ranks it starts


def pinned_snapshot(checkpoint: Optional[Checkpoint]) -> Optional[dict[str, int]]:
    """The store snapshot this run reads: the resumed checkpoint's, or the one the launching process pinned
    (so every rank plans from the same episodes while collection goes on); None: the store as it is now."""
    from f1.train.launch import is_launched_rank

    if checkpoint is not None:
        return checkpoint.training_state.get("store_snapshot")
    if is_launched_rank() and STORE_SNAPSHOT_ENV in os.environ:
        return json.loads(os.environ[STORE_SNAPSHOT_ENV])
    return None


def check_store(data: Path, cfg: F1Config, pin: Optional[dict[str, int]] = None) -> StoreReader:
    """Open the store (at the pinned snapshot, if any) and check it against the config; StoreError (a
    UserError) on the first problem."""
    store = open_store(data, pin=pin)
    where = f"store {data}"
    if not store.episodes:
        raise StoreError(f"{where} has no finalised episodes; collect some with `f1 collect --out {data}`")
    shards = store.snapshot
    for name, path, listed in zip(shards.shard_column("name"), shards.shard_column("path"), shards.shard_column("bytes")):
        size = stored_bytes(store.store_dir / path)
        if size is None:
            raise StoreError(f"{where}: shard {name} is listed in the store but missing; run `f1 dataset verify {data}`")
        if size != listed:
            raise StoreError(
                f"{where}: shard {name} does not have its listed size (truncated or changed); run `f1 dataset verify {data}`"
            )
    if store.manifest["format_version"] < 3:  # format 3 readers keep one of an id listed twice
        ids = [e.episode_id for e in store.episodes]
        if len(set(ids)) != len(ids):
            raise StoreError(f"{where} lists an episode id twice; run `f1 dataset verify {data}`")

    spec, t = store.spec, cfg.training
    if spec.action_dim != t.action_dim:
        raise StoreError(
            f"{where} has action_dim {spec.action_dim} but training.action_dim is {t.action_dim}; "
            f"pass --set training.action_dim={spec.action_dim}"
        )
    if spec.state_dim != t.state_dim:
        raise StoreError(
            f"{where} has state_dim {spec.state_dim} but training.state_dim is {t.state_dim}; "
            f"pass --set training.state_dim={spec.state_dim}"
        )
    want_hw = tuple(cfg.environment.image_size)
    if tuple(spec.image_hw) != want_hw:
        h, w = spec.image_hw
        raise StoreError(
            f"{where} has {h}x{w} camera images but environment.image_size is {list(want_hw)}; "
            f"pass --set environment.image_size=[{h},{w}]"
        )
    needed = ["wrist"] + (["head"] if cfg.teacher.use_head_camera else [])
    missing = [cam for cam in needed if cam not in spec.cameras]
    if missing:
        raise StoreError(
            f"{where} has cameras {list(spec.cameras)}, the teacher needs {needed}; "
            "use a store with them (or --set teacher.use_head_camera=false)"
        )
    return store


def check_tokenizer(cfg: F1Config) -> tuple[Path, FSQTokenizer]:
    """The tokenizer named by teacher.tokenizer_path, loaded on the CPU (a TokenizerLoadError names a broken one)."""
    path = cfg.teacher.tokenizer_path
    if not path:
        raise UserError("no tokenizer given; pass --tokenizer DIR (the output dir of `f1 train tokenizer`)")
    directory = Path(path)
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (directory / name).is_file()]
    if missing:
        raise UserError(
            f"tokenizer {directory} lacks {', '.join(missing)}; pass the output dir of `f1 train tokenizer` to --tokenizer"
        )
    return directory, FSQTokenizer.load(directory)


def check_token_store(cfg: F1Config, store: StoreReader, tokenizer: FSQTokenizer) -> Optional[Path]:
    """The token store's folder when the run uses one (teacher.cache_tokens and teacher.token_store), else None.
    A folder made with another tokenizer is refused here, before a rank starts (TokenStoreMismatch, one line)."""
    if not (cfg.teacher.cache_tokens and cfg.teacher.token_store):
        return None
    if cfg.teacher.token_store_dir and str(cfg.teacher.token_store_dir).startswith("s3://"):
        raise UserError(
            f"teacher.token_store_dir={cfg.teacher.token_store_dir}: a token store is read by memory map and needs a filesystem; "
            "pass a local or shared folder"
        )
    key = tokenizer_key(tokenizer)
    root = Path(cfg.teacher.token_store_dir) if cfg.teacher.token_store_dir else default_location(store.store_dir, key)
    if (root / META_FILE).exists():
        check_meta(root, expected_meta(tokenizer, key, store_cameras(store)))
    return root


# What a checkpoint's weights and memories depend on, besides the tokenizer.
MODEL_KEYS = ("training.action_dim", "training.state_dim", "training.n_obs_img_steps", "training.obs_img_stride")


def check_same_model(checkpoint: Checkpoint, cfg: F1Config, tokenizer: FSQTokenizer) -> None:
    """A resume must build the model the checkpoint holds: same model section, dims, history and tokenizer."""
    saved_cfg, now = checkpoint.model["model_config"]["config"], cfg.to_dict()
    saved_model = {f"model.{k}": v for k, v in saved_cfg["model"].items()}
    current = {f"model.{k}": v for k, v in now["model"].items()}
    for key in MODEL_KEYS:
        section, name = key.split(".")
        saved_model[key], current[key] = saved_cfg[section][name], now[section][name]
    saved_model["tokenizer tokens x levels"] = (checkpoint.model["model_config"]["n_tokens"], list(checkpoint.model["model_config"]["levels"]))
    current["tokenizer tokens x levels"] = (tokenizer.n_tokens, list(tokenizer.levels))
    for key, value in current.items():
        if saved_model.get(key) != value:
            raise UserError(
                f"checkpoint {checkpoint.path} was trained with {key}={saved_model.get(key)}, this run has {value}; "
                "resume with the same settings or start a new output dir"
            )


def check_fresh_output_dir(output_dir: Path, resuming: bool) -> None:
    """A new run must not write its checkpoints among another run's."""
    if resuming or not output_dir.is_dir():
        return
    existing = sorted(p.name for p in output_dir.iterdir() if CHECKPOINT_PATTERN.match(p.name) and is_complete(p))
    if existing:
        raise UserError(
            f"output dir {output_dir} already holds {existing[-1]}; pass --auto_resume to continue that run "
            "or choose a new --output-dir"
        )


def store_normalizers(store: StoreReader) -> dict[str, Normalizer]:
    """{'action', 'state'} normalizers: the store's normalizer.json (from `f1 dataset stats`), else fitted now."""
    path = store.store_dir / NORMALIZER_FILE
    if path.is_file():
        try:
            return normalizers_from_json(path.read_text())
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"{path} is unreadable ({type(exc).__name__}); rewrite it with `f1 dataset stats {store.store_dir}`") from None
    log.info("%s has no %s: fitting the normalizer from its state and action vectors", store.store_dir, NORMALIZER_FILE)
    return fit_normalizers(store)


def fit_normalizers(store: StoreReader, max_episodes: Optional[int] = None) -> dict[str, Normalizer]:
    """Fit on the real dims of every episode's vectors, leaving out the padding action of each last step."""
    states, actions = [], []
    for info in store.episodes[:max_episodes]:
        v = store.read_episode(info, keys=("state", "action", "is_last"))
        states.append(v["state"])  # (N, S)
        actions.append(v["action"][~v["is_last"]])  # (N-1, A)
    spec = store.spec
    actions_all = np.concatenate(actions) if sum(map(len, actions)) else np.zeros((1, spec.action_dim), np.float32)
    return {
        "action": Normalizer.fit(actions_all, spec.real_action_dims),
        "state": Normalizer.fit(np.concatenate(states), spec.real_state_dims),
    }
