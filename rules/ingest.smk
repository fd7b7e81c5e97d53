# Users' simulations in meshio formats (config 'meshes' entries that are not .npz bundles, and
# 'upsample' inputs): each becomes one canonical bundle results/inputs/{name}.npz (contract 1),
# validated as an .npz input is; everything downstream reads that bundle (bundle_for in
# common.smk). {name} is a resolution of 'meshes', or upsample-{run} for upsample.{run}.input.
#
# The job's inputs are the files it reads (an XDMF file and the .h5 files it names, a .pvd
# and its frame files, the files a glob matched when the workflow was parsed), so it reruns
# when one of them is newer than the bundle, when the entry (paths, fields) or the ingestion
# code changes. The bundle is written byte for byte the same for the same arrays, and the
# pair caches are keyed on its content, not its mtime: it is an ancient() input of theirs, and
# this rule is a checkpoint, so that Snakemake re-plans the jobs below it after it ran. A rerun
# that writes the same bundle rebuilds nothing; one that writes another rebuilds the caches of
# that resolution in the same run (rules/cache.smk: keys and markers).
# Only a workflow with meshio inputs has this checkpoint: Snakemake ignores --allowed-rules when
# a workflow has a checkpoint, and "clear only the caches" (README) relies on it.
INPUT_ENTRIES = [e for e in [*config["meshes"].values(), *(u.get("input") for u in UPSAMPLE.values())] if e]
if not all(is_bundle_entry(e) for e in INPUT_ENTRIES):

    checkpoint ingest_mesh:
        input:
            lambda wc: ingest_sources(wc.name),
        output:
            ingested_bundle("{name}"),
        params:
            entry=lambda wc: ingest_entry(wc.name),
            code=code_of("ingest_mesh"),
        wildcard_constraints:
            name="[A-Za-z0-9-]+",
        log:
            logs("inputs/{name}"),
        benchmark:
            benchmarks("inputs/{name}")
        threads: 1
        resources:
            mem_mb=lambda wc, input: 1000 + int(4 * input.size_mb),
        conda:
            ENV
        script:
            "../scripts/ingest_mesh.py"
