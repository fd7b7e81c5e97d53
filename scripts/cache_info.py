"""Snakemake entry point: list the pair caches with their status; write the table to results/cache_info.tsv."""

from meshsr.cache.inventory import format_table, inventory, write_tsv
from meshsr.jobs import job_logging

p = snakemake.params  # noqa: F821 (snakemake injects it)
with job_logging(snakemake.log[0]) as log:  # noqa: F821
    pairs = {pair: tuple(paths) for pair, paths in p.pairs.items()}
    rows = inventory(p.cache_dir, pairs, memo=p.memo, verify=p.verify)
    table = format_table(rows, p.cache_dir)
    try:
        write_tsv(p.info, rows)
        table += f"\nwrote {p.info}"
    except OSError as exc:  # the table is on the terminal anyway
        log.warning("could not write %s (%s); the table is printed only", p.info, exc.strerror or exc)
    log.info("%s", table)
    print(table, flush=True)
