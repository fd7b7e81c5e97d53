"""docs/reliability.md: every row names a test that exists."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_row_names_an_existing_test():
    rows = [line for line in (REPO / "docs" / "reliability.md").read_text().splitlines() if line.startswith("| ")]
    last = [row.rstrip(" |").rsplit("| ", 1)[1] for row in rows]
    tests = [cell for cell in last if cell != "test" and not cell.startswith("---")]  # headers and rules left out
    assert len(tests) > 20
    for test in tests:
        match = re.fullmatch(r"(tests/test_\w+\.py)::(test_\w+)(\[[^\]]+\])?", test)
        assert match, f"not a test id: {test!r}"
        path, name, param = match.groups()
        source = (REPO / path).read_text()
        assert f"def {name}(" in source, test
        if param:
            assert f'"{param[1:-1]}"' in source or f"'{param[1:-1]}'" in source, f"no parameter id in {test}"
