"""Errors that carry the offending file, so every entry point can print one clear line."""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """Bad user input: a file or setting that violates one of meshsr's contracts."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)
