"""Snakemake entry point: list the pair caches with their status, write {cache_dir}/info.tsv."""

from meshsr.cache.inventory import format_table, inventory, write_tsv
from meshsr.jobs import job_logging

p = snakemake.params  # noqa: F821 (snakemake injects it)
with job_logging(snakemake.log[0]) as log:  # noqa: F821
    rows = inventory(p.cache_dir, {pair: tuple(paths) for pair, paths in p.pairs.items()}, memo=p.memo)
    write_tsv(p.info, rows)
    table = format_table(rows, p.cache_dir)
    log.info("%s\nwrote %s", table, p.info)
    print(table, f"\nwrote {p.info}", sep="\n", flush=True)
