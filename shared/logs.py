"""Logging set-up: console at the configured level (rich), a full DEBUG file under <output_dir>/logs/."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional

from f1.shared.config import LoggingConfig


def setup_logging(cfg: LoggingConfig, output_dir: Optional[str | Path] = None, name: str = "f1") -> logging.Logger:
    """Configure the 'f1' logger once per process and return `f1.<name>` (or 'f1')."""
    from rich.logging import RichHandler

    root = logging.getLogger("f1")
    root.setLevel(logging.DEBUG)
    root.propagate = False
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    console = RichHandler(level=getattr(logging, cfg.console_level), show_path=False, rich_tracebacks=False)
    root.addHandler(console)
    if cfg.enable_file_logging and output_dir is not None:
        log_dir = Path(output_dir) / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_dir / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.log")
        file_handler.setLevel(getattr(logging, cfg.file_level))
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(process)d: %(message)s"))
        root.addHandler(file_handler)
    return logging.getLogger(f"f1.{name}") if name != "f1" else root
