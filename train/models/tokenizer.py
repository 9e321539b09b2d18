"""FSQ image tokenizer: a frame -> a grid of discrete codes -> a frame.

    uint8 (B,H,W,3) -> resize to S x S -> conv encoder (S/d x S/d x D)
    -> finite scalar quantisation: each of the D channels rounded to one of levels[i] values
    -> tokens (B, (S/d)^2), token = the D digits read as a mixed-radix number (K = prod(levels) codes)
    -> code values -> conv decoder -> float (B,3,S,S) in [0,1]

Finite scalar quantisation (FSQ, Mentzer et al. 2023) replaced the EMA VQ codebook
(bench/RESULTS.md, "tokenizer designs"): no codebook to collapse or reset, every
code reachable, and codes are ordered along each digit, so a world model can
embed a code by its digits and predict each digit with a small softmax.

Losses (`FSQTokenizer.forward`): L1 on pixels (keeps colour: MSE lets small
colourful objects fade into the table), L1 on the image's horizontal and vertical
differences (edges: neither blur nor ringing) and 1 - SSIM on local 7x7 windows
(structure at the scale of the objects; needs no downloaded weights).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from f1.shared.config import F1Config
from f1.shared.errors import UserError

WEIGHTS_FILE = "tokenizer.pt"
CONFIG_FILE = "tokenizer_config.json"
SSIM_WINDOW = 7


class TokenizerLoadError(UserError):
    """A tokenizer directory is missing or unreadable."""


class ResBlock(nn.Module):
    # No normalisation layers anywhere in the tokenizer: GroupNorm over a frame removes its
    # mean colour and brightness, which the tokens must keep (randomised light and table colours).
    def __init__(self, channels: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


def level_channels(base: int, levels: int) -> list[int]:
    """Channels at each resolution, full first: base/2 at full size, then doubling (capped at 2 base) as it halves.

    The full-resolution layers are the CPU's main cost, so they are the narrowest.
    """
    return [min(2 * base, max(8, base // 2) * 2**i) for i in range(levels + 1)]


class Encoder(nn.Module):
    """(B,3,S,S) -> (B,D,S/d,S/d): a stem at full size, strided convs halving the side, residual blocks after each."""

    def __init__(self, channels: int, halvings: int, latent_dim: int):
        super().__init__()
        ch = level_channels(channels, halvings)
        layers: list[nn.Module] = [nn.Conv2d(3, ch[0], 3, padding=1)]
        for i in range(halvings):
            layers += [nn.SiLU(), nn.Conv2d(ch[i], ch[i + 1], 4, stride=2, padding=1), ResBlock(ch[i + 1])]
        layers += [ResBlock(ch[-1]), nn.SiLU(), nn.Conv2d(ch[-1], latent_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """(B,D,g,g) -> (B,3,S,S) in [0,1]; nearest-neighbour upsampling + conv (no transposed-conv checkerboards)."""

    def __init__(self, channels: int, halvings: int, latent_dim: int):
        super().__init__()
        ch = level_channels(channels, halvings)[::-1]
        layers: list[nn.Module] = [nn.Conv2d(latent_dim, ch[0], 3, padding=1), ResBlock(ch[0])]
        for i in range(halvings):
            layers += [ResBlock(ch[i]), nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch[i], ch[i + 1], 3, padding=1)]
        layers += [ResBlock(ch[-1]), nn.SiLU(), nn.Conv2d(ch[-1], 3, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.net(z))


def box_mean(x: Tensor, window: int) -> Tensor:
    """Mean over every window x window patch, (B,C,H,W) -> (B,C,H-window+1,W-window+1): avg_pool2d(x, window, stride=1)
    from a summed-area table, a third of its CPU time forward and backward (the tokenizer step's SSIM cost)."""
    table = F.pad(x, (1, 0, 1, 0)).cumsum(-1).cumsum(-2)  # (B,C,H+1,W+1)
    w = window
    return (table[..., w:, w:] - table[..., :-w, w:] - table[..., w:, :-w] + table[..., :-w, :-w]) / (w * w)


def ssim_map(a: Tensor, b: Tensor, window: int = SSIM_WINDOW) -> Tensor:
    """Local SSIM (Wang et al. 2004, uniform window) of images in [0,1]: (B,C,H,W) x 2 -> (B,C,H',W')."""
    c1, c2 = 0.01**2, 0.03**2
    pool = lambda x: box_mean(x, window)  # noqa: E731
    mu_a, mu_b = pool(a), pool(b)
    var_a = pool(a * a) - mu_a**2
    var_b = pool(b * b) - mu_b**2
    cov = pool(a * b) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))


