"""Motion compensation: frame t+1 proposed as frame t resampled along a flow predicted from (frame, state, action).

The wrist camera rides on the arm, so most of what changes between two wrist frames is the whole
view sliding and turning as the arm moves: a motion that the state and the action determine.
Codes cannot express it (a shift of one pixel changes most of a 4-pixel cell's code), pixels can:
this module predicts a coarse flow field and resamples frame t along it, as a video codec's motion
compensation does; the world model then corrects the codes of that proposal (`WorldModel`).

With `model.motion_canvas`, the warp also remembers what left the view (`through_canvas`): a canvas
wider than the view, aligned with it, moved along the flow every step and read wherever the flow
fetches content from outside frame t (where `forward` repeats the frame's border). It is a
recurrent state carried like the memory: zeros at `is_first`, detached between chunks.

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
CANVAS_MARGIN = 1  # `through_canvas` remembers one view width beyond each side of the view


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

    def coarse_flow(self, frames: Tensor, state: Tensor, action: Tensor) -> Tensor:
        """-> the flow on the FLOW_GRID x FLOW_GRID grid over the view (B,2,8,8), in flow units."""
        b = frames.shape[0]
        conditioning = torch.cat([state, action], -1).to(frames.dtype)  # (B,Sd+A)
        scale, shift = self.film(conditioning).chunk(2, -1)  # (B,w) each
        features = self.encoder(frames) * (1 + scale[..., None, None]) + shift[..., None, None]  # (B,w,S/8,S/8)
        coarse = self.image_flow(features)  # (B,2,S/8,S/8)
        coarse = F.interpolate(coarse, size=(FLOW_GRID, FLOW_GRID), mode="bilinear", align_corners=False)
        return coarse + self.global_flow(conditioning).view(b, 2, FLOW_GRID, FLOW_GRID)  # (B,2,8,8)

    def view_flow(self, coarse: Tensor, height: int, width: int) -> Tensor:
        """The coarse flow (B,2,8,8) -> the view's flow (B,2,H,W) in grid_sample units, damped where the camera does not move."""
        moving = 1 - torch.sigmoid(self.camera_fixed)  # (1,1,S,S)
        if moving.shape[-2:] != (height, width):  # frames of another size than the map's: resample the map
            moving = F.interpolate(moving, size=(height, width), mode="bilinear", align_corners=False)
        return F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False) * FLOW_SCALE * moving

    def flow(self, frames: Tensor, state: Tensor, action: Tensor) -> Tensor:
        """-> flow (B,2,S,S) in grid_sample units (x, y), where each output pixel samples frame t."""
        return self.view_flow(self.coarse_flow(frames, state, action), *frames.shape[-2:])

    def forward(self, frames: Tensor, state: Tensor, action: Tensor) -> Tensor:
        grid = identity_grid(frames) + self.flow(frames, state, action).permute(0, 2, 3, 1)  # (B,S,S,2)
        # border: content entering the view repeats the edge (the world model's codes correct it)
        return F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=True)  # (B,3,S,S)

    def through_canvas(self, frames: Tensor, state: Tensor, action: Tensor, canvas: Tensor) -> tuple[Tensor, Tensor]:
        """The warp with a memory of what left the view: -> (warped frames (B,3,S,S), the next canvas (B,4,E,E)).

        canvas (B,4,E,E), E = canvas_side(S): colours premultiplied by their validity (channel 3), aligned with
        frame t's view, which sits at its centre. Frame t is pasted over the centre, the whole canvas moves along
        the flow (beyond the view: the coarse field's border values carried outwards, as a turning camera's flow
        varies slowly), and the view's pixels whose source lies outside frame t take the canvas's colour where it
        holds one (the border's repeat elsewhere, as `forward`). A zero canvas: nothing remembered, `forward`'s warp
        exactly.
        """
        b, _, s, _ = frames.shape
        e = canvas.shape[-1]
        margin = (e - s) // 2
        coarse = self.coarse_flow(frames, state, action)  # (B,2,8,8)
        inner = self.view_flow(coarse, s, s)  # (B,2,S,S)
        cells = FLOW_GRID * margin // s
        outer = F.interpolate(F.pad(coarse, (cells,) * 4, mode="replicate"), size=(e, e), mode="bilinear", align_corners=False) * FLOW_SCALE
        centre = F.pad(torch.ones_like(frames[:, :1]), (margin,) * 4)  # (B,1,E,E): 1 on the view
        flow = outer * (1 - centre) + F.pad(inner, (margin,) * 4)  # (B,2,E,E)
        pasted = canvas * (1 - centre) + F.pad(torch.cat([frames, torch.ones_like(frames[:, :1])], 1), (margin,) * 4)
        # a flow of d view units moves d (S-1)/(E-1) canvas units (align_corners: pixel centres at +-1)
        grid = identity_grid(canvas) + flow.permute(0, 2, 3, 1) * ((s - 1) / (e - 1))  # (B,E,E,2)
        moved = F.grid_sample(pasted, grid, mode="bilinear", padding_mode="zeros", align_corners=True)  # (B,4,E,E)
        # the canvas's own share of each view pixel (its colours premultiplied): frame t's pixels left out
        crop = grid[:, margin : margin + s, margin : margin + s]  # (B,S,S,2)
        kept = F.grid_sample(canvas * (1 - centre), crop, mode="bilinear", padding_mode="zeros", align_corners=True)  # (B,4,S,S)
        warped = F.grid_sample(frames, identity_grid(frames) + inner.permute(0, 2, 3, 1), mode="bilinear", padding_mode="border",
                               align_corners=True)  # (B,3,S,S) `forward`'s warp  # fmt: skip
        return warped * (1 - kept[:, 3:]) + kept[:, :3], moved


def canvas_side(image_size: int) -> int:
    """The canvas of `MotionWarp.through_canvas`: the view and CANVAS_MARGIN view widths on each side."""
    return image_size * (1 + 2 * CANVAS_MARGIN)


def identity_grid(images: Tensor) -> Tensor:
    """(B,C,H,W) -> (1,H,W,2): grid_sample's coordinates (x, y) of each pixel itself (align_corners)."""
    height, width = images.shape[-2:]
    ys = torch.linspace(-1, 1, height, device=images.device, dtype=images.dtype)
    xs = torch.linspace(-1, 1, width, device=images.device, dtype=images.dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y], -1).unsqueeze(0)
