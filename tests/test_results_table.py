import csv
import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("results_table", REPO / "docs" / "results_table.py")
results_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(results_table)

HEADLINE = [
    ["coarse -> fine", "simulation(s) 5", "tracer", "10.45", "3.73", "2.80x"],
    ["coarse -> fine", "simulation(s) 5", "heat", "6.56", "2.27", "2.88x"],
    ["coarse -> fine", "simulation(s) 5", "mean over fields", "8.51", "3.00", "2.83x"],
]
METRICS = [
    ["train", "0", "0-47", "tracer", "0.2", "0.1", "0", "0", "2.0"],
    ["validation", "4", "0-47", "tracer", "0.3", "0.15", "0", "0", "2.0"],
    ["validation", "4", "0-47", "heat", "0.1", "0.025", "0", "0", "4.0"],
]


def _write(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture
def metrics(tmp_path):
    _write(
        tmp_path / "coarse_fine.headline.csv",
        ["pair", "held out", "field", "interpolation rel. L2 [%]", "model rel. L2 [%]", "lower by"],
        HEADLINE,
    )
    header = ["split", "simulation", "frames", "field", "rel_l2_interp", "rel_l2_model"]
    _write(tmp_path / "coarse_fine.csv", header + ["rmse_interp", "rmse_model", "improvement"], METRICS)
    return tmp_path


def test_the_readme_table_is_rewritten_from_the_metrics_files_and_then_checks_clean(metrics, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{results_table.START}\n| stale | table |\n{results_table.END}\nafter\n")
    args = ["--metrics", str(metrics), "--readme", str(readme)]
    assert results_table.main([*args, "--check"]) == 1
    assert results_table.main(args) == 0
    text = readme.read_text()
    assert "stale" not in text and text.startswith("intro\n") and text.endswith("after\n")
    assert "| tracer | 10.45 % | 3.73 % | 2.80x |" in text
    assert "| mean over fields | 8.51 % | 3.00 % | 2.83x |" in text
    assert "Test split (simulation(s) 5)" in text
    # validation: per field, and the mean of the errors (0.2 / 0.0875), not the mean of the gains (3.0)
    assert "simulation 4: tracer 2.00x, heat 4.00x, mean over fields 2.29x" in text
    assert results_table.main([*args, "--check"]) == 0


def test_a_readme_without_the_markers_is_refused(metrics, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit, match="needs one"):
        results_table.main(["--metrics", str(metrics), "--readme", str(readme)])
    assert readme.read_text() == "no markers\n"


def test_the_projects_readme_has_one_results_block():
    text = (REPO / "README.md").read_text()
    assert text.count(results_table.START) == 1 and text.count(results_table.END) == 1
