"""Errors that carry the offending file, so every entry point can print one clear line."""

from __future__ import annotations

import difflib
from pathlib import Path


class InputError(Exception):
    """Bad user input: a file or setting that violates one of meshsr's contracts."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


def suggest(name: str, valid: list[str]) -> str:
    """What to do about an unknown key: the nearest valid one (if any is near) and the valid ones, in order."""
    listing = f"(valid: {', '.join(valid)})"
    near = difflib.get_close_matches(name, valid, n=1)
    return f"did you mean {near[0]!r}? {listing}" if near else f"remove it {listing}"
