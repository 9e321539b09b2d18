"""Action and state normalizers: fit from dataset stats, saved as JSON, exactly invertible.

Only the real dims are scaled; padding dims stay as they are (zeros), so a
normalized padded vector is still zero where the robot has no joint.
Works on numpy arrays and torch tensors alike.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

NORMALIZER_FILE = "normalizer.json"


@dataclass
class Normalizer:
    """z = (x - mean) / std on the first `real_dims` entries; identity on the padding."""

    mean: list[float]
    std: list[float]
    real_dims: int

    @classmethod
    def fit(cls, values: np.ndarray, real_dims: int, min_std: float = 1e-6) -> "Normalizer":
        """Fit from samples of shape (N, dim)."""
        x = np.asarray(values, dtype=np.float64)[:, :real_dims]
        return cls(x.mean(0).tolist(), np.maximum(x.std(0), min_std).tolist(), real_dims)

    @classmethod
    def from_stats(cls, stats: dict[str, Any], min_std: float = 1e-6) -> "Normalizer":
        """From a stats entry with per-dim 'mean' and 'std' over the real dims."""
        mean = list(map(float, stats["mean"]))
        std = [max(float(s), min_std) for s in stats["std"]]
        if len(mean) != len(std):
            raise ValueError(f"stats mean and std differ in length: {len(mean)} vs {len(std)}")
        return cls(mean, std, len(mean))

    def _params(self, x: Any):
        if hasattr(x, "new_tensor"):  # torch.Tensor, without importing torch here
            return x.new_tensor(self.mean), x.new_tensor(self.std)
        return np.asarray(self.mean, dtype=x.dtype), np.asarray(self.std, dtype=x.dtype)

    def normalize(self, x: Any) -> Any:
        mean, std = self._params(x)
        out = x.clone() if hasattr(x, "clone") else np.array(x, copy=True)
        out[..., : self.real_dims] = (x[..., : self.real_dims] - mean) / std
        return out

    def unnormalize(self, z: Any) -> Any:
        mean, std = self._params(z)
        out = z.clone() if hasattr(z, "clone") else np.array(z, copy=True)
        out[..., : self.real_dims] = z[..., : self.real_dims] * std + mean
        return out


def save_normalizers(path: str | Path, normalizers: dict[str, Normalizer]) -> None:
    """Write {'action': ..., 'state': ...} as JSON (temp file, then rename)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({k: asdict(v) for k, v in normalizers.items()}, indent=2))
    tmp.replace(path)


def load_normalizers(path: str | Path) -> dict[str, Normalizer]:
    return normalizers_from_json(Path(path).read_text())


def normalizers_from_json(text: str) -> dict[str, Normalizer]:
    """The inverse of save_normalizers' JSON (read from a file or an object)."""
    return {k: Normalizer(**v) for k, v in json.loads(text).items()}
