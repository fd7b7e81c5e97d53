"""The cache inventory behind ``snakemake cache_info``: one row per file, with its status.

Statuses:

* ``valid``    readable, well-formed, and its recorded input digests match the inputs
* ``stale``    well-formed but built from other inputs, by other cache code or another
  format version (or for a pair no longer configured)
* ``corrupt``  not a valid pair cache (truncated, random bytes, object arrays, bad layout),
  or, when verifying, arrays other than those written at build time (data digest)
* ``partial``  a ``.tmp-*`` file: a write in progress, or left by an interrupted one
* ``missing``  a configured pair without a cache file (``snakemake caches`` builds it)

Files are only ever read with ``allow_pickle=False``; nothing in them executes.  Nothing
is written to the cache directory, which may be read-only or missing.  Each row's
``location`` is where the file's bytes are: its real path, an entry of the shared store
when ``snakemake --cache`` linked it there (Snakemake's output cache).
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import astuple, dataclass, fields
from datetime import datetime
from pathlib import Path

from meshsr.atomic import atomic_open
from meshsr.cache.format import CacheError, data_problem, inspect_pair_cache
from meshsr.cache.freshness import StaleCacheError, check_fresh, code_problem, rebuild_command
from meshsr.cache.keys import location

PAIR_FILE = re.compile(r"^([A-Za-z0-9-]+)_([A-Za-z0-9-]+)\.npz$")
TEMP_FILE = re.compile(r"^\.tmp-([A-Za-z0-9-]+_[A-Za-z0-9-]+)\.npz-")
STATUSES = ("valid", "stale", "corrupt", "partial", "missing")


@dataclass
class CacheRow:
    file: str
    pair: str
    size_mb: float | None = None
    modified: str = ""
    source_nodes: int | None = None
    destination_nodes: int | None = None
    simulations: int | None = None
    timesteps: int | None = None
    extrapolated_nodes: int | None = None
    status: str = ""
    detail: str = ""
    location: str = ""  # the file's real path: a store entry for a link made by Snakemake's --cache


COLUMNS = tuple(f.name for f in fields(CacheRow))


def _row_for_file(
    path: Path, pairs: dict[str, tuple[str, str]], cache_dir: Path, memo: Path | None, verify: bool
) -> CacheRow:
    st = path.stat()
    match = PAIR_FILE.match(path.name)
    pair = f"{match[1]}_{match[2]}" if match else ""
    row = CacheRow(
        file=str(path),
        pair=pair,
        size_mb=st.st_size / 1e6,
        modified=datetime.fromtimestamp(st.st_mtime).isoformat(sep=" ", timespec="seconds"),
        location=os.path.realpath(path),
    )
    if path.name.startswith(".tmp-"):
        temp = TEMP_FILE.match(path.name)
        row.pair = temp[1] if temp else ""
        row.status = "partial"
        row.detail = "temporary file of a write in progress or interrupted; delete it if no run is active"
        return row
    try:
        summary = inspect_pair_cache(path)
    except CacheError as exc:
        row.status, row.detail = "corrupt", exc.problem
        return row
    except StaleCacheError as exc:  # another format version: nothing more can be read
        row.status, row.detail = "stale", exc.problem
        return row
    meta = summary.meta
    row.pair = pair or f"{meta.get('source')}_{meta.get('target')}"
    row.destination_nodes, row.source_nodes = summary.operator_shape
    row.simulations, row.timesteps = summary.shape[0], summary.shape[1]
    row.extrapolated_nodes = summary.n_extrapolated
    # A cache of other code may predate data digests: it is stale (below) either way.
    problem = data_problem(path, meta) if verify and code_problem(meta) is None else None
    if problem is not None:
        row.status, row.detail = "corrupt", f"{problem}; rebuild it with: {rebuild_command(path, cache_dir)}"
        return row
    if pair not in pairs:
        row.status, row.detail = "stale", "not the cache of a pair in config 'meshes'; nothing reads it"
        return row
    if (meta.get("source"), meta.get("target")) != tuple(pair.split("_")):
        row.status, row.detail = "stale", f"built for pair {meta.get('source')}_{meta.get('target')}"
        return row
    src, dst = pairs[pair]
    try:
        check_fresh(summary, path, src, dst, rebuild_command(path, cache_dir), memo=memo)
    except StaleCacheError as exc:
        row.status, row.detail = "stale", exc.problem
        return row
    row.status = "valid"
    return row


def inventory(
    cache_dir: str | Path, pairs: dict[str, tuple[str, str]], memo: str | Path | None = None, verify: bool = False
) -> list[CacheRow]:
    """One row per ``*.npz`` / ``.tmp-*`` file in ``cache_dir`` plus one per configured pair without a file.

    ``pairs`` maps ``"{src}_{dst}"`` to the (source, destination) input paths of the
    current configuration; ``memo`` is the workflow's digest memo.  ``verify`` also reads
    every cache's arrays in full and checks them against the digest recorded at build time.
    """
    cache_dir = Path(cache_dir)
    memo = Path(memo) if memo is not None else None
    files = sorted(p for p in cache_dir.glob("*") if p.is_file() and p.suffix == ".npz")
    rows = [_row_for_file(p, pairs, cache_dir, memo, verify) for p in files]
    present = {p.name for p in files}
    for pair in pairs:
        if f"{pair}.npz" not in present:
            path = str(cache_dir / f"{pair}.npz")
            rows.append(CacheRow(file=path, pair=pair, status="missing", detail="not built yet"))
    return rows


def total_size_mb(rows: list[CacheRow]) -> float:
    return sum(r.size_mb or 0.0 for r in rows)


def _cells(row: CacheRow) -> list[str]:
    out = []
    for value in astuple(row):
        if value is None:
            out.append("")
        elif isinstance(value, float):
            out.append(f"{value:.3f}")
        else:
            out.append(str(value))
    return out


def _total_cells(rows: list[CacheRow]) -> list[str]:
    return ["TOTAL", "", f"{total_size_mb(rows):.3f}"] + [""] * (len(COLUMNS) - 3)


def to_tsv(rows: list[CacheRow]) -> str:
    """Header, one line per row, and a last ``TOTAL`` line with the summed size."""
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(_cells(r) for r in rows)
    writer.writerow(_total_cells(rows))
    return buf.getvalue()


def write_tsv(path: str | Path, rows: list[CacheRow]) -> None:
    with atomic_open(path) as fh:
        fh.write(to_tsv(rows))


def format_table(rows: list[CacheRow], cache_dir: str | Path) -> str:
    """A fixed-width table for the terminal (file names relative to ``cache_dir``)."""
    head = ["file", "pair", "MB", "modified", "src nodes", "dst nodes", "S", "T", "extrap.", "status"]
    body = []
    for row in rows:
        cells = _cells(row)
        cells[0] = Path(row.file).name
        cells[2] = f"{row.size_mb:.1f}" if row.size_mb is not None else ""
        body.append(cells[: len(head)])
    body.append(["TOTAL", "", f"{total_size_mb(rows):.1f}"] + [""] * (len(head) - 3))
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    lines = [f"pair caches in {cache_dir}"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [head, *body]]
    links = [f"  {Path(r.file).name} -> {r.location}" for r in rows if r.location and r.location != location(r.file)]
    if links:
        lines += ["", "stored elsewhere (links, e.g. into Snakemake's output cache):", *links]
    problems = [f"  {Path(r.file).name}: {r.status}: {r.detail}" for r in rows if r.status not in ("valid", "missing")]
    if problems:
        lines += ["", "problems:", *problems]
    if not rows:
        lines.append("(no cache files and no configured pairs)")
    return "\n".join(lines)
