# One interpolation cache per ordered resolution pair, plus the cache management targets:
#   snakemake --cores 8 caches       build every pair cache and nothing else
#   snakemake --cores 1 cache_info   table of the cache files, also written to {cache_dir}/info.tsv
# (docs/caching.md: why it works this way, clearing the caches, troubleshooting.)
#
# Invalidation. A user's mesh input is ancient(): its mtime never triggers a rebuild, so
# a `touch` plans nothing, whatever the file size (Snakemake's own checksums stop at 1 MB).
# Instead the inputs' sha256 digests are the job's params, memoised by stat in HASH_MEMO
# so that an unchanged input is never rehashed, and Snakemake's params trigger reruns
# exactly the pairs whose input content changed, whatever the mtimes say (`cp -p`).
# The generated example data are workflow outputs and stay plain (not ancient) inputs:
# Snakemake skips the jobs below an ancient input when the job above it reruns, which
# would leave the caches of a regenerated example stale for one run.
#
# Code. Snakemake's code trigger sees only scripts/pair_cache.py; the code that makes a
# cache is the meshsr package. The `code` param is the fingerprint of the import closure
# of meshsr.cache.build (operator, point location, geometry, bundle reader, cache format,
# ...; comments and docstrings do not count), so an edit of that code rebuilds every cache
# and an edit elsewhere (training, plots) none. The cache records the same fingerprint in
# its meta; readers (training, evaluation, cache_info) refuse a cache of other cache code
# or of another format_version as stale, with the command that rebuilds it.
rule pair_cache:
    input:
        unpack(cache_inputs),
    output:
        pair_cache("{src}", "{dst}"),
    params:
        input_digests=pair_fingerprint,
        code=code_of("pair_cache"),
    log:
        logs("cache/{src}_{dst}"),
    benchmark:
        benchmarks("cache/{src}_{dst}")
    threads: 1
    resources:
        mem_mb=lambda wc, input: 1000 + int(6 * input.size_mb),
    conda:
        ENV
    script:
        "../scripts/pair_cache.py"


# Precompute: every pair cache and nothing else. Clear only the caches with
#   snakemake --cores 1 caches --delete-all-output --allowed-rules pair_cache
localrules:
    caches,


rule caches:
    input:
        all_pair_caches(),


# No input and no output: Snakemake runs it every time it is asked for, and it never
# triggers a build. It reads each file with allow_pickle=False and checks the recorded
# code fingerprint and input digests against the running code and the current inputs
# (memoised, so large inputs are not rehashed).
rule cache_info:
    params:
        cache_dir=CACHE_DIR,
        info=f"{CACHE_DIR}/info.tsv",
        pairs={f"{s}_{d}": [mesh_input(s), mesh_input(d)] for s, d in ordered_pairs()},
        memo=HASH_MEMO,
    log:
        logs("cache/info"),
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        ENV
    script:
        "../scripts/cache_info.py"
