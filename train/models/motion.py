"""Motion compensation: frame t+1 proposed as frame t resampled along a flow predicted from (frame, state, action).

The wrist camera rides on the arm, so most of what changes between two wrist frames is the whole
view sliding and turning as the arm moves: a motion that the state and the action determine.
Codes cannot express it (a shift of one pixel changes most of a 4-pixel cell's code), pixels can:
this module predicts a coarse flow field and resamples frame t along it, as a video codec's motion
compensation does; the world model then corrects the codes of that proposal (`WorldModel`).

Trained by the teacher with an L1 loss against frame t+1 (its own loss, `wm/motion_l1`). Measured
on held-out episodes of another seed (bench/RESULTS.md, "motion compensation"): 28.7 dB against
26.6 dB for copying frame t, and 25.1 dB with the actions shuffled.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FLOW_GRID = 8  # the flow is predicted on an 8x8 grid and upsampled: the view moves smoothly
FLOW_SCALE = 0.1  # flow units -> grid_sample's [-1, 1] coordinates (a tenth of the frame per unit)
FIXED_INIT = -2.0  # sigmoid(-2) ~ 0.12: at first every pixel mostly moves with the view


class MotionWarp(nn.Module):
    """(frames (B,3,S,S) in [0,1], state (B,Sd) normalized, action (B,A) normalized) -> warped frames (B,3,S,S).

    flow = a global field from (state, action) + a correction from the image, modulated by (state,
    action) (FiLM); both start at zero, so an untrained module returns frame t unchanged. A learned
    per-pixel map damps the flow where the view does not move with the arm: the gripper's fingers
    ride with the wrist camera and stay put in every frame (measured: +0.2 dB held-out, and sharper
    fingers open loop). image_size: the frames' side S (the tokenizer's).
    """

    def __init__(self, state_dim: int, action_dim: int, image_size: int, width: int = 48):
        super().__init__()
        self.camera_fixed = nn.Parameter(torch.full((1, 1, image_size, image_size), FIXED_INIT))  # (1,1,S,S) logits
        conditioning = state_dim + action_dim
        # 3 stride-2 convs: S -> S/8 (8x8 at 64x64)
        self.encoder = nn.Sequential(
            nn.Conv2d(3, width, 4, 2, 1), nn.GELU(),
            nn.Conv2d(width, width, 4, 2, 1), nn.GELU(),
            nn.Conv2d(width, width, 4, 2, 1), nn.GELU(),
        )  # fmt: skip
        self.film = nn.Sequential(nn.Linear(conditioning, 128), nn.GELU(), nn.Linear(128, 2 * width))
        self.global_flow = nn.Sequential(nn.Linear(conditioning, 128), nn.GELU(), nn.Linear(128, 2 * FLOW_GRID * FLOW_GRID))
        self.image_flow = nn.Sequential(nn.Conv2d(width, width, 3, 1, 1), nn.GELU(), nn.Conv2d(width, 2, 3, 1, 1))
        for last in (self.global_flow[-1], self.image_flow[-1]):
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def flow(self, frames: Tensor, state: Tensor, action: Tensor) -> Tensor:
        """-> flow (B,2,S,S) in grid_sample units (x, y), where each output pixel samples frame t."""
        b, _, height, width = frames.shape
        conditioning = torch.cat([state, action], -1).to(frames.dtype)  # (B,Sd+A)
        scale, shift = self.film(conditioning).chunk(2, -1)  # (B,w) each
        features = self.encoder(frames) * (1 + scale[..., None, None]) + shift[..., None, None]  # (B,w,S/8,S/8)
        coarse = self.image_flow(features)  # (B,2,S/8,S/8)
        coarse = F.interpolate(coarse, size=(FLOW_GRID, FLOW_GRID), mode="bilinear", align_corners=False)
        coarse = coarse + self.global_flow(conditioning).view(b, 2, FLOW_GRID, FLOW_GRID)  # (B,2,8,8)
        moving = 1 - torch.sigmoid(self.camera_fixed)  # (1,1,S,S)
        if moving.shape[-2:] != (height, width):  # frames of another size than the map's: resample the map
            moving = F.interpolate(moving, size=(height, width), mode="bilinear", align_corners=False)
        return F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False) * FLOW_SCALE * moving

    def forward(self, frames: Tensor, state: Tensor, action: Tensor) -> Tensor:
        b, _, height, width = frames.shape
        ys = torch.linspace(-1, 1, height, device=frames.device, dtype=frames.dtype)
        xs = torch.linspace(-1, 1, width, device=frames.device, dtype=frames.dtype)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        identity = torch.stack([grid_x, grid_y], -1).unsqueeze(0)  # (1,S,S,2): sample each pixel at itself
        grid = identity + self.flow(frames, state, action).permute(0, 2, 3, 1)  # (B,S,S,2)
        # border: content entering the view repeats the edge (the world model's codes correct it)
        return F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=True)  # (B,3,S,S)