def gradient_l1(a: Tensor, b: Tensor) -> Tensor:
    """Mean |d a - d b| over horizontal and vertical neighbour differences: (B,C,H,W) x 2 -> scalar."""
    dx = (a[..., :, 1:] - a[..., :, :-1]) - (b[..., :, 1:] - b[..., :, :-1])
    dy = (a[..., 1:, :] - a[..., :-1, :]) - (b[..., 1:, :] - b[..., :-1, :])
    return 0.5 * (dx.abs().mean() + dy.abs().mean())


def spectrum_l1(a: Tensor, b: Tensor) -> Tensor:
    """Mean |(|F a| - |F b|)| of the 2D Fourier amplitudes, (B,C,H,W) x 2 -> scalar (orthonormal FFT).

    Pixel losses forgive a blur (the mean of many sharp guesses is a soft edge); the amplitude of the
    high frequencies does not: a soft edge has too little, ringing too much (a frequency loss in the
    spirit of Jiang et al. 2021's focal frequency loss, unweighted).
    """
    return (torch.fft.rfft2(a.float(), norm="ortho").abs() - torch.fft.rfft2(b.float(), norm="ortho").abs()).abs().mean()


def tokens_to_digits(tokens: Tensor, levels: tuple[int, ...]) -> Tensor:
    """Codes (...) in [0, prod(levels)) -> their digits (..., D) long: digit i = (code // radix_i) % levels[i]."""
    radix = torch.tensor([math.prod(levels[:i]) for i in range(len(levels))], device=tokens.device)
    return (tokens.long().unsqueeze(-1) // radix) % torch.tensor(levels, device=tokens.device)


def digits_to_tokens(digits: Tensor, levels: tuple[int, ...]) -> Tensor:
    """Digits (..., D) -> codes (...) long, the digits read as a mixed-radix number (first digit fastest)."""
    radix = torch.tensor([math.prod(levels[:i]) for i in range(len(levels))], device=digits.device)
    return (digits.long() * radix).sum(-1)


class FSQTokenizer(nn.Module):
    """Conv encoder -> finite scalar quantiser -> conv decoder; `n_tokens` codes per frame, K = prod(levels)."""

    def __init__(
        self,
        image_size: int = 64,
        downsample: int = 4,
        channels: int = 32,
        levels: tuple[int, ...] | list[int] = (8, 5, 5, 5),
        gradient_weight: float = 1.0,
        ssim_weight: float = 0.2,
        spectrum_weight: float = 0.0,
    ):
        super().__init__()
        halvings = round(math.log2(downsample))
        if 2**halvings != downsample:
            raise UserError(f"model.tokenizer_downsample={downsample} must be a power of two (e.g. 4); fix it in the config")
        if image_size % downsample:
            raise UserError(f"model.tokenizer_image_size={image_size} must be divisible by model.tokenizer_downsample={downsample}")
        if not levels or min(levels) < 2:
            raise UserError(f"model.tokenizer_levels={list(levels)} needs at least one digit and >= 2 levels a digit, e.g. [8,5,5,5]")
        self.image_size = image_size
        self.downsample = downsample
        self.channels = channels
        self.levels = tuple(int(x) for x in levels)
        self.gradient_weight = gradient_weight
        self.ssim_weight = ssim_weight
        self.spectrum_weight = spectrum_weight
        self.grid = image_size // downsample
        self.encoder = Encoder(channels, halvings, len(self.levels))
        self.decoder = Decoder(channels, halvings, len(self.levels))
        self.register_buffer("levels_t", torch.tensor(self.levels), persistent=False)

    @classmethod
    def from_config(cls, cfg: F1Config) -> "FSQTokenizer":
        m, t = cfg.model, cfg.tokenizer
        return cls(
            image_size=m.tokenizer_image_size,
            downsample=m.tokenizer_downsample,
            channels=m.tokenizer_channels,
            levels=m.tokenizer_levels,
            gradient_weight=t.gradient_weight,
            ssim_weight=t.ssim_weight,
            spectrum_weight=t.spectrum_weight,
        )

    @property
    def n_tokens(self) -> int:
        return self.grid * self.grid

    @property
    def codebook_size(self) -> int:
        return math.prod(self.levels)

    # ------------------------------------------------------------------ pixels

    def preprocess(self, images: Tensor) -> Tensor:
        """uint8 (B,H,W,3) -> float (B,3,S,S) in [0,1], resized (antialiased) when H, W differ from S."""
        assert images.dtype == torch.uint8 and images.ndim == 4 and images.shape[-1] == 3, (images.dtype, images.shape)
        x = images.to(self.levels_t.device).permute(0, 3, 1, 2).float() / 255.0  # (B,3,H,W)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True, align_corners=False)
            x = x.clamp(0.0, 1.0)
        return x

    # ------------------------------------------------------------------ quantiser

    def _bound(self, z: Tensor) -> Tensor:
        """(B,D,g,g) unbounded -> each channel i squashed into [0, levels[i] - 1] (FSQ's tanh bound)."""
        half = (self.levels_t.to(z.dtype) - 1).view(1, -1, 1, 1) / 2  # (1,D,1,1)
        return (torch.tanh(z) + 1) * half

    def digits_to_values(self, digits: Tensor) -> Tensor:
        """Digits or expected digits (..., D) in [0, levels-1] -> code values in [-1, 1], what the decoder reads."""
        half = (self.levels_t.to(digits.dtype) - 1) / 2  # (D,)
        return digits / half - 1

    def tokens_to_digits(self, tokens: Tensor) -> Tensor:
        """tokens (...) long in [0, K) -> digits (..., D) long."""
        return tokens_to_digits(tokens, self.levels)

    def digits_to_tokens(self, digits: Tensor) -> Tensor:
        """digits (..., D) long -> tokens (...) long."""
        return digits_to_tokens(digits, self.levels)

    def quantize(self, z_e: Tensor) -> tuple[Tensor, Tensor]:
        """z_e (B,D,g,g) -> (code values (B,D,g,g) in [-1,1], straight-through; tokens (B,g*g) row-major)."""
        bounded = self._bound(z_e)
        digits = bounded.round()
        # straight-through rounding: the decoder's gradient reaches the encoder unchanged
        values = self.digits_to_values((bounded + (digits - bounded).detach()).movedim(1, -1)).movedim(-1, 1)
        tokens = self.digits_to_tokens(digits.detach().movedim(1, -1)).flatten(1)  # (B,g*g)
        return values, tokens

    # ------------------------------------------------------------------ public API

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """uint8 (B,H,W,3) -> tokens LongTensor (B, n_tokens), the grid flattened row-major."""
        return self.encode_frames(self.preprocess(images))

    @torch.no_grad()
    def encode_frames(self, frames: Tensor) -> Tensor:
        """float (B,3,S,S) in [0,1] at the tokenizer's size (what `preprocess` gives) -> tokens (B, n_tokens)."""
        return self.quantize(self.encoder(frames.clamp(0.0, 1.0)))[1]

    def decode_values(self, values: Tensor) -> Tensor:
        """Code values (B, n_tokens, D) in [-1,1] -> float images (B,3,S,S) in [0,1]."""
        b = values.shape[0]
        return self.decoder(values.transpose(1, 2).reshape(b, len(self.levels), self.grid, self.grid))

    @torch.no_grad()
    def decode(self, tokens: Tensor) -> Tensor:
        """tokens (B, n_tokens) -> float images (B,3,S,S) in [0,1]."""
        assert tokens.ndim == 2 and tokens.shape[1] == self.n_tokens, (tuple(tokens.shape), self.n_tokens)
        return self.decode_values(self.digits_to_values(self.tokens_to_digits(tokens).float()))

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """uint8 (B,H,W,3) -> recon (B,3,S,S), the losses, and code usage."""
        target = self.preprocess(images)  # (B,3,S,S)
        values, tokens = self.quantize(self.encoder(target))
        recon = self.decoder(values)  # (B,3,S,S)
        l1 = (recon - target).abs().mean()
        grad = gradient_l1(recon, target)
        ssim = ssim_map(recon, target).mean()
        loss = l1 + self.gradient_weight * grad + self.ssim_weight * (1 - ssim)
        if self.spectrum_weight > 0:  # two FFTs a step: only when asked for
            spectrum = spectrum_l1(recon, target)
            loss = loss + self.spectrum_weight * spectrum
        else:
            spectrum = recon.new_zeros(())
        counts = torch.bincount(tokens.flatten(), minlength=self.codebook_size).float()  # (K,)
        probs = counts / counts.sum()
        return {
            "recon": recon,
            "target": target,
            "tokens": tokens,
            "loss": loss,
            "recon_loss": F.mse_loss(recon.detach(), target),
            "l1_loss": l1.detach(),
            "gradient_loss": grad.detach(),
            "spectrum_loss": spectrum.detach(),
            "ssim": ssim.detach(),
            "perplexity": torch.exp(-(probs * torch.log(probs + 1e-10)).sum()),
            "code_usage": (counts > 0).float().mean(),
        }

    # ------------------------------------------------------------------ files

    def config_dict(self) -> dict:
        return {
            "image_size": self.image_size,
            "downsample": self.downsample,
            "channels": self.channels,
            "levels": list(self.levels),
            "gradient_weight": self.gradient_weight,
            "ssim_weight": self.ssim_weight,
            "spectrum_weight": self.spectrum_weight,
        }

    def save(self, directory: str | Path) -> Path:
        """Write tokenizer.pt (state dict) and tokenizer_config.json into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / (WEIGHTS_FILE + ".tmp")
        torch.save({k: v.detach().cpu() for k, v in self.state_dict().items()}, tmp)
        tmp.replace(directory / WEIGHTS_FILE)
        (directory / CONFIG_FILE).write_text(json.dumps(self.config_dict(), indent=2))
        return directory

    @classmethod
    def load(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> "FSQTokenizer":
        """Rebuild a tokenizer saved with `save`; a missing or corrupt directory is a UserError naming it."""
        directory = Path(directory)
        fix = "pass the output directory of `f1 train tokenizer`"
        if not (directory / CONFIG_FILE).is_file() or not (directory / WEIGHTS_FILE).is_file():
            raise TokenizerLoadError(f"tokenizer directory {directory} lacks {CONFIG_FILE} or {WEIGHTS_FILE}; {fix}")
        try:
            model = cls(**json.loads((directory / CONFIG_FILE).read_text()))
            model.load_state_dict(torch.load(directory / WEIGHTS_FILE, map_location=map_location, weights_only=True))
        except UserError:
            raise
        except Exception as exc:  # json, pickle, zip or shape errors all mean the same to the user
            raise TokenizerLoadError(
                f"tokenizer in {directory} is corrupt or from another version ({type(exc).__name__}); retrain it ({fix})"
            ) from None
        return model.eval()
