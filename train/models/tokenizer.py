"""VQ image tokenizer: a frame -> a grid of discrete codes -> a frame.

    uint8 (B,H,W,3) -> resize to S x S -> conv encoder (S/d x S/d x code_dim)
    -> nearest code in an EMA codebook of K vectors -> tokens (B, (S/d)^2)
    -> codebook vectors -> conv decoder -> float (B,3,S,S) in [0,1]

The codebook is learnt by exponential moving averages of the encoder outputs
assigned to each code (VQ-VAE, van den Oord et al. 2017, appendix), not by
gradient, so resetting a dead code never leaves stale optimizer state behind.
Encoder outputs and codes are unit vectors (cosine look-up, as in ViT-VQGAN,
Yu et al. 2022): their scale cannot drift away from the codebook while the
encoder learns fast, the main cause of early collapse. Two more guards: the
codebook starts from k-means on the first training batch, and a code whose
EMA usage falls below `dead_code_threshold` (a fraction of all tokens) is
moved onto a random encoder output of the current batch.
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
EMA_DECAY = 0.99
# usage reacts faster than the codes themselves, so a dead code is noticed within ~15 steps
USAGE_DECAY = 0.9
KMEANS_ITERS = 10


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


def _level_channels(base: int, levels: int) -> list[int]:
    """Channels after each halving: base, base, 2 base, 2 base, ... (keeps the CPU cost small)."""
    return [base * 2 ** (i // 2) for i in range(levels)]


class Encoder(nn.Module):
    """Strided convs halve the side `levels` times; residual blocks work at the lower resolutions only."""

    def __init__(self, channels: int, levels: int, code_dim: int):
        super().__init__()
        ch = [3] + _level_channels(channels, levels)
        layers: list[nn.Module] = []
        for i in range(levels):
            layers += [nn.Conv2d(ch[i], ch[i + 1], 4, stride=2, padding=1)]
            if i > 0:
                layers += [ResBlock(ch[i + 1])]
        layers += [nn.SiLU(), nn.Conv2d(ch[-1], code_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # (B,3,S,S) -> (B,D,S/d,S/d)


class Decoder(nn.Module):
    def __init__(self, channels: int, levels: int, code_dim: int):
        super().__init__()
        ch = _level_channels(channels, levels)[::-1]
        layers: list[nn.Module] = [nn.Conv2d(code_dim, ch[0], 3, padding=1)]
        for i in range(levels - 1):
            layers += [ResBlock(ch[i]), nn.ConvTranspose2d(ch[i], ch[i + 1], 4, stride=2, padding=1)]
        layers += [nn.SiLU(), nn.ConvTranspose2d(ch[-1], 3, 4, stride=2, padding=1)]
        self.net = nn.Sequential(*layers)
        # Codes are unit vectors (entries ~ 1/sqrt(D)); scaled to unit-size entries they suit the
        # conv layers' default init (+1.2 dB held-out PSNR after 300 tiny-preset steps on sim frames).
        self.input_scale = math.sqrt(code_dim)

    def forward(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.net(z * self.input_scale))  # (B,D,g,g) -> (B,3,S,S) in [0,1]


class VQTokenizer(nn.Module):
    """Conv encoder -> EMA vector quantiser -> conv decoder; `n_tokens` codes per frame."""

    def __init__(
        self,
        image_size: int = 64,
        downsample: int = 8,
        channels: int = 32,
        codebook_size: int = 256,
        code_dim: int = 32,
        commitment_weight: float = 0.25,
        dead_code_threshold: float = 1e-3,
    ):
        super().__init__()
        levels = round(math.log2(downsample))
        if 2**levels != downsample:
            raise UserError(f"model.tokenizer_downsample={downsample} must be a power of two (e.g. 8); fix it in the config")
        if image_size % downsample:
            raise UserError(f"model.tokenizer_image_size={image_size} must be divisible by model.tokenizer_downsample={downsample}")
        self.image_size = image_size
        self.downsample = downsample
        self.channels = channels
        self.code_dim = code_dim
        self.commitment_weight = commitment_weight
        self.dead_code_threshold = dead_code_threshold
        self.grid = image_size // downsample
        self.encoder = Encoder(channels, levels, code_dim)
        self.decoder = Decoder(channels, levels, code_dim)
        # EMA codebook state: buffers, saved in the state dict, never touched by the optimizer.
        self.register_buffer("codebook", F.normalize(torch.randn(codebook_size, code_dim), dim=1))  # (K,D) unit rows
        self.register_buffer("ema_sum", self.codebook.clone())  # (K,D) sum of assigned vectors (EMA)
        self.register_buffer("usage", torch.full((codebook_size,), 1.0 / codebook_size))  # (K,) token fraction (EMA)
        self.register_buffer("initialized", torch.tensor(False))

    @classmethod
    def from_config(cls, cfg: F1Config) -> "VQTokenizer":
        m, t = cfg.model, cfg.tokenizer
        return cls(
            image_size=m.tokenizer_image_size,
            downsample=m.tokenizer_downsample,
            channels=m.tokenizer_channels,
            codebook_size=m.codebook_size,
            code_dim=m.code_dim,
            commitment_weight=t.commitment_weight,
            dead_code_threshold=t.dead_code_threshold,
        )

    @property
    def n_tokens(self) -> int:
        return self.grid * self.grid

    @property
    def codebook_size(self) -> int:
        return self.codebook.shape[0]

    # ------------------------------------------------------------------ pixels

    def preprocess(self, images: Tensor) -> Tensor:
        """uint8 (B,H,W,3) -> float (B,3,S,S) in [0,1], resized (antialiased) when H, W differ from S."""
        assert images.dtype == torch.uint8 and images.ndim == 4 and images.shape[-1] == 3, (images.dtype, images.shape)
        x = images.to(self.codebook.device).permute(0, 3, 1, 2).float() / 255.0  # (B,3,H,W)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True, align_corners=False)
            x = x.clamp(0.0, 1.0)
        return x

    # ------------------------------------------------------------------ quantiser

    def _nearest(self, z: Tensor) -> Tensor:
        """Unit vectors z (N,D) -> index of the nearest code (N,) (largest cosine)."""
        return (z @ self.codebook.t()).argmax(1)  # (N,K) -> (N,)

    @torch.no_grad()
    def _kmeans_init(self, z: Tensor) -> None:
        """Start the codebook from k-means on the first batch's encoder outputs z (N,D)."""
        k = self.codebook_size
        pick = torch.randint(0, z.shape[0], (k,), device=z.device) if z.shape[0] < k else torch.randperm(z.shape[0], device=z.device)[:k]
        centres = z[pick].clone()  # (K,D)
        for _ in range(KMEANS_ITERS):
            assign = (z @ centres.t()).argmax(1)  # (N,K) -> (N,)
            sums = torch.zeros_like(centres).index_add_(0, assign, z)
            counts = torch.bincount(assign, minlength=k).float()  # (K,)
            filled = counts > 0
            centres[filled] = F.normalize(sums[filled], dim=1)
            # an empty centre jumps to a random point: every code starts inside the data
            n_empty = int((~filled).sum())
            if n_empty:
                centres[~filled] = z[torch.randint(0, z.shape[0], (n_empty,), device=z.device)]
        self.codebook.copy_(centres)
        self.ema_sum.copy_(centres)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _ema_update(self, z: Tensor, idx: Tensor) -> None:
        """Move each code towards the mean of the encoder outputs assigned to it; reset dead codes."""
        k = self.codebook_size
        counts = torch.bincount(idx, minlength=k).float()  # (K,)
        sums = torch.zeros_like(self.codebook).index_add_(0, idx, z)  # (K,D)
        self.ema_sum.mul_(EMA_DECAY).add_(sums, alpha=1 - EMA_DECAY)
        self.usage.mul_(USAGE_DECAY).add_(counts / idx.numel(), alpha=1 - USAGE_DECAY)
        # the mean direction of the assigned vectors; the count's scale cancels in the normalisation
        self.codebook.copy_(F.normalize(self.ema_sum, dim=1))
        dead = self.usage < self.dead_code_threshold
        n_dead = int(dead.sum())
        if n_dead:
            fresh = z[torch.randint(0, z.shape[0], (n_dead,), device=z.device)]  # (n_dead,D) recent encoder outputs
            self.codebook[dead] = fresh
            self.ema_sum[dead] = fresh
            # a reset code gets a fair chance before it can be called dead again
            self.usage[dead] = 1.0 / k

    def quantize(self, z_e: Tensor) -> tuple[Tensor, Tensor]:
        """Unit z_e (B,D,g,g) -> (z_q (B,D,g,g) straight-through, idx (B,g*g) row-major)."""
        b, d, g, _ = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)  # (B*g*g,D)
        if self.training and not bool(self.initialized):
            self._kmeans_init(flat.detach())
        idx = self._nearest(flat.detach())  # (B*g*g,)
        if self.training:
            self._ema_update(flat.detach(), idx)
        z_q = self.codebook[idx].view(b, g, g, d).permute(0, 3, 1, 2)  # (B,D,g,g)
        # straight-through: the decoder's gradient passes to the encoder unchanged
        return z_e + (z_q - z_e).detach(), idx.view(b, g * g)

    # ------------------------------------------------------------------ public API

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """uint8 (B,H,W,3) -> tokens LongTensor (B, n_tokens), the grid flattened row-major."""
        z_e = F.normalize(self.encoder(self.preprocess(images)), dim=1)  # (B,D,g,g) unit vectors
        b, d, g, _ = z_e.shape
        return self._nearest(z_e.permute(0, 2, 3, 1).reshape(-1, d)).view(b, g * g)

    @torch.no_grad()
    def decode(self, tokens: Tensor) -> Tensor:
        """tokens (B, n_tokens) -> float images (B,3,S,S) in [0,1]."""
        assert tokens.ndim == 2 and tokens.shape[1] == self.n_tokens, (tuple(tokens.shape), self.n_tokens)
        b = tokens.shape[0]
        z_q = self.codebook[tokens.long()].view(b, self.grid, self.grid, self.code_dim).permute(0, 3, 1, 2)  # (B,D,g,g)
        return self.decoder(z_q)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """uint8 (B,H,W,3) -> recon (B,3,S,S), losses, and codebook health (perplexity, code_usage)."""
        target = self.preprocess(images)  # (B,3,S,S)
        z_e = F.normalize(self.encoder(target), dim=1)  # (B,D,g,g) unit vectors
        z_q, idx = self.quantize(z_e)
        recon = self.decoder(z_q)  # (B,3,S,S)
        recon_loss = F.mse_loss(recon, target)
        # codebook moves by EMA, so only the commitment term pulls the encoder towards its codes
        vq_loss = self.commitment_weight * F.mse_loss(z_e, z_q.detach())
        counts = torch.bincount(idx.flatten(), minlength=self.codebook_size).float()  # (K,)
        probs = counts / counts.sum()
        perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
        return {
            "recon": recon,
            "target": target,
            "tokens": idx,
            "loss": recon_loss + vq_loss,
            "recon_loss": recon_loss,
            "vq_loss": vq_loss,
            "perplexity": perplexity,
            "code_usage": (counts > 0).float().mean(),
        }

    # ------------------------------------------------------------------ files

    def config_dict(self) -> dict:
        return {
            "image_size": self.image_size,
            "downsample": self.downsample,
            "channels": self.channels,
            "codebook_size": self.codebook_size,
            "code_dim": self.code_dim,
            "commitment_weight": self.commitment_weight,
            "dead_code_threshold": self.dead_code_threshold,
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
    def load(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> "VQTokenizer":
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
