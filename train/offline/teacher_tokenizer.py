"""Which tokenizer the teacher uses when `--tokenizer` is not given: the resumed run's, else OUT/tokenizer/.

A new run without one trains it first, with the config's tokenizer settings,
into OUT/tokenizer/ (`f1 train tokenizer`'s own code, progress bar and
outputs), so `f1 train teacher --data shards/` works on its own. A resume
takes the tokenizer its checkpoint was trained with: a world model predicts
one tokenizer's codes, and another tokenizer with the same vocabulary would
pass every shape check.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Optional

from f1.shared.config import F1Config
from f1.shared.errors import UserError
from f1.train.checkpoint import Checkpoint
from f1.train.models.tokenizer import CONFIG_FILE, WEIGHTS_FILE

TOKENIZER_DIR = "tokenizer"

log = logging.getLogger("f1.teacher")


def choose_tokenizer(cfg: F1Config, data: Path, checkpoint: Optional[Checkpoint]) -> None:
    """Set cfg.teacher.tokenizer_path when it is unset: the checkpoint's, else OUT/tokenizer/ (trained now if missing)."""
    if cfg.teacher.tokenizer_path:
        return
    if checkpoint is not None:
        cfg.teacher.tokenizer_path = checkpoint.model["model_config"]["tokenizer_path"]
        return
    directory = Path(cfg.teacher.output_dir) / TOKENIZER_DIR
    if not all((directory / name).is_file() for name in (CONFIG_FILE, WEIGHTS_FILE)):
        if int(os.environ.get("RANK", "0")) > 0:
            # Ranks started by an outside launcher would all train it at once.
            raise UserError(
                f"no tokenizer in {directory}; train it first (`f1 train tokenizer --data {data} --output-dir {directory}`) "
                "or start the run with `f1 train teacher --gpus N`"
            )
        from f1.train.offline.tokenizer_phase import main as train_tokenizer

        log.warning("no --tokenizer given: training one into %s first", directory)
        tokenizer_cfg = copy.deepcopy(cfg)
        tokenizer_cfg.tokenizer.output_dir = str(directory)
        train_tokenizer(tokenizer_cfg, data)
    cfg.teacher.tokenizer_path = str(directory)
