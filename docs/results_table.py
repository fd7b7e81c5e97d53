"""Rewrite README's "Results on the example" table from a pair's metrics files, never by hand.

Reads ``{metrics}/{pair}.headline.csv`` (the test split per field and the mean over fields,
as the report shows it) and ``{metrics}/{pair}.csv`` (for the validation simulations), and
replaces what lies between the ``<!-- results:start -->`` and ``<!-- results:end -->``
markers of the README with the table and a line on the validation split.

    snakemake --cores 2 all && python docs/results_table.py          # README.md in place
    python docs/results_table.py --pair coarse_fine --check          # exit 1 if README differs
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

START, END = "<!-- results:start -->", "<!-- results:end -->"


def headline_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise SystemExit(f"{path}: no rows; run the evaluation first")
    return rows


def validation_line(path: Path) -> str:
    """Per validation simulation: the gain per field and over the fields' mean error (the headline's measure)."""
    with open(path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "validation"]
    parts = []
    for sim in dict.fromkeys(r["simulation"] for r in rows):
        mine = [r for r in rows if r["simulation"] == sim]
        per_field = ", ".join(f"{r['field']} {float(r['improvement']):.2f}x" for r in mine)
        interp = sum(float(r["rel_l2_interp"]) for r in mine) / len(mine)
        model = sum(float(r["rel_l2_model"]) for r in mine) / len(mine)
        parts.append(f"simulation {sim}: {per_field}, mean over fields {interp / model:.2f}x")
    if not parts:
        return ""
    return "On the validation split (never trained on; it chose the checkpoint): " + "; ".join(parts) + ".\n"


def results_block(headline: list[dict[str, str]], validation: str) -> str:
    held = headline[0]["held out"]
    lines = [
        f"Test split ({held}), relative L2 error over all its frames and nodes:",
        "",
        "| field | plain interpolation, rel. L2 | model, rel. L2 | lower by |",
        "| --- | --- | --- | --- |",
    ]
    for row in headline:
        interp, model = row["interpolation rel. L2 [%]"], row["model rel. L2 [%]"]
        cells = [row["field"], f"{interp} %", f"{model} %", row["lower by"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + validation


def replace_block(text: str, block: str, where: str) -> str:
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise SystemExit(f"{where}: needs one '{START}' line and one '{END}' line after it")
    head, rest = text.split(START)
    _, tail = rest.split(END)
    return f"{head}{START}\n{block}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", default="coarse_fine", help="{src}_{dst} (default coarse_fine)")
    parser.add_argument("--metrics", type=Path, default=Path("results/metrics"), help="the metrics directory")
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if the README's table differs")
    args = parser.parse_args(argv)
    block = results_block(
        headline_rows(args.metrics / f"{args.pair}.headline.csv"),
        validation_line(args.metrics / f"{args.pair}.csv"),
    )
    text = args.readme.read_text()
    new = replace_block(text, block, str(args.readme))
    if args.check:
        print("up to date" if new == text else f"{args.readme}: the results table differs from {args.metrics}")
        return 0 if new == text else 1
    if new != text:
        args.readme.write_text(new)
    print(f"{args.readme}: results table from {args.metrics / args.pair}.headline.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
