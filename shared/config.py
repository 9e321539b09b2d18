"""The f1 configuration: one typed schema, loaded from rl_config.yaml, a preset and `--set`.

Precedence, lowest first: the dataclass defaults below, the model-size preset
(`configs/preset_<name>.yaml`, named by `model.preset`), the YAML file
(`configs/rl_config.yaml` unless `--config` names another), then
`--set a.b=value` overrides and command-line flags. So a preset sets sizes
and anything written in the file or on the command line still wins. Every key is checked: an unknown or
misspelt key, a wrong type or an out-of-range value raises `ConfigError`,
a one-line message that names the key.

The section and key names are the seed's (F1-VLA's rl_config.yaml), so its
users find them where they expect.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from f1.shared.errors import UserError
from f1.shared.seed_keys import translate


class ConfigError(UserError):
    """A config key, type or value is wrong."""


def _range(ge: float | None = None, le: float | None = None, gt: float | None = None) -> dict:
    return {"ge": ge, "le": le, "gt": gt}


# --------------------------------------------------------------------------- sections


@dataclass
class LoraConfig:
    r: int = field(default=8, metadata=_range(ge=1))
    """LoRA rank."""
    alpha: int = field(default=16, metadata=_range(ge=1))
    """LoRA scaling numerator (scale = alpha / r)."""
    dropout: float = field(default=0.0, metadata=_range(ge=0, le=1))
    """Dropout on the LoRA branch."""
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    """Backbone module names that get adapters."""


@dataclass
class ModelConfig:
    preset: Optional[str] = "tiny"
    """Model size preset, configs/preset_<name>.yaml: tiny (CPU, trains in seconds) or base (GPU)."""
    backbone_path: Optional[str] = None
    """A local directory with a pretrained transformers backbone; None builds one from the sizes below."""
    hidden_size: int = field(default=64, metadata=_range(ge=8))
    """Backbone width."""
    num_layers: int = field(default=2, metadata=_range(ge=1))
    """Backbone decoder layers."""
    num_heads: int = field(default=4, metadata=_range(ge=1))
    """Attention heads (hidden_size must divide by it)."""
    intermediate_size: int = field(default=128, metadata=_range(ge=8))
    """MLP width in the backbone."""
    # image tokenizer (FSQ)
    tokenizer_image_size: int = field(default=64, metadata=_range(ge=16))
    """Side of the square frame the tokenizer sees; frames are resized to it."""
    tokenizer_downsample: int = field(default=4, metadata=_range(ge=2))
    """Spatial downsampling of the tokenizer: tokens per frame = (size / downsample) ** 2."""
    tokenizer_channels: int = field(default=32, metadata=_range(ge=4))
    """Base channel count of the tokenizer's conv encoder/decoder (half of it at full resolution)."""
    tokenizer_levels: list[int] = field(default_factory=lambda: [16, 16, 16, 16])
    """FSQ levels, one per latent channel; the codebook (the world model's vocabulary) has their product of codes."""
    code_dim: int = field(default=32, metadata=_range(ge=2))
    """Width of the bottleneck the memory passes through with memory_project_to_vae_dim (the seed's VAE dim)."""
    # GRU memory
    memory_enabled: bool = True
    """Carry a GRU memory across steps of an episode."""
    memory_hidden: int = field(default=64, metadata=_range(ge=1))
    """GRU hidden size."""
    memory_num_layers: int = field(default=1, metadata=_range(ge=1))
    """GRU layers; memory_state has shape (memory_num_layers, B, memory_hidden)."""
    memory_project_to_vae_dim: bool = True
    """Project the memory to code_dim before it enters the backbone (else to hidden_size directly)."""
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class TrainingConfig:
    seed: int = 0
    """Seed for model init, replay order and sampling."""
    num_episodes: Optional[int] = field(default=None, metadata=_range(ge=1))
    """Stop after this many episodes (replayed offline, or rolled out online); None: no limit."""
    max_steps: Optional[int] = field(default=None, metadata=_range(ge=1))
    """Stop after this many optimizer steps; None: no limit."""
    epochs: int = field(default=36, metadata=_range(ge=1))
    """Passes over the store (offline phases); a small store needs many (36 suit 24 episodes of 40 steps)."""
    steps_per_episode: int = field(default=50, metadata=_range(ge=1))
    """Actions per episode, T; an episode then has T + 1 steps."""
    batch_size: int = field(default=4, metadata=_range(ge=1))
    """Lanes per rank (B)."""
    learning_rate: float = field(default=1e-3, metadata=_range(gt=0))
    """Peak learning rate (the teacher's; the online phases have their own)."""
    weight_decay: float = field(default=0.01, metadata=_range(ge=0))
    """AdamW weight decay."""
    warmup_steps: int = field(default=20, metadata=_range(ge=0))
    """Linear warm-up before the cosine decay."""
    grad_clip: float = field(default=1.0, metadata=_range(gt=0))
    """Gradient-norm clip."""
    action_dim: int = field(default=32, metadata=_range(ge=8))
    """Padded action width; the Panda uses the first 8."""
    state_dim: int = field(default=32, metadata=_range(ge=8))
    """Padded state width."""
    n_obs_img_steps: int = field(default=4, metadata=_range(ge=1))
    """History length h: frames [t-(h-1)s .. t] enter the world model."""
    obs_img_stride: int = field(default=1, metadata=_range(ge=1))
    """History stride s."""
    n_pred_img_steps: int = field(default=1, metadata=_range(ge=1))
    """Frames predicted ahead in training: n > 1 also trains on frames t+2..t+n predicted from the model's own frames."""
    save_every: int = field(default=200, metadata=_range(ge=1))
    """Checkpoint every N optimizer steps (and at the end)."""
    log_every: int = field(default=10, metadata=_range(ge=1))
    """Log metrics every N optimizer steps."""
    sample_every: int = field(default=200, metadata=_range(ge=1))
    """Write a sample PNG and video every N optimizer steps (and at the end)."""
    sequential_training: bool = True
    """Replay whole episodes in order for truncated BPTT; false samples random windows."""
    bptt_length: int = field(default=8, metadata=_range(ge=1))
    """Chunk length L of truncated BPTT."""
    memory_backprop: bool = True
    """Backpropagate through the memory within a chunk; false detaches it every step."""
    prefetch_chunks: int = field(default=4, metadata=_range(ge=0))
    """Chunks the background reader keeps ready (0: read in the training thread)."""
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    """Accelerate mixed precision."""


