"""Frame tokens, computed once per episode by the frozen tokenizer and kept in memory.

The tokenizer is frozen for the whole teacher phase, so a frame's tokens never
change; tokenising each chunk's window again (history + target overlap the
neighbours, and every epoch revisits every frame) would make the conv encoder,
not the world model, the cost of a step. Episodes are tokenised whole (a
fixed batch composition, so the same tokens on a resumed run) and kept as
int16 on the CPU, int32 past 32768 codes: 2 or 4 bytes a token, e.g. 1M frames x 256 tokens x 4 bytes = 1 GB a camera.
The wrist frames are kept too, at the tokenizer's size as uint8 (what the motion compensation
warps: 12 KB a 64x64 frame, 12 GB a million).
This in-memory cache is rebuilt by every run and held by every rank: the teacher uses the token store
(token_store.py, on disk, memory-mapped) unless `teacher.token_store: false`; `teacher.cache_tokens: false`
tokenises every chunk's frames instead.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from f1.datasets.reader import StoreReader
from f1.train.models.tokenizer import FSQTokenizer

ENCODE_BATCH = 256


@torch.no_grad()
def preprocess_frames(tokenizer: FSQTokenizer, frames: Tensor, batch: int = ENCODE_BATCH) -> Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, S, S) in [0,1] at the tokenizer's size, rounded to 8 bits
    (as the token cache keeps them, so both paths feed the motion the same frames)."""
    lead = frames.shape[:-3]
    flat = frames.reshape(-1, *frames.shape[-3:])  # (F,H,W,3)
    out = torch.cat([tokenizer.preprocess(flat[i : i + batch]) for i in range(0, flat.shape[0], batch)])  # (F,3,S,S)
    return (out * 255).round().div(255).view(*lead, *out.shape[1:])


@torch.no_grad()
def encode_episode(tokenizer: FSQTokenizer, images: Tensor) -> Tensor:
    """uint8 (N,H,W,3) -> long (N,n) on the CPU, ENCODE_BATCH frames at a time: the same batches for the
    in-memory cache and the token store, so both hold the same tokens."""
    return torch.cat([tokenizer.encode(images[i : i + ENCODE_BATCH]) for i in range(0, len(images), ENCODE_BATCH)]).cpu()


def episode_frames(tokenizer: FSQTokenizer, images: Tensor) -> Tensor:
    """uint8 (N,H,W,3) -> uint8 (N,3,S,S) on the CPU: the frames the motion stage warps, at the tokenizer's size."""
    return (preprocess_frames(tokenizer, images) * 255).round().to("cpu", torch.uint8)


class TokenCache:
    """tokens[camera][episode index] = int16 (N, n) (int32 past 32768 codes) for every episode warmed so far."""

    def __init__(self, store: StoreReader, tokenizer: FSQTokenizer, cameras: Sequence[str]) -> None:
        self.store, self.tokenizer, self.cameras = store, tokenizer, tuple(cameras)
        self.dtype = torch.int16 if tokenizer.codebook_size <= 2**15 else torch.int32
        self.n_tokens = tokenizer.n_tokens
        self.tokens: dict[str, dict[int, Tensor]] = {camera: {} for camera in self.cameras}
        self.frames: dict[int, Tensor] = {}  # episode -> uint8 (N,3,S,S), the wrist camera at the tokenizer's size

    def missing(self, episodes: Iterable[int]) -> list[int]:
        return sorted({int(e) for e in episodes} - set(self.tokens[self.cameras[0]]))

    @torch.no_grad()
    def warm(self, episodes: Iterable[int], progress: bool = False, desc: str = "tokenising") -> int:
        """Tokenise the episodes not cached yet; returns how many frames were encoded."""
        from tqdm import tqdm

        todo = self.missing(episodes)
        frames = 0
        keys = tuple(f"{camera}_rgb" for camera in self.cameras)
        for e in tqdm(todo, desc=desc, unit="episode", disable=not progress or not todo, leave=False):
            arrays = self.store.read_episode(self.store.episodes[e], keys=keys)
            for camera, key in zip(self.cameras, keys):
                images = torch.from_numpy(arrays[key])  # (N,H,W,3) uint8
                self.tokens[camera][e] = encode_episode(self.tokenizer, images).to(self.dtype)  # (N,n)
                if camera == "wrist":
                    self.frames[e] = episode_frames(self.tokenizer, images)  # (N,3,S,S)
                frames += len(images)
        return frames

    def gather(self, camera: str, episode_index: np.ndarray, step: np.ndarray) -> Tensor:
        """Tokens of (episode, step) pairs: any shape S -> long (*S, n); episode -1 (padding) gives zeros."""
        assert episode_index.shape == step.shape, (episode_index.shape, step.shape)
        out = torch.zeros(*episode_index.shape, self.n_tokens, dtype=self.dtype)
        cached = self.tokens[camera]
        for e in np.unique(episode_index[episode_index >= 0]):
            assert int(e) in cached, ("episode not tokenised yet: warm() it first", camera, int(e))
            where = episode_index == e
            out[torch.from_numpy(where)] = cached[int(e)][torch.from_numpy(step[where])]
        return out.long()

    def gather_frames(self, episode_index: np.ndarray, step: np.ndarray) -> Tensor:
        """Wrist frames of (episode, step) pairs: any shape S -> float (*S, 3, S, S) in [0,1]; episode -1 gives zeros."""
        assert episode_index.shape == step.shape, (episode_index.shape, step.shape)
        size = self.tokenizer.image_size
        out = torch.zeros(*episode_index.shape, 3, size, size, dtype=torch.uint8)
        for e in np.unique(episode_index[episode_index >= 0]):
            assert int(e) in self.frames, ("episode not cached yet: warm() it first", int(e))
            where = episode_index == e
            out[torch.from_numpy(where)] = self.frames[int(e)][torch.from_numpy(step[where])]
        return out.float() / 255.0

    @property
    def nbytes(self) -> int:
        tokens = sum(t.numel() * t.element_size() for per_camera in self.tokens.values() for t in per_camera.values())
        return tokens + sum(f.numel() for f in self.frames.values())
