"""Live rollouts for the online phases: M envs stepped together, a policy acting, the world model stepped alongside.

    buf = collect_rollout(venv, slots, policy, stepper, reward_fn)   # one whole episode per env

A rollout is exactly one episode of T = training.steps_per_episode actions in
each of the M envs, all started together, so the world model's memory starts
from zeros at step 0 (is_first) in every env and an episode never straddles
two PPO iterations. Per step t, in order:

    1. the policy sees the current wrist frame's tokens and the memory m_t     -> action a_t
    2. the envs apply a_t (real dims clipped to [-1, 1], as the env does)      -> frame t+1
    3. the frozen world model steps on frames [t-(h-1)s .. t], the actions at
       those steps (a_t last), state t and m_t                                  -> next-frame logits, m_{t+1}
    4. the reward terms (f1.train.online.rewards) from its StepSignals: m_t, m_{t+1}, the logits,
       frame t+1 (tokens and pixels), the motion stage's warped frame t and the clutter's poses

Storage is CleanRL's: preallocated (T, M) + shape, or (T + 1, M) + shape for what
exists at every step including the last (tokens, states, memory). Histories are
gathered from the buffer with the replay's rule (DESIGN §2): slots before step 0
repeat step 0 and are flagged in the pad mask, so the world model sees exactly
what the teacher trained on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Protocol, Sequence

import numpy as np
import torch
from torch import Tensor

from f1.shared.normalizers import Normalizer
from f1.train.models.world_model import CodePrediction
from f1.train.online.rewards import StepSignals

ONLINE_SEED_STREAM = 0x0511E  # keeps online episode seeds apart from `f1 collect`'s (same base seed)
RewardFn = Callable[[StepSignals], dict[str, Tensor]]


# --------------------------------------------------------------------------- which episodes run


@dataclass(frozen=True)
class EpisodeSlot:
    """One env's episode in one round: its id, env seed and scene."""

    episode_id: str
    seed: int
    scene_seed: int
    scene_id: int
    new_scene: bool = False  # build the scene anew at reset: a fresh physics state (F1RLEnv.reset's options)


def _seed(*words: int) -> int:
    return int(np.random.SeedSequence([int(w) for w in words]).generate_state(1)[0])


def plan_round(
    seed: int, stream: int, round_index: int, first_slot: int, num_envs: int, scene_reset_interval: int, id_prefix: str
) -> list[EpisodeSlot]:
    """The episodes of round `round_index` for env slots first_slot .. first_slot+num_envs-1 (global over ranks).

    Pure in its arguments, so a resumed run replays the same seeds and scenes: each slot keeps
    its scene for `scene_reset_interval` rounds, the scene seed a function of (slot, block).
    """
    block = round_index // scene_reset_interval
    slots = []
    for slot in range(first_slot, first_slot + num_envs):
        scene = _seed(seed, ONLINE_SEED_STREAM, stream, 1, slot, block)
        slots.append(
            EpisodeSlot(
                episode_id=f"{id_prefix}-r{round_index:06d}-g{slot:03d}",
                seed=_seed(seed, ONLINE_SEED_STREAM, stream, 0, round_index, slot),
                scene_seed=scene,
                scene_id=scene % 2**31,
            )
        )
    return slots


# --------------------------------------------------------------------------- policies


