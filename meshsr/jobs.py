"""What every Snakemake entry point shares: logging to the rule's log, clean failures."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from meshsr.errors import InputError

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"


@contextlib.contextmanager
def job_logging(log_path: str | Path | None, name: str = "meshsr") -> Iterator[logging.Logger]:
    """Log INFO to ``log_path`` (and warnings to stderr); turn an InputError into one line and exit 1."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.handlers.clear()
    logger.propagate = False
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_path, mode="w")
        file_handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logger.addHandler(file_handler)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING)
    console.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(console)
    try:
        yield logger
    except InputError as exc:
        logger.error("%s", exc)
        sys.exit(1)
