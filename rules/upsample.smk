# Super-resolve new coarse runs (config 'upsample'): each run is predicted on the finer mesh
# of its pair by the pair's trained model, next to plain interpolation, and written as an
# XDMF time series (its .h5 beside it) for ParaView and as a bundle (.npz, contract 1).
# An input in a meshio form is read as the bundle that ingest_mesh makes of it
# (results/inputs/upsample-{name}.npz, rules/ingest.smk).
#
# The job reads the model, the run, both meshes of the pair (points and cells; the run must
# lie on the source mesh) and, with use_cache, the pair cache for its operator only (the
# training arrays are never read); without it the operator is built in the job. A user's run
# (or its ingested bundle) is ancient() and its content digest is a param, as for the cache
# inputs: a changed run reruns, a touched one does not. `device` and `threads` are run-time resources.
rule upsample:
    input:
        unpack(upsample_inputs),
    output:
        xdmf=upsampled_file("{name}", "xdmf"),
        h5=upsampled_file("{name}", "h5"),
        npz=upsampled_file("{name}", "npz"),
    wildcard_constraints:
        name="[A-Za-z0-9-]+",
    params:
        pair=lambda wc: list(upsample_pair(wc.name)),
        simulation=lambda wc: upsample_entry(wc.name)["simulation"],
        input_digests=upsample_digests,
        code=code_of("upsample"),
    log:
        logs("upsample/{name}"),
    benchmark:
        benchmarks("upsample/{name}")
    threads: TRAIN.run.threads
    resources:
        mem_mb=lambda wc, input: 2000 + int(4 * input.size_mb),
        device=TRAIN.run.device,
    conda:
        ENV
    script:
        "../scripts/upsample.py"
