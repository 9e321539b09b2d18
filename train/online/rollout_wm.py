"""The world model trained and scored on live rollouts (the adversarial phase), by the teacher's TBPTT rules.

A rollout is M lanes of one whole episode each, T actions, T + 1 frames; steps
0 .. T-1 have a next frame (the targets), step T does not (like the replay's
`target_valid`). Chunks are L = training.bptt_length consecutive steps of all
lanes: the memory starts from zeros at step 0 (is_first, reset inside the
model), flows through a chunk with gradients (unless training.memory_backprop
is false) and is detached between chunks (DESIGN §4).

`adversarial.wm_updates_per_iteration` chunks are trained per rollout, each one
optimizer step, in time order. When that is fewer than the rollout's chunks,
each iteration takes up where the last one stopped (chunk `iteration x updates`
mod the chunk count), and the memory entering a chunk past the first is
computed by a gradient-free pass over the steps before it (a burn-in): every
part of an episode gets trained on, and no chunk starts from a memory the
teacher would never have given it.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from f1.shared.normalizers import Normalizer
from f1.train.online.rollout import rollout_inputs


def num_chunks(num_steps: int, bptt_length: int) -> int:
    """Chunks covering the T steps that have a next frame."""
    return math.ceil(num_steps / bptt_length)


def chunk_steps(chunk: int, num_steps: int, bptt_length: int, device: torch.device) -> Tensor:
    """Steps of chunk `chunk`: [cL, min((c+1)L, T)) -> (L',)."""
    return torch.arange(chunk * bptt_length, min((chunk + 1) * bptt_length, num_steps), device=device)


def chunk_batch(
    rollout: Mapping[str, Tensor], steps: Tensor, history: int, stride: int, normalizers: Mapping[str, Normalizer]
) -> tuple[dict[str, Tensor], Tensor, Tensor, Tensor]:
    """-> (ChunkModel inputs (M,L,...), target tokens of frame t+1 (M,L,n), frame t+1 (M,L,3,S,S), loss mask (M,L) all true).

    rollout: a rollout's per-step arrays, "tokens" (T+1,M,n), "frames" (T+1,M,3,S,S), "applied" (T+1,M,A), "states" (T+1,M,S).
    """
    tokens, frames = rollout["tokens"], rollout["frames"]
    inputs = rollout_inputs(tokens, frames, rollout["applied"], rollout["states"], steps, history, stride, normalizers)
    targets = tokens[steps + 1].transpose(0, 1)  # (L,M,n) -> (M,L,n)
    mask = torch.ones(targets.shape[:2], dtype=torch.bool, device=targets.device)  # (M,L)
    return inputs, targets, frames[steps + 1].transpose(0, 1), mask


@torch.no_grad()
def world_model_loss_on(
    chunk_model: Any, world_model: Any, rollout: Mapping[str, Tensor], history: int, stride: int, normalizers: Mapping[str, Normalizer]
) -> tuple[float, float]:
    """The world model's mean next-frame cross-entropy (nats) and token accuracy over a whole rollout, memory from zeros.

    chunk_model: the ChunkModel around world_model (motion proposal + forward_chunk); rollout: as in `chunk_batch`.
    """
    was_training = world_model.training
    world_model.eval()
    tokens = rollout["tokens"]
    num_steps, m = tokens.shape[0] - 1, tokens.shape[1]
    steps = torch.arange(num_steps, device=tokens.device)
    inputs, targets, _, mask = chunk_batch(rollout, steps, history, stride, normalizers)
    prediction, _, _, _, _ = chunk_model(inputs, world_model.initial_memory(m, tokens.device))  # (M,T,n,...)
    loss, accuracy = world_model.loss(prediction, targets, mask)
    world_model.train(was_training)
    return float(loss), float(accuracy)


def train_world_model_on_rollout(
    chunk_model: Any,
    world_model: Any,
    optimizer: torch.optim.Optimizer,
    rollout: Mapping[str, Tensor],
    *,
    first_chunk: int,
    updates: int,
    bptt_length: int,
    history: int,
    stride: int,
    normalizers: Mapping[str, Normalizer],
    backward: Callable[[Tensor], None],
    clip_grad: Callable[[], None],
) -> dict[str, float]:
    """`updates` TBPTT optimizer steps on one rollout, from chunk `first_chunk` on (wrapping to step 0); see the docstring.

    chunk_model: what Accelerate prepared (a ChunkModel: motion proposal + world_model.forward_chunk); rollout: as in `chunk_batch`.
    """
    tokens = rollout["tokens"]
    num_steps, m = tokens.shape[0] - 1, tokens.shape[1]
    total_chunks = num_chunks(num_steps, bptt_length)
    device = tokens.device
    world_model.train()
    memory = world_model.initial_memory(m, device)  # (L_m,M,Hm)
    chunk = first_chunk % total_chunks
    if chunk > 0:  # burn-in: the memory the teacher's rules would bring to this chunk
        with torch.no_grad():
            burn = torch.arange(0, chunk * bptt_length, device=device)
            inputs, _, _, _ = chunk_batch(rollout, burn, history, stride, normalizers)
            _, memory, _, _, _ = chunk_model(inputs, memory)
    losses, motion_losses, accuracies = [], [], []
    for _ in range(updates):
        steps = chunk_steps(chunk, num_steps, bptt_length, device)
        inputs, targets, next_frames, mask = chunk_batch(rollout, steps, history, stride, normalizers)
        prediction, memory, _, warped, _ = chunk_model(inputs, memory)  # (M,L,n,...), (L_m,M,Hm), _, (M,L,3,S,S)
        code_loss, accuracy = world_model.loss(prediction, targets, mask)
        motion_l1 = world_model.motion_loss(warped, next_frames, mask)
        loss = code_loss + motion_l1  # as the teacher: disjoint parameters
        optimizer.zero_grad(set_to_none=True)
        backward(loss)
        clip_grad()
        optimizer.step()
        memory = memory.detach()  # truncated BPTT: the next chunk starts from the values, not this graph
        losses.append(float(code_loss.detach()))
        motion_losses.append(float(motion_l1.detach()))
        accuracies.append(float(accuracy))
        chunk = (chunk + 1) % total_chunks  # wrapping to 0: is_first at step 0 resets the memory inside the model
    return {
        "wm/loss": sum(losses) / len(losses),
        "wm/motion_l1": sum(motion_losses) / len(motion_losses),
        "wm/token_accuracy": sum(accuracies) / len(accuracies),
    }