@dataclass
class DomainRandomizationConfig:
    cluttered_table: bool = True
    """Scatter random primitive objects on the table."""
    min_objects: int = field(default=2, metadata=_range(ge=0))
    """Fewest clutter objects."""
    max_objects: int = field(default=6, metadata=_range(ge=0))
    """Most clutter objects."""
    random_background: bool = True
    """Random wall and table colours and procedural textures."""
    random_light: bool = True
    """Random ambient and directional light: intensity, colour, direction."""
    random_appearance: bool = True
    """Random tint of robot and table materials."""


@dataclass
class EnvironmentConfig:
    task_name: str = "explore_tabletop"
    """Scene/task name (one task today: free exploration over a cluttered table)."""
    embodiment: Literal["panda"] = "panda"
    """Robot model."""
    single_arm: bool = True
    """One arm (the only mode f1 supports)."""
    control_mode: Literal["delta_qpos"] = "delta_qpos"
    """Actions are joint-position deltas plus a gripper command."""
    control_freq: int = field(default=20, metadata=_range(ge=1))
    """Control steps per simulated second."""
    sim_substeps: int = field(default=5, metadata=_range(ge=1))
    """Physics substeps per control step."""
    action_scale: float = field(default=0.1, metadata=_range(gt=0))
    """Radians of joint motion per unit of action."""
    image_size: list[int] = field(default_factory=lambda: [128, 128])
    """Camera image [height, width] for both cameras."""
    depth: bool = False
    """Keep the wrist camera's depth (uint16 millimetres along the viewing axis) in the env's info and the store."""
    scene_reset_interval: int = field(default=1, metadata=_range(ge=1))
    """Rebuild the scene (clutter, textures, light) every N episodes; reset only re-places in between.

    The seed reuses a scene for 10 episodes; f1 builds a new one every episode by default: a
    24-episode store then holds 24 scenes instead of 3, which the held-out figures of both models
    need (docs/experiments.md, "Departures this needed"), and a rebuild costs little next to an episode."""
    home_noise: float = field(default=0.1, metadata=_range(ge=0))
    """Std of the noise added to the home joint pose at reset (radians)."""
    robot_meshes: Literal["light", "full"] = "light"
    """Robot visuals: light draws the collision meshes (~2k triangles, ~10x faster on lavapipe); full the detailed ones."""
    robot_assets_dir: Optional[str] = None
    """Folder with panda_v2.urdf and franka_description/ (a copy of mani-skill's assets/robots/panda); unset: F1_ROBOT_ASSETS, then mani-skill."""
    privileged_info: bool = True
    """Whether the env's info carries the clutter's poses and the robot-object contacts (simulator state no real
    robot reports). Off: the privileged reward term and the explore/ figures are skipped; `f1 collect` and
    --record need it on (the store keeps them)."""
    domain_randomization: DomainRandomizationConfig = field(default_factory=DomainRandomizationConfig)