class Policy(Protocol):
    def reset(self, seeds: Sequence[int]) -> None: ...

    def act(self, tokens: Tensor, memory: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """tokens (M,n), memory (L_m,M,Hm) -> (action (M,A), log-prob (M,), value (M,))."""
        ...

    def value(self, tokens: Tensor, memory: Tensor) -> Tensor: ...


class ExplorerPolicy:
    """The explorer's Gaussian (sampled, or its mean when deterministic)."""

    def __init__(self, explorer: torch.nn.Module, deterministic: bool = False):
        self.explorer, self.deterministic = explorer, deterministic

    def reset(self, seeds: Sequence[int]) -> None:
        pass  # draws come from torch's generator, saved in checkpoints

    def act(self, tokens: Tensor, memory: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.explorer.act(tokens, memory, deterministic=self.deterministic)

    def value(self, tokens: Tensor, memory: Tensor) -> Tensor:
        return self.explorer(tokens, memory)[2]


class ScriptedPolicy:
    """`f1 collect`'s exploration policies ("random", "ou"), one per env, seeded by the episode: the baselines."""

    def __init__(self, name: str, action_dim: int, num_envs: int, device: torch.device):
        from f1.collect.policies import make_policy

        self.policies = [make_policy(name, action_dim) for _ in range(num_envs)]
        self.device = device

    def reset(self, seeds: Sequence[int]) -> None:
        for policy, seed in zip(self.policies, seeds):
            policy.reset(seed)

    def act(self, tokens: Tensor, memory: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        actions = torch.from_numpy(np.stack([p.act() for p in self.policies])).to(self.device)  # (M,A)
        zeros = torch.zeros(len(self.policies), device=self.device)
        return actions, zeros, zeros

    def value(self, tokens: Tensor, memory: Tensor) -> Tensor:
        return torch.zeros(len(self.policies), device=self.device)


# --------------------------------------------------------------------------- the buffer


@dataclass
class RolloutBuffer:
    """One rollout: T steps in M envs (one episode each). Tensors live on the training device."""

    tokens: Tensor  # (T+1, M, n) long: wrist tokens of step k
    frames: Tensor  # (T+1, M, 3, S, S) wrist frames of step k at the tokenizer's size (what the motion warps)
    states: Tensor  # (T+1, M, S) raw state at step k
    applied: Tensor  # (T+1, M, A) action applied after step k (as the env clips it); row T is padding zeros
    memory: Tensor  # (T+1, M, L_m, Hm) world-model memory m_k before step k (m_0 = 0)
    actions: Tensor  # (T, M, A) the policy's draw (unclipped): what PPO scores
    logprobs: Tensor  # (T, M)
    values: Tensor  # (T, M)
    rewards: Tensor  # (T, M) reward/total
    terminated: Tensor  # (T, M) bool: action t ended the episode in a terminal state
    prediction_ce: Tensor  # (T, M) world model's cross-entropy (nats) on frame t+1: its loss on this data
    predicted_tokens: Tensor  # (T, M, n) the most likely codes of frame t+1 (the mixture's mode)
    terms: dict[str, Tensor]  # name -> (T, M), every reward term
    next_value: Tensor  # (M,) value of the final observation (the episodes are truncated there)
    joint_velocity: Tensor  # (T+1, M, 9) joint velocities at step k (rad/s, arm then fingers; from the live env only)
    ee_pos: np.ndarray  # (T+1, M, 3) end-effector positions, metres
    # The simulator's privileged state; None when the env does not expose it (environment.privileged_info off):
    object_pose: Optional[np.ndarray]  # (T+1, M, slots, 7) clutter poses (position, quaternion wxyz), zeros where not valid
    object_valid: Optional[np.ndarray]  # (T+1, M, slots) bool: the slot holds an object on the table
    object_contact: Optional[np.ndarray]  # (T+1, M) bool: the robot touched the clutter in the physics leading to step k
    slots: list[EpisodeSlot]
    wrist_frames: Optional[np.ndarray] = None  # (T+1, H, W, 3) env 0's frames, when kept for a video
    episodes: list[tuple[dict[str, np.ndarray], Any]] = field(default_factory=list)  # (arrays, EpisodeMeta) to record
    seconds: dict[str, float] = field(default_factory=dict)  # env / policy / world_model time

    @property
    def num_steps(self) -> int:
        return self.actions.shape[0]

    @property
    def num_envs(self) -> int:
        return self.actions.shape[1]


def rollout_inputs(
    tokens: Tensor,
    frames: Tensor,
    applied: Tensor,
    states: Tensor,
    steps: Tensor,
    history: int,
    stride: int,
    normalizers: Mapping[str, Normalizer],
) -> dict[str, Tensor]:
    """The world model's inputs at `steps` (L,) of every env: ChunkModel's dict, each (M, L, ...).

    tokens (T+1,M,n), frames (T+1,M,3,S,S), applied (T+1,M,A), states (T+1,M,S): a rollout's per-step arrays.
    History slots t-(h-1)s .. t; before step 0 they repeat step 0 and are padded (the replay's rule).
    """
    offsets = (torch.arange(history, device=steps.device) - (history - 1)) * stride  # (h,) oldest first
    hist_steps = steps[:, None] + offsets  # (L,h)
    index = hist_steps.clamp(min=0)  # (L,h)
    m, length = tokens.shape[1], steps.shape[0]
    return {
        "wrist_hist": tokens[index].permute(2, 0, 1, 3),  # (L,h,M,n) -> (M,L,h,n)
        "action_hist": normalizers["action"].normalize(applied[index].float()).permute(2, 0, 1, 3),  # (M,L,h,A)
        "state": normalizers["state"].normalize(states[steps].float()).transpose(0, 1),  # (M,L,S)
        "pad_mask": (hist_steps < 0)[None].expand(m, length, history),  # (M,L,h)
        "is_first": (steps == 0)[None].expand(m, length),  # (M,L)
        "frame": frames[steps].transpose(0, 1),  # (M,L,3,S,S)
    }


class WorldModelStepper:
    """The world model stepped one step at a time over a rollout buffer (no head camera: the envs are wrist-only).

    history, stride: the world model's training.n_obs_img_steps / obs_img_stride (from its own config).
    """

    def __init__(
        self,
        world_model: torch.nn.Module,
        tokenizer: torch.nn.Module,
        normalizers: Mapping[str, Normalizer],
        history: int,
        stride: int,
    ):
        assert history == world_model.history, ("history differs from the world model's", history, world_model.history)
        self.world_model, self.tokenizer, self.normalizers = world_model, tokenizer, normalizers
        self.history, self.stride = history, stride

    def _inputs(self, buf: RolloutBuffer, t: int) -> tuple[dict[str, Tensor], Tensor]:
        """Step t's world-model inputs (M,...) and its memory m_t (L_m,M,Hm)."""
        steps = torch.tensor([t], device=buf.tokens.device)
        inputs = rollout_inputs(buf.tokens, buf.frames, buf.applied, buf.states, steps, self.history, self.stride, self.normalizers)
        inputs = {k: v[:, 0] for k, v in inputs.items()}  # the one step: (M,1,...) -> (M,...)
        return inputs, buf.memory[t].transpose(0, 1).contiguous()  # (M,L_m,Hm) -> (L_m,M,Hm)

    def advance(self, buf: RolloutBuffer, t: int) -> Tensor:
        """m_{t+1} (L_m,M,Hm) alone, without the prediction (the memory's inputs are step t's own)."""
        inputs, memory = self._inputs(buf, t)
        return self.world_model.advance_memory(
            inputs["wrist_hist"][:, -1], inputs["action_hist"][:, -1], inputs["state"], memory, inputs["is_first"], step_index=t
        )  # fmt: skip

    def step(self, buf: RolloutBuffer, t: int) -> tuple[CodePrediction, Tensor, Tensor]:
        """-> (the next frame's predicted codes (M,n) and logits (M,n,sum(levels)), m_{t+1} (L_m,M,Hm), frame t warped by the motion (M,3,S,S))
        for step t (buf.applied[t] must hold a_t)."""
        inputs, memory = self._inputs(buf, t)
        warped, proposal = self.world_model.propose_from(self.tokenizer, inputs)  # (M,3,S,S), (M,n)
        prediction, next_memory = self.world_model.step(
            inputs["wrist_hist"], None, inputs["action_hist"], inputs["state"], inputs["pad_mask"], memory,
            inputs["is_first"], step_index=t, proposal=proposal,
        )  # fmt: skip
        return prediction, next_memory, warped


# --------------------------------------------------------------------------- the rollout


def clip_action(action: Tensor, real_dims: int) -> Tensor:
    """What the env applies: real dims clipped to [-1, 1], padding zeroed. (M,A) -> (M,A)."""
    applied = torch.zeros_like(action)
    applied[:, :real_dims] = action[:, :real_dims].clamp(-1.0, 1.0)
    return applied


@torch.no_grad()
def collect_rollout(
    venv: Any,
    slots: Sequence[EpisodeSlot],
    policy: Policy,
    stepper: WorldModelStepper,
    reward_fn: RewardFn,
    *,
    num_steps: int,
    device: torch.device,
    record: bool = False,
    keep_video: bool = False,
    predict: bool = True,
) -> RolloutBuffer:
    """Reset every env to its slot's episode and run `num_steps` actions; see the module docstring.

    predict false: the world model only carries the memory (step 3 gives m_{t+1}, no logits, no warp):
    the reward's terms then see no prediction (StepSignals' logits and warped are None), and
    buf.prediction_ce and buf.predicted_tokens stay zeros. A world-model step is most of a rollout's time.

    record: also keep each env's episode in the store schema (head + wrist frames, states, actions)
    as (arrays, EpisodeMeta) pairs in `buf.episodes`; the envs must then have both cameras.
    """
    from f1.collect.env_spec import REAL_ACTION_DIMS
    from f1.collect.episode_buffer import EpisodeBuffer, camera_keys_in
    from f1.datasets import EpisodeMeta
    from f1.train.offline.token_cache import preprocess_frames

    wm, tokenizer = stepper.world_model, stepper.tokenizer
    m, n = len(slots), tokenizer.n_tokens
    action_dim, state_dim = wm.action_dim, wm.state_dim
    timers = {"env": 0.0, "policy": 0.0, "world_model": 0.0}

    t0 = time.perf_counter()
    obs, infos = venv.reset(
        seeds=[s.seed for s in slots],
        options=[{"scene_seed": s.scene_seed, "scene_id": s.scene_id, "new_scene": s.new_scene} for s in slots],
    )
    timers["env"] += time.perf_counter() - t0
    policy.reset([s.seed for s in slots])

    def zeros(*shape, dtype=torch.float32):
        return torch.zeros(*shape, dtype=dtype, device=device)

    memory0 = wm.initial_memory(m, device)  # (L_m,M,Hm)
    privileged = "object_valid" in infos[0]  # the env exposes the clutter's poses and contacts
    object_slots = len(infos[0]["object_valid"]) if privileged else 0
    buf = RolloutBuffer(
        tokens=zeros(num_steps + 1, m, n, dtype=torch.long),
        frames=zeros(num_steps + 1, m, 3, tokenizer.image_size, tokenizer.image_size),
        states=zeros(num_steps + 1, m, state_dim),
        applied=zeros(num_steps + 1, m, action_dim),
        memory=zeros(num_steps + 1, m, *memory0.transpose(0, 1).shape[1:]),
        actions=zeros(num_steps, m, action_dim),
        logprobs=zeros(num_steps, m),
        values=zeros(num_steps, m),
        rewards=zeros(num_steps, m),
        terminated=zeros(num_steps, m, dtype=torch.bool),
        prediction_ce=zeros(num_steps, m),
        predicted_tokens=zeros(num_steps, m, n, dtype=torch.long),
        terms={},
        next_value=zeros(m),
        joint_velocity=zeros(num_steps + 1, m, len(infos[0]["joint_velocity"])),
        ee_pos=np.zeros((num_steps + 1, m, 3), np.float32),
        object_pose=np.zeros((num_steps + 1, m, object_slots, 7), np.float32) if privileged else None,
        object_valid=np.zeros((num_steps + 1, m, object_slots), bool) if privileged else None,
        object_contact=np.zeros((num_steps + 1, m), bool) if privileged else None,
        slots=list(slots),
    )
    cams = camera_keys_in(infos[0])  # with --record: both cameras' poses and intrinsics, the depth if on
    episode_buffers = [EpisodeBuffer(num_steps, action_dim, object_slots, cams) for _ in slots] if record else []
    video = [obs[0]["wrist_rgb"]] if keep_video else None

    def observe(k: int, obs: list[dict], infos: list[dict]) -> None:
        start = time.perf_counter()
        wrist = torch.from_numpy(np.stack([o["wrist_rgb"] for o in obs])).to(device)  # (M,H,W,3) uint8
        buf.tokens[k] = tokenizer.encode(wrist)  # (M,n)
        buf.frames[k] = preprocess_frames(tokenizer, wrist)  # (M,3,S,S)
        timers["world_model"] += time.perf_counter() - start
        buf.states[k] = torch.from_numpy(np.stack([o["state"] for o in obs])).to(device)
        buf.ee_pos[k] = np.stack([info["ee_pos"] for info in infos])
        buf.joint_velocity[k] = torch.from_numpy(np.stack([info["joint_velocity"] for info in infos])).to(device)
        if privileged:
            buf.object_pose[k] = np.stack([info["object_pose"] for info in infos])
            buf.object_valid[k] = np.stack([info["object_valid"] for info in infos])
            buf.object_contact[k] = [info["object_contact"] for info in infos]

    observe(0, obs, infos)
    step_infos = infos  # the infos that came with `obs`
    for t in range(num_steps):
        start = time.perf_counter()
        memory = buf.memory[t].transpose(0, 1).contiguous()  # (L_m,M,Hm)
        action, logprob, value = policy.act(buf.tokens[t], memory)  # (M,A), (M,), (M,)
        timers["policy"] += time.perf_counter() - start
        buf.actions[t], buf.logprobs[t], buf.values[t] = action, logprob, value
        buf.applied[t] = clip_action(action, REAL_ACTION_DIMS)
        applied_np = buf.applied[t].cpu().numpy()

        start = time.perf_counter()
        next_obs, _, terminated, _, infos = venv.step(applied_np)
        timers["env"] += time.perf_counter() - start
        buf.terminated[t] = torch.from_numpy(np.asarray(terminated, bool)).to(device)
        for ep, ob, act, info in zip(episode_buffers, obs, applied_np, step_infos):
            ep.add(ob, act, info)
        observe(t + 1, next_obs, infos)

        start = time.perf_counter()
        if predict:
            (logits, predicted), next_memory, warped = stepper.step(buf, t)  # (M,n,sum(levels)), (M,n), (L_m,M,Hm), (M,3,S,S)
            buf.prediction_ce[t] = stepper.world_model.codes.nll(logits, buf.tokens[t + 1]).mean(1)  # (M,n) -> (M,)
            buf.predicted_tokens[t] = predicted
        else:
            logits, warped, next_memory = None, None, stepper.advance(buf, t)  # (L_m,M,Hm)
        buf.memory[t + 1] = next_memory.transpose(0, 1)
        objects, on_table = (None, None), None
        if privileged:
            objects = torch.from_numpy(buf.object_pose[t : t + 2, :, :, :3]).to(device)  # (2,M,slots,3)
            on_table = torch.from_numpy(buf.object_valid[t] & buf.object_valid[t + 1]).to(device)  # (M,slots)
        terms = reward_fn(
            StepSignals(memory, next_memory, logits, buf.tokens[t + 1], warped, buf.frames[t + 1], objects[0], objects[1], on_table)
        )
        for name, term in terms.items():
            buf.terms.setdefault(name, zeros(num_steps, m))[t] = term
        buf.rewards[t] = terms["reward/total"]
        timers["world_model"] += time.perf_counter() - start
        if video is not None:
            video.append(next_obs[0]["wrist_rgb"])
        obs, step_infos = next_obs, infos

    start = time.perf_counter()
    buf.next_value = policy.value(buf.tokens[num_steps], buf.memory[num_steps].transpose(0, 1).contiguous())
    timers["policy"] += time.perf_counter() - start
    for ep, ob, term, info, slot in zip(episode_buffers, obs, buf.terminated[-1].tolist(), infos, slots):
        ep.finish(ob, terminated=bool(term), info=info)
        meta = EpisodeMeta(slot.episode_id, slot.seed, slot.scene_id, info.get("randomization", {}), num_steps + 1)
        buf.episodes.append((ep.arrays(), meta))
    buf.wrist_frames = np.stack(video) if video is not None else None
    buf.seconds = timers
    return buf


def make_online_env(cfg: Any, num_envs: int, record: bool, render_device: Optional[str]) -> Any:
    """M live envs with StudentEnv's wrist camera only, or with --record the head camera too.

    Recording renders the head camera so the store has both cameras, like `f1 collect`'s
    (a teacher may train on it); the explorer and the world model never see the head frame.
    """
    from f1.collect.vector import make_vector_env

    cameras = ("head", "wrist") if record else ("wrist",)
    return make_vector_env(cfg, num_envs, cameras=cameras, render_device=render_device)
