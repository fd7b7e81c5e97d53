# Train one residual super-resolution model per pair in config 'train.pairs' (unset: the
# coarsest and the finest resolution of 'meshes').
#
# The settings are checked when a training target is planned (rules/common.smk: train_pairs,
# check_training), so a bad pair or a split the data cannot give fails before any job runs, and
# never when only caches are asked for (the job checks the split again). The params carry only what the
# model depends on (TRAIN.fit, meshsr/learn/settings.py, `precision` included): changing it retrains.
# `device`, `threads` and `processes` are run-time resources, never provenance (processes > 1: the
# script trains in that many DDP ranks under torchrun, each computing its share of the same batches,
# so the model is the same up to rounding; each rank holds the data: memory scales with processes);
# `panel_frame` belongs to the plot rule and
# `pairs` to the workflow, so neither retrains an existing model. The job reads the pair cache
# (a normal input: a rebuilt cache retrains) and both mesh bundles, taken as cache.smk
# takes them (a user's file is ancient(); the cache's freshness check compares its
# digest). With use_cache: false it reads only the bundles and builds the same arrays in
# memory; their content fingerprints are then params, so changed content retrains.
# No param holds a path (the digest memo and the rebuild command quoted in refusals are
# the script's own): the outputs do not depend on where the files are.
rule train_model:
    input:
        unpack(train_inputs),
    output:
        model=model_file("{src}", "{dst}"),
        history=history_file("{src}", "{dst}"),
    params:
        fit=TRAIN.fit.to_dict(),
        input_digests=lambda wc: "from the pair cache" if USE_CACHE else pair_fingerprint(wc),
        code=code_of("train_model"),
    log:
        logs("train/{src}_{dst}"),
    benchmark:
        benchmarks("train/{src}_{dst}")
    threads: TRAIN.run.threads
    resources:
        mem_mb=lambda wc, input: TRAIN.run.processes * (2000 + int(12 * input.size_mb)),
        device=TRAIN.run.device,
        processes=TRAIN.run.processes,
        gpu=gpus(TRAIN.run.processes),
    conda:
        ENV
    script:
        "../scripts/train.py"