@dataclass
class LoggingConfig:
    console_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    """Console log level."""
    file_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "DEBUG"
    """Level of the log file under <output_dir>/logs/."""
    enable_file_logging: bool = True
    """Write the log file."""
    tensorboard: bool = True
    """Write tensorboard event files under <output_dir>/tensorboard/."""


@dataclass
class TeacherConfig:
    output_dir: str = "outputs/teacher"
    """Where checkpoints, samples, videos and logs go."""
    tokenizer_path: Optional[str] = None
    """Trained tokenizer directory (`f1 train tokenizer` output)."""
    use_head_camera: bool = True
    """Feed the head camera frame as well as the wrist history."""
    cache_tokens: bool = True
    """Tokenise each frame once (2 bytes a token); false re-tokenises every chunk's frames."""
    token_store: bool = True
    """Keep the tokens in a token store on disk (built when absent, kept for the next run, read by memory map);
    false keeps them in each rank's memory, tokenised again by every run."""
    token_store_dir: Optional[str] = None
    """The token store's folder; None: <store>/tokens/<tokenizer key>/ (an s3:// store: ~/.cache/f1/tokens/...)."""
    head_dropout: float = field(default=0.3, metadata=_range(ge=0, le=1))
    """Share of chunks trained without the head frame, so the teacher also predicts from the wrist alone (the online phases)."""


@dataclass
class TokenizerTrainConfig:
    output_dir: str = "outputs/tokenizer"
    """Where the tokenizer and its reconstruction PNG go."""
    max_steps: int = field(default=1600, metadata=_range(ge=1))
    """Optimizer steps."""
    batch_size: int = field(default=16, metadata=_range(ge=1))
    """Frames per batch (16 x 1600 steps beat 32 x 800 at the same cost: bench/RESULTS.md, "tokenizer: edges")."""
    learning_rate: float = field(default=1e-3, metadata=_range(gt=0))
    """Adam learning rate."""
    gradient_weight: float = field(default=1.0, metadata=_range(ge=0))
    """Weight of the L1 loss on image differences (edges) beside the pixel L1."""
    ssim_weight: float = field(default=0.2, metadata=_range(ge=0))
    """Weight of the 1 - SSIM loss (local structure, 7x7 windows)."""
    spectrum_weight: float = field(default=3.0, metadata=_range(ge=0))
    """Weight of the L1 between Fourier amplitudes (penalises blur and ringing alike)."""
    colour_jitter: bool = True
    """Train on frames with their colour channels permuted and scaled, so unseen scenes' colours survive."""


