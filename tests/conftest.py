"""Shared fixtures: a temporary copy of the workflow on tiny data, driven by the real CLI.

The helpers behind them live in workflow_helpers.py (tests import from there, never from conftest).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from workflow_helpers import Workflow, copy_workflow


@pytest.fixture
def workflow(tmp_path: Path) -> Workflow:
    """A fresh copy of the workflow with the tiny example configuration."""
    return copy_workflow(tmp_path / "wf")
