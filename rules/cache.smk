# One interpolation cache per ordered resolution pair, plus the cache management targets:
#   snakemake --cores 8 caches         build every pair cache and nothing else
#   snakemake --cores 1 cache_info     table of the cache files, also written to results/cache_info.tsv
#   snakemake --cores 1 cache_verify   the same, and every cache's arrays checked against their digest
# (docs/caching.md: why it works this way, clearing the caches, troubleshooting.)
#
# Invalidation. A user's mesh input is ancient(): its mtime never triggers a rebuild, so a
# `touch` plans nothing, whatever the file size. What a cache belongs to is its key
# (meshsr/cache/keys.py): the sha256 of its inputs' digests (memoised by stat in HASH_MEMO,
# so an unchanged input is never rehashed; a generated example input counts by its
# settings and code) and of the cache code fingerprint. The cache records its key in its
# meta and depends on an empty marker file named by the key,
# results/.cache-keys/{src}_{dst}.{key}, which the input function keeps in step with the
# cache before Snakemake decides (common.smk, update_marker): older than a cache of the
# current key, newer than a cache of another key. So Snakemake's mtime rule rebuilds exactly
# the caches whose key changed, with or without its own records (.snakemake/ deleted,
# another working directory, `cp -p` with an old mtime); where records exist, the params
# (digests, key, code) and the set of inputs change at the same time: one rebuild. A cache
# of the current key that another working directory built is used as it is; one that
# another working directory (still there) built at this path from other inputs stops the
# run with one line, as does a cache_dir that cannot take a cache to build (read-only, full).
#
# The generated example data are workflow outputs and stay plain (not ancient) inputs:
# Snakemake skips the jobs below an ancient input when the job above it reruns, which
# would leave the caches of a regenerated example stale for one run.
#
# Code. Snakemake's code trigger sees only scripts/pair_cache.py; the code that makes a
# cache is the meshsr package. The `code` param (and the key) holds the fingerprint of the
# import closure of meshsr.cache.build (operator, point location, geometry, bundle reader,
# cache format, ...; comments and docstrings do not count), so an edit of that code
# rebuilds every cache and an edit elsewhere (training, plots) none. Readers (training,
# evaluation, cache_info) refuse a cache of other inputs, other cache code or another
# format_version as stale, with the command that rebuilds it.
#
# Between experiments. With `export SNAKEMAKE_OUTPUT_CACHE=/shared/store` and `--cache`,
# Snakemake keeps each cache in that store under the provenance hash of this job: the
# script, the params (the input digests, the key, the code fingerprint: no paths, so two
# working directories with the same inputs get the same hash), the bytes of the raw inputs
# and the hashes of the jobs above (a generated example). A job whose hash is in the store
# does not run: its output becomes a link to the entry; a new hash builds and stores a new
# entry. "omit-software": the conda environment does not count (the code fingerprint does).
# Snakemake refuses a benchmark: file on a cacheable rule (a fetched job has no run time),
# so this rule has none; the timestamps in its log say how long a build took.
rule pair_cache:
    input:
        unpack(cache_inputs),
    output:
        pair_cache("{src}", "{dst}"),
    params:
        input_digests=pair_fingerprint,
        key=pair_key,
        code=code_of("pair_cache"),
    log:
        logs("cache/{src}_{dst}"),
    cache: "omit-software"
    threads: 1
    resources:
        mem_mb=lambda wc, input: 1000 + int(6 * input.size_mb),
    conda:
        ENV
    script:
        "../scripts/pair_cache.py"


# Precompute: every pair cache and nothing else. Clear only the caches with
#   snakemake --cores 1 caches --delete-all-output --allowed-rules pair_cache
# On a cluster (profiles/slurm) these three run where Snakemake runs: the table is for the
# terminal, and none of them is worth a queued job.
localrules:
    caches,
    cache_info,
    cache_verify,


rule caches:
    input:
        all_pair_caches(),


# No input and no output: Snakemake runs it every time it is asked for, and it never
# triggers a build. It reads each file with allow_pickle=False and checks the recorded
# code fingerprint and input digests against the running code and the current inputs
# (memoised, so large inputs are not rehashed). It writes nothing in cache_dir (which may
# be read-only or missing): its table goes to the terminal and to results/cache_info.tsv.
rule cache_info:
    params:
        cache_dir=CACHE_DIR,
        info="results/cache_info.tsv",
        pairs={f"{s}_{d}": [mesh_input(s), mesh_input(d)] for s, d in ordered_pairs()},
        memo=HASH_MEMO,
        verify=False,
    log:
        logs("cache/info"),
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        ENV
    script:
        "../scripts/cache_info.py"


# cache_info, and each cache's arrays read in full and checked against the data digest
# recorded when it was built (a cache rewritten with other numbers is `corrupt`). Readers
# never do this: it costs one read of every cache file.
rule cache_verify:
    params:
        cache_dir=CACHE_DIR,
        info="results/cache_info.tsv",
        pairs={f"{s}_{d}": [mesh_input(s), mesh_input(d)] for s, d in ordered_pairs()},
        memo=HASH_MEMO,
        verify=True,
    log:
        logs("cache/verify"),
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        ENV
    script:
        "../scripts/cache_info.py"