@dataclass
class StudentConfig:
    output_dir: str = "outputs/student"
    """Where checkpoints, logs and videos go."""
    teacher_path: Optional[str] = None
    """Teacher checkpoint directory."""
    init_explorer: Optional[str] = None
    """A student checkpoint (online, or `--data` imagination) on the same teacher whose explorer a new run starts from."""
    memory_divergence_weight: float = field(default=0.0, metadata=_range(ge=0))
    """Weight of the memory-divergence reward term (the seed's 1.0; f1's default pays the proprioceptive ensemble's error instead)."""
    wm_uncertainty_weight: float = field(default=0.0, metadata=_range(ge=0))
    """Weight of the world-model-uncertainty reward term (the seed's 1.0)."""
    prediction_error_weight: float = field(default=0.0, metadata=_range(ge=0))
    """Weight of the world model's prediction error on the frame reached (the adversarial phase's reward; 0: off)."""
    surprise_weight: float = field(default=0.0, metadata=_range(ge=0))
    """Weight of surprise = prediction error - uncertainty (f1.train.online.rewards; 0: off)."""
    unexplained_change_weight: float = field(default=0.0, metadata=_range(ge=0))
    """Weight of the frame change the world model's motion stage does not explain (f1.train.online.rewards; 0: off)."""
    clutter_motion_weight: float = field(default=0.0, metadata=_range(ge=0))
    """Weight of the clutter objects the action moved, from the simulator's poses (f1.train.online.rewards; privileged:
    the measured ceiling, 1 before issue 27; 0: off)."""
    ensemble_disagreement_weight: float = field(default=0.0, metadata=_range(ge=0))
    """Weight of the proprioceptive ensemble's disagreement (f1.train.online.curiosity; normalised, 0: off)."""
    ensemble_error_weight: float = field(default=1.0, metadata=_range(ge=0))
    """Weight of the proprioceptive ensemble's prediction error (f1.train.online.curiosity; normalised; the default
    reward: the best non-privileged contact signal measured, bench/RESULTS.md "bench_curiosity_auc")."""
    ensemble_heads: int = field(default=5, metadata=_range(ge=2))
    """Heads of the curiosity ensemble, each trained on its own bootstrap mask."""
    ensemble_hidden: int = field(default=64, metadata=_range(ge=1))
    """Width of each head's two hidden layers."""
    ensemble_replay: int = field(default=8192, metadata=_range(ge=1))
    """Transitions the ensemble's FIFO replay keeps (per rank)."""
    ensemble_updates: int = field(default=16, metadata=_range(ge=0))
    """Ensemble minibatch updates (256 transitions each) per iteration, after the rollout is scored."""
    ensemble_learning_rate: float = field(default=1e-3, metadata=_range(gt=0))
    """The ensemble's Adam learning rate."""
    total_iterations: int = field(default=20, metadata=_range(ge=1))
    """PPO iterations (one rollout + update each)."""
    envs: int = field(default=1, metadata=_range(ge=1))
    """Live environments stepped together."""
    gamma: float = field(default=0.95, metadata=_range(ge=0, le=1))
    """Discount."""
    gae_lambda: float = field(default=0.9, metadata=_range(ge=0, le=1))
    """GAE lambda."""
    clip_coef: float = field(default=0.2, metadata=_range(gt=0))
    """PPO ratio clip."""
    update_epochs: int = field(default=2, metadata=_range(ge=1))
    """PPO epochs per rollout."""
    num_minibatches: int = field(default=4, metadata=_range(ge=1))
    """PPO minibatches per epoch: the rollout's steps x envs split this many ways."""
    ent_coef: float = field(default=0.001, metadata=_range(ge=0))
    """Entropy bonus."""
    vf_coef: float = field(default=0.5, metadata=_range(ge=0))
    """Value loss weight."""
    learning_rate: float = field(default=3e-4, metadata=_range(gt=0))
    """Explorer learning rate."""
    imagine_horizon: int = field(default=15, metadata=_range(ge=1))
    """`f1 train student --data`: imagined steps per rollout (the world model rolled forward from a replayed step)."""
    imagine_starts: int = field(default=32, metadata=_range(ge=1))
    """`f1 train student --data`: replayed steps each iteration's imagined rollouts start from (at most the chunk's)."""


@dataclass
class AdversarialConfig:
    output_dir: str = "outputs/adversarial"
    """Where checkpoints, logs and videos go."""
    teacher_checkpoint: Optional[str] = None
    """Teacher checkpoint directory."""
    student_checkpoint: Optional[str] = None
    """Student checkpoint directory."""
    total_iterations: int = field(default=10, metadata=_range(ge=1))
    """Alternations (explorer rollout + world-model update + explorer update)."""
    wm_updates_per_iteration: int = field(default=4, metadata=_range(ge=1))
    """World-model TBPTT chunks trained per iteration on fresh explorer data."""
    prediction_error_weight: float = field(default=1.0, metadata=_range(ge=0))
    """Weight of the world model's prediction error in the explorer's reward."""
    wm_learning_rate: float = field(default=1e-4, metadata=_range(gt=0))
    """World-model learning rate in this phase."""


