"""Frame tokens, computed once per episode by the frozen tokenizer and kept in memory.

The tokenizer is frozen for the whole teacher phase, so a frame's tokens never
change; tokenising each chunk's window again (history + target overlap the
neighbours, and every epoch revisits every frame) would make the conv encoder,
not the world model, the cost of a step. Episodes are tokenised whole (a
fixed batch composition, so the same tokens on a resumed run) and kept as
int16 on the CPU, int32 past 32768 codes: 2 or 4 bytes a token, e.g. 1M frames x 256 tokens x 4 bytes = 1 GB a camera.
`teacher.cache_tokens: false` turns this off for stores whose tokens do not fit.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from f1.datasets.reader import StoreReader
from f1.train.models.tokenizer import FSQTokenizer

ENCODE_BATCH = 256


class TokenCache:
    """tokens[camera][episode index] = int16 (N, n) (int32 past 32768 codes) for every episode warmed so far."""

    def __init__(self, store: StoreReader, tokenizer: FSQTokenizer, cameras: Sequence[str]) -> None:
        self.store, self.tokenizer, self.cameras = store, tokenizer, tuple(cameras)
        self.dtype = torch.int16 if tokenizer.codebook_size <= 2**15 else torch.int32
        self.n_tokens = tokenizer.n_tokens
        self.tokens: dict[str, dict[int, Tensor]] = {camera: {} for camera in self.cameras}

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
                tokens = [self.tokenizer.encode(images[i : i + ENCODE_BATCH]) for i in range(0, len(images), ENCODE_BATCH)]
                self.tokens[camera][e] = torch.cat(tokens).to("cpu", self.dtype)  # (N,n)
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

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for per_camera in self.tokens.values() for t in per_camera.values())
