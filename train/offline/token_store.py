"""The token store: every frame's tokens under one tokenizer, on disk beside the data, read by memory map.

    <store>/tokens/<key16>/                      (default place; or any folder: `--out`, teacher.token_store_dir)
        token_store.json                         {"format", "key", "tokenizer", "cameras", "frame_size", "token_dtype"}
        shards/<data shard, no suffix>/          one token shard per data shard, the same episodes
            episodes.json                        [{"id", "start", "length"}] in the data shard's order
            wrist_tokens.npy  head_tokens.npy    int16 (F, n) (int32 past 32768 codes), F = the shard's frames
            wrist_frames.npy                     uint8 (F, 3, S, S): the wrist frames at the tokenizer's size
        shards/.../.tmp-<name>+<host>+<pid>/     a writer's unfinished shard: never read

A token shard is written whole under a temporary name and renamed into
place (DESIGN §3), so a shard is present iff its folder is, and a killed
writer's output is never used. A shard holds exactly what one data shard
holds, encoded episode by episode: its bytes do not depend on which worker
wrote it, so any split of the work gives the same store. Episodes are found
by id, so a store that grows is tokenised only for its new shards.

The key is a hash of the tokenizer's weights and of how frames are
preprocessed (its config and PREPROCESS below), never its path: a copied
tokenizer keeps its token store, a retrained one gets a new one, and a
folder made with another tokenizer is refused (`TokenStoreMismatch`).

Plain .npy files, opened with `np.load(mmap_mode="r")`: pages come from the
page cache (file-backed memory the kernel may drop), so a reader's anonymous
memory does not grow with the store, and a rank maps only the shards of the
episodes it replays. For an s3:// store the token store is on a local (or
shared) filesystem, since a memory map needs one: `default_location`.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from f1.datasets.reader import StoreReader
from f1.datasets.s3 import S3Path
from f1.shared.errors import UserError
from f1.train.models.tokenizer import FSQTokenizer

FORMAT = 1
META_FILE = "token_store.json"
SHARDS_DIR = "shards"
EPISODES_FILE = "episodes.json"
TOKENS_DIR = "tokens"  # under a local store: <store>/tokens/<key16>/
TMP_PREFIX = ".tmp-"
# How a frame becomes the tokenizer's input and the motion stage's frame (token_cache.preprocess_frames):
# part of the key, so a change to that code must change this string.
PREPROCESS = "uint8 HWC -> float CHW /255, bilinear antialiased resize to image_size, frames rounded to 8 bits"
MAX_OPEN_SHARDS = 64


class TokenStoreMismatch(UserError):
    """The folder holds another tokenizer's tokens."""


def temporary_name(name: str) -> str:
    """A writer's temporary name for `name`: .tmp-<name>+<host>+<pid>, so a later writer knows whether its owner lives."""
    return f"{TMP_PREFIX}{name}+{socket.gethostname()}+{os.getpid()}"