@dataclass
class CollectConfig:
    gpus: int = field(default=0, metadata=_range(ge=0))
    """GPUs to use, one worker process each; 0: CPU only."""
    envs: int = field(default=2, metadata=_range(ge=1))
    """Environments per worker, stepped together."""
    workers: Optional[int] = field(default=None, metadata=_range(ge=1))
    """CPU worker processes when gpus is 0 (None: one per core)."""
    episodes: int = field(default=8, metadata=_range(ge=1))
    """Total episodes for the run, over all workers and envs."""
    format: Literal["zarr", "webdataset"] = "zarr"
    """Store format."""
    episodes_per_shard: int = field(default=8, metadata=_range(ge=1))
    """Episodes a worker puts in one shard before it finalises it."""
    policy: Literal["random", "ou", "lookaway"] = "ou"
    """Exploration policy: uniform random, Ornstein-Uhlenbeck correlated noise, or the scripted look-away-and-back."""
    seed: int = 0
    """Base seed; each episode's env seed derives from it and the episode's index."""
    image_codec: str = "auto"
    """Lossless image codec: auto (the store's, else zarr: zstd, webdataset: png); zarr: zstd, delta-zstd,
    blosc-zstd, blosc-lz4; webdataset: png, npy (measured in f1.datasets.codecs)."""
    node_rank: int = field(default=0, metadata=_range(ge=0))
    """This machine's index when several machines write one store."""
    num_nodes: int = field(default=1, metadata=_range(ge=1))
    """Machines writing one store."""


