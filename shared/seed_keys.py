"""The seed's config spellings (F1-VLA's RL module, `rl/rl_config.yaml`), read as f1's keys.

f1 keeps the seed's section and key names where it has the same setting, but
chose other names for a few, nests a few differently and has no use for some
(the seed drives RoboTwin's planners and an F1-VLA model file). So that a seed
user's file loads as it stands, `translate` maps it onto f1's keys before the
schema checks it:

- ALIASES: the seed's key -> f1's key for the same setting;
- VALUES: the seed's spelling of a value -> f1's;
- IGNORED: keys (or whole sections) f1 has no use for -> why; the keys
  dropped for one reason make one warning line.

Anything else unknown stays an error with a suggestion (a typo in f1's keys).
"""

from __future__ import annotations

from typing import Any

ALIASES = {
    "model.lora.lora_alpha": "model.lora.alpha",
    "model.lora.lora_dropout": "model.lora.dropout",
    "training.max_grad_norm": "training.grad_clip",
    # The seed saves a video and a sample image on these cadences; f1 writes both on one.
    "training.video_save_every": "training.sample_every",
    "training.sample_save_every": "training.sample_every",
    "student.rewards.memory_divergence_weight": "student.memory_divergence_weight",
    "student.rewards.wm_uncertainty_weight": "student.wm_uncertainty_weight",
    "student.ppo.clip_epsilon": "student.clip_coef",
    "student.ppo.entropy_coef": "student.ent_coef",
    "student.ppo.value_loss_coef": "student.vf_coef",
    "student.ppo.gamma": "student.gamma",
    "student.ppo.gae_lambda": "student.gae_lambda",
    "adversarial.wm_updates_per_iter": "adversarial.wm_updates_per_iteration",
    "adversarial.wm_lr": "adversarial.wm_learning_rate",
}

_PANDA = {"panda", "franka-panda", "franka_panda", "franka"}


def _embodiment(value: Any) -> Any:
    """The seed lists embodiments (["franka-panda"]); f1 has one robot, named "panda"."""
    names = value if isinstance(value, list) else [value]
    if len(names) == 1 and isinstance(names[0], str) and names[0].lower() in _PANDA:
        return "panda"
    return value  # anything else: the schema names the key and the choices


VALUES = {"environment.embodiment": _embodiment}

_PHASE_FIXED = "fixed by the phase in f1 (each phase trains and freezes what DESIGN.md section 5 says)"
IGNORED = {
    "model.config_file": "an F1-VLA model file; f1 builds its model from the model section and model.preset",
    "model.lora.bias": "f1's LoRA adapters have no bias",
    "model.lora.task_type": "f1's backbone is its own, not a PEFT task model",
    "environment.randomize_robot_init": "f1 always perturbs the home pose by environment.home_noise",
    "environment.need_planner": "RoboTwin's motion planner; f1 steps joint deltas without one",
    "environment.need_topp": "RoboTwin's motion planner; f1 steps joint deltas without one",
    "environment.delta_qpos_scale": "f1's joint-delta scale is environment.action_scale",
    "environment.render_mode": "f1 always rasterises",
    "environment.num_objects": "f1 draws the clutter count between domain_randomization.min_objects and max_objects",
    "environment.camera": "f1 always records its head and wrist cameras",
    "environment.data_type": "f1 always records RGB, state and actions",
    "training.gradient_accumulation_steps": "f1 steps the optimizer every chunk (raise training.batch_size instead)",
    "training.scheduler": "f1's schedule is linear warm-up (training.warmup_steps) then cosine over the planned steps",
    "training.action_scale": "f1's joint-delta scale is environment.action_scale",
    "training.action_bounds": "f1's actions are always in [-1, 1]",
    "teacher.exploration_type": _PHASE_FIXED,
    "teacher.train_world_model": _PHASE_FIXED,
    "teacher.train_action_head": _PHASE_FIXED,
    "teacher.freeze_vision_encoder": _PHASE_FIXED,
    "student.exploration_type": _PHASE_FIXED,
    "student.train_world_model": _PHASE_FIXED,
    "student.train_action_head": _PHASE_FIXED,
    "student.freeze_vision_encoder": _PHASE_FIXED,
    "adversarial.explorer_updates_per_iter": "f1 updates the explorer once per iteration",
    "adversarial.warmup_steps": "f1's adversarial phase starts from trained teacher and student checkpoints",
    "adversarial.buffer_size": "f1 trains on each iteration's fresh rollouts, without a replay buffer",
    "adversarial.adversarial_weight": "f1's explorer reward weight is adversarial.prediction_error_weight",
    "adversarial.entropy_weight": "f1's entropy bonus is student.ent_coef",
    "adversarial.explorer_lr": "f1's explorer learning rate is student.learning_rate",
    "adversarial.explorer": "f1's explorer copies the world model's backbone (its sizes come from model.*)",
    "device": "f1 picks the device from --gpus and what is installed",
    "debug": "f1's log detail is logging.console_level",
}


def _flatten(values: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """Leaves of nested dicts as (dotted key, value); an ignored section stays one leaf."""
    items = []
    for name, value in values.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict) and value and key not in IGNORED:
            items.extend(_flatten(value, f"{key}."))
        else:
            items.append((key, value))
    return items


def _nest(items: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in items:
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def translate(values: Any) -> tuple[Any, list[str]]:
    """(values with the seed's spellings as f1's keys, one warning line per reason for the keys dropped)."""
    if not isinstance(values, dict):
        return values, []  # the schema check names the problem
    kept, dropped = [], {}
    for key, value in _flatten(values):
        if key in IGNORED:
            dropped.setdefault(IGNORED[key], []).append(key)
            continue
        key = ALIASES.get(key, key)
        kept.append((key, VALUES[key](value) if key in VALUES else value))
    warnings = [
        f"config key '{keys[0]}' is ignored: {why}" if len(keys) == 1
        else f"config keys {', '.join(repr(k) for k in keys)} are ignored: {why}"
        for why, keys in dropped.items()
    ]  # fmt: skip
    return _nest(kept), warnings
