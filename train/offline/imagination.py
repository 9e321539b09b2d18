"""Rollouts in the world model's imagination: start from replayed steps of a store, roll the frozen model forward.

    starts = replay_starts(world_model, chunk, inputs, memory, normalizers)   # every replayed step a start
    dream = imagine(starts.take(rows), explorer, world_model, tokenizer, ensemble, normalizers, horizon, action_scale)

A start is a real step t of a replayed chunk, with everything the online rollout would hold
there (f1.train.online.rollout): the wrist tokens of steps t-h+1..t, the actions before t, the
raw state, frame t's pixels at the tokenizer's size (what the motion stage warps) and the
memory m_t, carried along the lane from the episode's first step exactly as the teacher
replays it (zeros at is_first). Per imagined step k, in order:

    1. the explorer sees the current tokens and m_k                                  -> action a_k
    2. the world model predicts frame k+1 from the history, a_k, the state and m_k   -> its codes (the
       mixture's mode: deterministic), m_{k+1}; the frame's pixels are the motion-warped frame plus
       the codes' correction, decoded (what open-loop evaluation feeds back)
    3. the store-keys ensemble (f1.train.online.curiosity) on (state, a_k)           -> its mean: the
       next joint positions and gripper width, the tool pose by forward kinematics; its disagreement:
       the step's reward (no true outcome exists to score an error against: Plan2Explore's reward)

The explorer's sampling is the only randomness (torch's generator, saved in checkpoints): given
the seed, a rollout is the same. Only stride-1 histories are imagined (the rolling window of the
last h steps is then the history itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch
from torch import Tensor

from f1.collect.env_spec import REAL_ACTION_DIMS, STATE_LAYOUT
from f1.shared.normalizers import Normalizer
from f1.train.models.panda_kinematics import tcp_pose
from f1.train.offline.teacher_batch import own_frames, to_device
from f1.train.online.curiosity import ProprioEnsemble, next_proprio, store_features, store_targets
from f1.train.online.rollout import clip_action


@dataclass
class Starts:
    """N start states (rows), each a real replayed step t."""

    wrist_hist: Tensor  # (N,h,n) long: tokens of steps t-h+1..t (before the episode's start: step 0, padded)
    past_actions: Tensor  # (N,h-1,A) normalised actions of steps t-h+1..t-1
    pad_mask: Tensor  # (N,h) bool
    frame: Tensor  # (N,3,S,S) frame t at the tokenizer's size, in [0,1]
    state: Tensor  # (N,S) raw state t
    previous_state: Tensor  # (N,S) raw state t-1 (t itself at an episode's start)
    previous_action: Tensor  # (N,8) applied a_{t-1} (zeros at an episode's start)
    memory: Tensor  # (L_m,N,Hm) m_t
    is_first: Tensor  # (N,) bool: t is its episode's first step

    def take(self, rows: Tensor) -> "Starts":
        """The starts at `rows` (N',) long."""
        picked = {name: getattr(self, name)[rows] for name in self.__dataclass_fields__ if name != "memory"}
        return Starts(memory=self.memory[:, rows], **picked)

    @property
    def num(self) -> int:
        return self.state.shape[0]

    def draw(self, count: int) -> "Starts":
        """Exactly `count` of these starts (torch's generator): without replacement, or with it when there are fewer.
        Every rank then imagines as many rollouts and takes as many PPO steps (DDP needs both)."""
        device = self.state.device
        if self.num >= count:
            return self.take(torch.randperm(self.num, device=device)[:count])
        return self.take(torch.randint(self.num, (count,), device=device))

    def state_dict(self) -> dict[str, Tensor]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@torch.no_grad()
def replay_starts(
    world_model: Any, chunk: Mapping[str, Any], inputs: Mapping[str, Tensor], memory: Tensor
) -> tuple[Starts, Tensor]:
    """Every valid position of a replayed chunk as a start, and the memory after the chunk (L_m,B,Hm).

    chunk: the replay's numpy chunk (B lanes x L positions, a window of C + L + 1 steps); inputs: its
    `chunk_inputs` (normalised, wrist only); memory (L_m,B,Hm): the lanes' memory entering the chunk.
    """
    is_first = inputs["is_first"]  # (B,L)
    b, length = is_first.shape
    device = memory.device
    used = []
    for k in range(length):  # the teacher's memory rule: zeros at is_first, m_{k+1} from step k's own inputs
        memory = torch.where(is_first[:, k].view(1, b, 1), torch.zeros_like(memory), memory)
        used.append(memory)
        memory = world_model.advance_memory(
            inputs["wrist_hist"][:, k, -1], inputs["action_hist"][:, k, -1], inputs["state"][:, k], memory, is_first[:, k], k
        )  # fmt: skip
    per_step = torch.stack(used, 2)  # (L_m,B,L,Hm)

    history_index = to_device(chunk["history_index"], device).long()  # (B,L,h) window positions
    context = chunk["state"].shape[1] - length - 1  # C
    states = to_device(chunk["state"], device).float()  # (B,C+L+1,S) raw
    actions = to_device(chunk["action"], device).float()[..., :REAL_ACTION_DIMS]  # (B,C+L+1,8) as applied
    lanes = torch.arange(b, device=device)[:, None]  # (B,1)
    now = torch.arange(length, device=device)[None] + context  # (1,L) window position of step t
    before = (history_index[..., -2] if history_index.shape[-1] > 1 else now.expand(b, -1)).clamp(min=0)  # (B,L)
    starts_episode = is_first | (before == now)  # no earlier step of the same episode in the window
    previous_state = torch.where(starts_episode[..., None], states[lanes, now], states[lanes, before])
    previous_action = torch.where(starts_episode[..., None], torch.zeros_like(actions[lanes, before]), actions[lanes, before])
    valid = to_device(chunk["valid"], device)  # (B,L) the position holds a real step
    rows = valid.flatten()
    starts = Starts(
        wrist_hist=inputs["wrist_hist"].flatten(0, 1)[rows],
        past_actions=inputs["action_hist"][:, :, :-1].flatten(0, 1)[rows],
        pad_mask=inputs["pad_mask"].flatten(0, 1)[rows],
        frame=inputs["frame"].flatten(0, 1)[rows],
        state=states[lanes, now].flatten(0, 1)[rows],
        previous_state=previous_state.flatten(0, 1)[rows],
        previous_action=previous_action.flatten(0, 1)[rows],
        memory=per_step.flatten(1, 2)[:, rows],
        is_first=is_first.flatten()[rows],
    )
    return starts, memory


def replay_transitions(chunk: Mapping[str, Any], starts: Starts, action_scale: float, device: torch.device) -> tuple[Tensor, Tensor]:
    """The real transitions of a chunk's starts that have a next step in their episode: x (N',31), y (N',8).

    starts: `replay_starts` of the same chunk (all its valid positions, in order).
    """
    length = chunk["target_valid"].shape[1]
    context = chunk["state"].shape[1] - length - 1
    states = to_device(chunk["state"], device).float()  # (B,C+L+1,S)
    actions = to_device(chunk["action"], device).float()[..., :REAL_ACTION_DIMS]
    valid, target_valid = to_device(chunk["valid"], device), to_device(chunk["target_valid"], device)  # (B,L)
    next_state = states[:, context + 1 : context + length + 1].flatten(0, 1)[valid.flatten()]  # (N,S)
    action = actions[:, context : context + length].flatten(0, 1)[valid.flatten()]  # (N,8)
    keep = target_valid.flatten()[valid.flatten()]  # (N,)
    x = store_features(starts.state, starts.previous_state, action, starts.previous_action)
    return x[keep], store_targets(starts.state, next_state, action, action_scale)[keep]


@dataclass
class Imagined:
    """H imagined steps from N starts, CleanRL's (steps, rows) storage."""

    tokens: Tensor  # (H+1,N,n) wrist tokens of step k (row 0: the start's own)
    memory: Tensor  # (H+1,N,L_m,Hm) m_k
    states: Tensor  # (H+1,N,S) raw
    actions: Tensor  # (H,N,A) the explorer's draws (unclipped): what PPO scores
    logprobs: Tensor  # (H,N)
    values: Tensor  # (H,N)
    disagreement: Tensor  # (H,N) the ensemble's disagreement on (state k, a_k): the raw intrinsic reward
    next_value: Tensor  # (N,) the value after the last imagined step (the horizon truncates)
    frames: Optional[Tensor] = None  # (H+1,N,3,S,S) the imagined frames, when kept for a picture
    rewards: Optional[Tensor] = None  # (H,N) what is paid for each step: set by the phase (the normalised disagreement)

    # With `rewards` set, an Imagined is what f1.train.online.common.explorer_update trains on, like a RolloutBuffer.
    @property
    def num_steps(self) -> int:
        return self.actions.shape[0]

    @property
    def terminated(self) -> Tensor:
        """(H,N) all false: only the horizon ends an imagined rollout (a truncation: the value bootstraps)."""
        return torch.zeros_like(self.values, dtype=torch.bool)


def imagined_state(state: Tensor, joints: Tensor, width: Tensor) -> Tensor:
    """state (N,S) raw with the arm at `joints` (N,7) and `width` (N,1): the tool pose follows by forward kinematics."""
    position, quaternion = tcp_pose(joints)
    out = state.clone()
    out[:, STATE_LAYOUT["arm_qpos"]] = joints
    out[:, STATE_LAYOUT["gripper_width"]] = width
    out[:, STATE_LAYOUT["tcp_pos"]] = position
    out[:, STATE_LAYOUT["tcp_quat_wxyz"]] = quaternion
    return out


@torch.no_grad()
def imagine(
    starts: Starts,
    explorer: Any,
    world_model: Any,
    tokenizer: Any,
    ensemble: ProprioEnsemble,
    normalizers: Mapping[str, Normalizer],
    horizon: int,
    action_scale: float,
    keep_frames: bool = False,
    actions: Optional[Tensor] = None,
) -> Imagined:
    """`horizon` imagined steps from every start; see the module docstring.

    actions (H,N,A): roll forward under these (e.g. the store's own, to set imagined against real frames) instead
    of the explorer's draws; the explorer still scores them (log-prob, value).
    """
    hist, past, pad = starts.wrist_hist, starts.past_actions, starts.pad_mask
    frame, state, memory, is_first = starts.frame, starts.state, starts.memory, starts.is_first
    previous_state, previous_action = starts.previous_state, starts.previous_action
    tokens, memories, states, frames = [hist[:, -1]], [memory.transpose(0, 1)], [state], [frame]
    taken, logprobs, values, disagreement = [], [], [], []
    for k in range(horizon):
        if actions is None:
            action, logprob, value = explorer.act(hist[:, -1], memory)  # (N,A), (N,), (N,)
        else:
            action = actions[k]
            logprob, _, value = explorer.evaluate_actions(hist[:, -1], memory, action)
        applied = clip_action(action, REAL_ACTION_DIMS)  # (N,A) what the env would apply
        action_hist = torch.cat([past, normalizers["action"].normalize(applied)[:, None]], 1)  # (N,h,A)
        state_in = normalizers["state"].normalize(state)  # (N,S)
        warped, proposal = world_model.propose_from(tokenizer, {"frame": frame, "state": state_in, "action_hist": action_hist})
        (_, codes), next_memory = world_model.step(
            hist, None, action_hist, state_in, pad, memory, is_first, step_index=k, proposal=proposal
        )  # fmt: skip
        real = applied[:, :REAL_ACTION_DIMS]  # (N,8)
        target, spread = ensemble.imagine(store_features(state, previous_state, real, previous_action))  # (N,8), (N,)
        joints, width = next_proprio(state, real, target, action_scale)

        taken.append(action), logprobs.append(logprob), values.append(value), disagreement.append(spread)
        hist = torch.cat([hist[:, 1:], codes[:, None]], 1)
        past = action_hist[:, 1:]
        pad = torch.cat([pad[:, 1:], torch.zeros_like(pad[:, :1])], 1)
        if keep_frames or k + 1 < horizon:  # the last step's frame feeds no further prediction
            frame = own_frames(tokenizer, warped, codes, proposal)  # (N,3,S,S)
        previous_state, previous_action = state, real
        state = imagined_state(state, joints, width)
        memory, is_first = next_memory, torch.zeros_like(is_first)
        tokens.append(codes), memories.append(memory.transpose(0, 1)), states.append(state)
        if keep_frames:
            frames.append(frame)
    next_value = explorer(hist[:, -1], memory)[2]  # (N,)
    return Imagined(
        tokens=torch.stack(tokens), memory=torch.stack(memories), states=torch.stack(states),
        actions=torch.stack(taken), logprobs=torch.stack(logprobs), values=torch.stack(values),
        disagreement=torch.stack(disagreement), next_value=next_value,
        frames=torch.stack(frames) if keep_frames else None,
    )  # fmt: skip