@dataclass
class F1Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    environment: EnvironmentConfig = field(default_factory=EnvironmentConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    tokenizer: TokenizerTrainConfig = field(default_factory=TokenizerTrainConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- checks across keys


def _check_consistency(cfg: F1Config) -> None:
    m, e, dr = cfg.model, cfg.environment, cfg.environment.domain_randomization
    if m.hidden_size % m.num_heads:
        raise ConfigError(f"model.hidden_size={m.hidden_size} must be divisible by model.num_heads={m.num_heads}")
    if m.tokenizer_image_size % m.tokenizer_downsample:
        raise ConfigError(
            f"model.tokenizer_image_size={m.tokenizer_image_size} must be divisible by "
            f"model.tokenizer_downsample={m.tokenizer_downsample}"
        )
    if cfg.training.n_pred_img_steps > cfg.training.bptt_length:
        raise ConfigError(
            f"training.n_pred_img_steps={cfg.training.n_pred_img_steps} exceeds training.bptt_length={cfg.training.bptt_length}: "
            "frames ahead are predicted within a chunk; lower it or raise bptt_length"
        )
    if len(e.image_size) != 2 or min(e.image_size) < 16:
        raise ConfigError(f"environment.image_size={e.image_size} must be [height, width], each at least 16")
    if dr.min_objects > dr.max_objects:
        raise ConfigError(
            f"environment.domain_randomization.min_objects={dr.min_objects} exceeds max_objects={dr.max_objects}"
        )
    if cfg.collect.node_rank >= cfg.collect.num_nodes:
        raise ConfigError(
            f"collect.node_rank={cfg.collect.node_rank} must be below collect.num_nodes={cfg.collect.num_nodes}"
        )


# --------------------------------------------------------------------------- typed building


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check `value` against the annotation `tp`; return it (ints widen to float)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg)
            except ConfigError:
                pass
        raise ConfigError(f"config key '{key}' must be {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"config key '{key}' must be one of {list(choices)}, got {value!r}")
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list of {_type_name(item_tp)}, got {value!r}")
        return [_coerce(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {tp!r} for {key}")


def _check_range(key: str, value: Any, meta: typing.Mapping) -> None:
    if value is None or not isinstance(value, (int, float)):
        return
    if meta.get("ge") is not None and value < meta["ge"]:
        raise ConfigError(f"config key '{key}' must be >= {meta['ge']}, got {value}")
    if meta.get("le") is not None and value > meta["le"]:
        raise ConfigError(f"config key '{key}' must be <= {meta['le']}, got {value}")
    if meta.get("gt") is not None and value <= meta["gt"]:
        raise ConfigError(f"config key '{key}' must be > {meta['gt']}, got {value}")


def _apply(obj: Any, values: dict, prefix: str, source: str, seen: Optional[set] = None) -> None:
    """Write `values` (nested dicts) into the dataclass `obj`, checking every key; `seen` collects the dotted keys set."""
    if not isinstance(values, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<root>'}' in {source} must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(obj)}
    hints = typing.get_type_hints(type(obj))
    for name, value in values.items():
        key = f"{prefix}{name}"
        if name not in fields:
            close = difflib.get_close_matches(str(name), list(fields), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key '{key}' in {source}{hint}")
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            _apply(current, value, f"{key}.", source, seen)
            continue
        coerced = _coerce(key, value, hints[name])
        _check_range(key, coerced, fields[name].metadata)
        setattr(obj, name, coerced)
        if seen is not None:
            seen.add(key)


# --------------------------------------------------------------------------- loading


def config_dir() -> Path:
    """The directory holding rl_config.yaml and the presets (installed as f1.configs)."""
    return Path(str(resources.files("f1.configs")))


def default_config_path() -> Path:
    return config_dir() / "rl_config.yaml"


class _Yaml12Numbers(yaml.SafeLoader):
    """PyYAML follows YAML 1.1, which reads 1e-4 (no dot) as a string; YAML 1.2 and every user read a number."""


_Yaml12Numbers.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass an existing file to --config")
    try:
        data = yaml.load(path.read_text(), Loader=_Yaml12Numbers)
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}; fix its syntax") from None
    return data or {}


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (['a','b','c'], value parsed as YAML: 3, 0.1, true, [q_proj,v_proj], null)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' names no key; use section.key=value")
    try:
        value = yaml.load(raw, Loader=_Yaml12Numbers) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _nest(path: list[str], value: Any) -> dict:
    out: dict = {}
    node = out
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    return out


def load_config(
    path: str | Path | None = None,
    overrides: typing.Sequence[str] = (),
    flags: Optional[dict[str, Any]] = None,
) -> F1Config:
    """Build the config: defaults <- preset <- YAML file <- `--set` overrides <- CLI flags.

    `flags` maps dotted keys to values from command-line options; None values are skipped
    (the flag was not given).
    """
    cfg = F1Config()
    file_path = Path(path) if path is not None else default_config_path()
    file_values, warnings = translate(_read_yaml(file_path))
    parsed = []
    for keys, value in map(parse_override, overrides):
        nested, dropped = translate(_nest(keys, value))
        warnings += dropped
        parsed.append(nested)
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    flag_items = [(k.split("."), v) for k, v in (flags or {}).items() if v is not None]

    # The preset is chosen by the last word on model.preset, wherever it came from,
    # and applied first, so that the file and the overrides refine it.
    preset = (file_values.get("model") or {}).get("preset", cfg.model.preset) if isinstance(file_values, dict) else None
    for nested in parsed:
        preset = (nested.get("model") or {}).get("preset", preset)
    for keys, value in flag_items:
        if keys == ["model", "preset"]:
            preset = value

    if preset:
        preset_path = config_dir() / f"preset_{preset}.yaml"
        if not preset_path.is_file():
            known = sorted(p.stem.removeprefix("preset_") for p in config_dir().glob("preset_*.yaml"))
            raise ConfigError(f"config key 'model.preset' names unknown preset {preset!r}; choose one of {known}")
        _apply(cfg, _read_yaml(preset_path), "", str(preset_path))
    # What the user set (their file, --set, flags) rather than the defaults, the preset or the packaged file.
    explicit: set[str] = set()
    _apply(cfg, file_values, "", str(file_path), explicit if path is not None else None)
    for nested in parsed:
        _apply(cfg, nested, "", "--set", explicit)
    for keys, value in flag_items:
        _apply(cfg, _nest(keys, value), "", "command-line flags", explicit)
    _check_consistency(cfg)
    cfg._explicit = frozenset(explicit)
    return cfg


def set_explicitly(cfg: F1Config, key: str) -> bool:
    """Whether the user set dotted `key` in their config file, a `--set` or a flag (False for a rebuilt config)."""
    return key in getattr(cfg, "_explicit", frozenset())


def config_from_dict(values: dict) -> F1Config:
    """Rebuild a config saved with `to_dict()` (e.g. from a checkpoint), checking it like a file."""
    cfg = F1Config()
    _apply(cfg, values, "", "saved config")
    _check_consistency(cfg)
    return cfg