def tokenizer_key(tokenizer: FSQTokenizer) -> str:
    """sha256 of the tokenizer's config, its weights (name, dtype, shape, bytes, in name order) and PREPROCESS."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"format": FORMAT, "preprocess": PREPROCESS, "config": tokenizer.config_dict()}, sort_keys=True).encode())
    for name, value in sorted(tokenizer.state_dict().items()):
        array = value.detach().to("cpu").contiguous()
        digest.update(f"{name}:{array.dtype}:{tuple(array.shape)}".encode())
        digest.update(array.numpy().tobytes())
    return digest.hexdigest()


def token_dtype(tokenizer: FSQTokenizer) -> np.dtype:
    return np.dtype(np.int16 if tokenizer.codebook_size <= 2**15 else np.int32)


def store_cameras(store: StoreReader) -> tuple[str, ...]:
    """The cameras a token store holds: the store's own, wrist first (the teacher's history and target)."""
    return tuple(sorted(store.spec.cameras, key=lambda camera: camera != "wrist"))


def default_location(store_dir: Path | S3Path, key: str) -> Path:
    """<store>/tokens/<key16>/ for a local store; for an s3:// store a local cache folder,
    $F1_TOKEN_CACHE (default ~/.cache/f1/tokens)/<bucket>/<prefix>/<key16>/ (a memory map needs a filesystem)."""
    if isinstance(store_dir, S3Path):
        root = Path(os.environ.get("F1_TOKEN_CACHE", Path.home() / ".cache" / "f1" / "tokens"))
        return root / store_dir.bucket / store_dir.key / key[:16]
    return Path(store_dir) / TOKENS_DIR / key[:16]


def shard_folder(data_shard: str) -> str:
    """A data shard's name (maybe under chunk folders) without its suffix: its token shard's folder under shards/."""
    for suffix in (".zarr", ".tar"):
        if data_shard.endswith(suffix):
            return data_shard[: -len(suffix)]
    return data_shard


def expected_meta(tokenizer: FSQTokenizer, key: str, cameras: Sequence[str]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "key": key,
        "tokenizer": tokenizer.config_dict(),
        "cameras": list(cameras),
        "frame_size": tokenizer.image_size,
        "n_tokens": tokenizer.n_tokens,
        "token_dtype": token_dtype(tokenizer).name,
    }


def claim_meta(root: Path, meta: dict[str, Any]) -> None:
    """Create root/token_store.json (create-only: a temporary file linked into place), or check the one there.

    A folder made with another tokenizer (or for other cameras) is refused with one line.
    """
    root.mkdir(parents=True, exist_ok=True)
    path = root / META_FILE
    if not path.exists():
        tmp = root / temporary_name(META_FILE)
        tmp.write_text(json.dumps(meta, indent=1, sort_keys=True))
        try:
            os.link(tmp, path)  # fails when another writer got there first: then its file is checked below
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    check_meta(root, meta)


def check_meta(root: Path, meta: dict[str, Any]) -> None:
    path = root / META_FILE
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        raise TokenStoreMismatch(f"{path} is missing or unreadable; delete {root} (it is rebuilt) or pass another folder") from None
    if found.get("key") != meta["key"]:
        raise TokenStoreMismatch(
            f"token store {root} was made with another tokenizer (key {str(found.get('key'))[:16]}, this one {meta['key'][:16]}); "
            "pass another folder, or delete it to tokenise again"
        )
    if found != meta:
        raise TokenStoreMismatch(
            f"token store {root} holds cameras {found.get('cameras')}, this store needs {meta['cameras']}; "
            "pass another folder, or delete it to tokenise again"
        )


def committed_shards(root: Path) -> dict[str, list[dict[str, Any]]]:
    """{shard folder (relative to shards/): its episodes.json entries} for every complete token shard."""
    base = root / SHARDS_DIR
    found = {}
    for path in sorted(base.rglob(EPISODES_FILE)) if base.is_dir() else []:
        if any(part.startswith(TMP_PREFIX) for part in path.relative_to(base).parts):
            continue  # a writer's unfinished shard
        found[path.parent.relative_to(base).as_posix()] = json.loads(path.read_text())["episodes"]
    return found


class TokenStore:
    """A read-only view of a token store over a data store's episodes: the TokenCache interface, by memory map.

    `gather`/`gather_frames` take store episode indices (StoreReader.episodes), like the cache does.
    Shards are mapped on first use (an LRU of MAX_OPEN_SHARDS): a rank maps only what its lanes replay.
    """

    def __init__(self, root: Path, store: StoreReader, tokenizer: FSQTokenizer, cameras: Sequence[str]) -> None:
        self.root, self.cameras = Path(root), tuple(cameras)
        self.n_tokens, self.image_size = tokenizer.n_tokens, tokenizer.image_size
        self.dtype = torch.int16 if token_dtype(tokenizer) == np.int16 else torch.int32
        located = {e["id"]: (shard, e["start"]) for shard, entries in committed_shards(self.root).items() for e in entries}
        self.missing_ids = [info.episode_id for info in store.episodes if info.episode_id not in located]
        # per store episode index: its token shard (index into self.shards) and first row there; -1 when absent
        self.shards = sorted({shard for shard, _ in located.values()})
        number = {shard: i for i, shard in enumerate(self.shards)}
        self.shard_of = np.full(len(store.episodes), -1, np.int64)
        self.start_of = np.zeros(len(store.episodes), np.int64)
        for info in store.episodes:
            if info.episode_id in located:
                shard, start = located[info.episode_id]
                self.shard_of[info.index], self.start_of[info.index] = number[shard], start
        self._open: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    def _arrays(self, shard: int) -> dict[str, np.ndarray]:
        with self._lock:
            arrays = self._open.get(shard)
            if arrays is None:
                folder = self.root / SHARDS_DIR / self.shards[shard]
                names = [f"{camera}_tokens" for camera in self.cameras] + ["wrist_frames"]
                arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in names}
                self._open[shard] = arrays
                while len(self._open) > MAX_OPEN_SHARDS:
                    self._open.popitem(last=False)
            self._open.move_to_end(shard)
            return arrays

    def warm(self, episodes: Iterable[int], progress: bool = False, desc: str = "") -> int:
        """Nothing to encode (the store is built before it is opened): checks the episodes are there, returns 0."""
        absent = [int(e) for e in episodes if self.shard_of[int(e)] < 0]
        assert not absent, ("episodes missing from the token store: build it first", self.root, absent[:5])
        return 0

    def _rows(self, name: str, episode_index: np.ndarray, step: np.ndarray, out: Tensor) -> Tensor:
        """out[...] = array `name` at each (episode, step); episode -1 (padding) keeps out's zeros."""
        assert episode_index.shape == step.shape, (episode_index.shape, step.shape)
        for e in np.unique(episode_index[episode_index >= 0]):
            shard = int(self.shard_of[e])
            assert shard >= 0, ("episode not in the token store", self.root, int(e))
            where = episode_index == e
            rows = self.start_of[e] + step[where]
            out[torch.from_numpy(where)] = torch.from_numpy(np.asarray(self._arrays(shard)[name][rows]))
        return out

    def gather(self, camera: str, episode_index: np.ndarray, step: np.ndarray) -> Tensor:
        """Tokens of (episode, step) pairs: any shape S -> long (*S, n); episode -1 gives zeros."""
        out = torch.zeros(*episode_index.shape, self.n_tokens, dtype=self.dtype)
        return self._rows(f"{camera}_tokens", episode_index, step, out).long()

    def gather_frames(self, episode_index: np.ndarray, step: np.ndarray) -> Tensor:
        """Wrist frames of (episode, step) pairs: any shape S -> float (*S, 3, S, S) in [0,1]; episode -1 gives zeros."""
        out = torch.zeros(*episode_index.shape, 3, self.image_size, self.image_size, dtype=torch.uint8)
        return self._rows("wrist_frames", episode_index, step, out).float() / 255.0

    @property
    def nbytes(self) -> int:
        """Bytes of the token shards on disk (mapped, not held)."""
        return sum(p.stat().st_size for p in (self.root / SHARDS_DIR).rglob("*.npy") if TMP_PREFIX not in str(p))

    def close(self) -> None:
        with self._lock:
            self._open.clear()


def rss_anon_bytes() -> Optional[int]:
    """This process's anonymous resident memory (RssAnon in /proc/self/status): what file pages do not count in."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
