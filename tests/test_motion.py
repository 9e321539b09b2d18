"""The motion compensation: identity at initialisation, and it learns a motion that the action determines."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from f1.train.image_metrics import psnr_per_frame
from f1.train.models.motion import MotionWarp

SIZE, STATE, ACTION = 32, 4, 2


def smooth_texture(rng: np.random.Generator, batch: int) -> torch.Tensor:
    """(B,3,2S,2S) smooth random colour fields: something a shift visibly moves."""
    coarse = torch.from_numpy(rng.uniform(0, 1, (batch, 3, 8, 8)).astype(np.float32))
    return F.interpolate(coarse, size=(2 * SIZE, 2 * SIZE), mode="bicubic", align_corners=False).clamp(0, 1)


def shifted_pairs(rng: np.random.Generator, batch: int) -> tuple[torch.Tensor, ...]:
    """Frame t = a crop of a texture; frame t+1 = the crop moved by (dx, dy) = 3 x action pixels."""
    texture = smooth_texture(rng, batch)
    action = rng.uniform(-1, 1, (batch, ACTION)).astype(np.float32)
    shift = np.round(action * 3).astype(int)  # pixels
    x0 = np.stack([texture[i, :, 16 : 16 + SIZE, 16 : 16 + SIZE].numpy() for i in range(batch)])
    x1 = np.stack([texture[i, :, 16 + dy : 16 + dy + SIZE, 16 + dx : 16 + dx + SIZE].numpy() for i, (dx, dy) in enumerate(shift)])
    state = np.zeros((batch, STATE), np.float32)
    return torch.from_numpy(x0), torch.from_numpy(x1), torch.from_numpy(state), torch.from_numpy(action)


def to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().clamp(0, 1).permute(0, 2, 3, 1).numpy()


def test_an_untrained_motion_returns_the_frame():
    torch.manual_seed(0)
    motion = MotionWarp(STATE, ACTION, SIZE)
    x0, _, state, action = shifted_pairs(np.random.default_rng(0), 4)
    assert torch.allclose(motion(x0, state, action), x0, atol=1e-5)


def test_the_motion_learns_a_shift_the_action_determines():
    """Trained on held-in pairs, it predicts held-out pairs better than copying, and worse with the actions shuffled."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    motion = MotionWarp(STATE, ACTION, SIZE, width=16)
    optimizer = torch.optim.Adam(motion.parameters(), lr=3e-3)
    for _ in range(150):
        x0, x1, state, action = shifted_pairs(rng, 16)
        loss = (motion(x0, state, action) - x1).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x0, x1, state, action = shifted_pairs(np.random.default_rng(1), 64)  # new textures and shifts
    with torch.no_grad():
        warped = psnr_per_frame(to_numpy(motion(x0, state, action)), to_numpy(x1)).mean()
        shuffled = psnr_per_frame(to_numpy(motion(x0, state, action.flip(0))), to_numpy(x1)).mean()
    copy = psnr_per_frame(to_numpy(x0), to_numpy(x1)).mean()
    assert warped > copy + 3, (warped, copy)
    assert warped > shuffled + 3, (warped, shuffled)
