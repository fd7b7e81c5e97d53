# Train one residual super-resolution model per pair in config 'train.pairs' (unset: the
# coarsest and the finest resolution of 'meshes').
#
# The settings are checked when a training target is planned (rules/common.smk: train_pairs,
# check_training), so a bad pair or a split the data cannot give fails before any job runs, and
# never when only caches are asked for (the job checks the split again). The params carry only what the
# model depends on (TRAIN.fit, meshsr/learn/settings.py, `precision` included): changing it retrains.
# `device`, `threads` and `processes` are run-time resources, never provenance (processes > 1: the
# script trains in that many DDP ranks under torchrun, each computing its share of the same batches,
# so the model is the same up to rounding; memory scales with processes);
# `panel_frame` belongs to the plot rule and
# `pairs` to the workflow, so neither retrains an existing model. The job that reads the pair
# (training_batches for the mlp, train_model itself for the gnn) reads the pair cache
# (a normal input: a rebuilt cache retrains) and both mesh bundles, taken as cache.smk
# takes them (a user's file is ancient(); the cache's freshness check compares its
# digest). With use_cache: false it reads only the bundles and builds the same arrays in
# memory; their content fingerprints are then params, so changed content retrains.
# No param holds a path (the digest memo and the rebuild command quoted in refusals are
# the script's own): the outputs do not depend on where the files are.
#
# The mlp trains from batches that training_batches writes first, in the order training draws
# them (meshsr/learn/batch_stream.py), so the train job itself only reads: the same model as
# assembling them on the fly, and a GPU job that does not wait on the CPU. Their params are the
# train settings that decide which rows make which batch (sampling); a change of the learning
# rate, width or precision retrains from the same batches. They are temp(): about
# epochs * steps_per_epoch * batch_size * (K + 2F) * 4 bytes (2.3 GB for the defaults), removed
# once the model is written (--notemp keeps them). The gnn trains from the pair's data directly.
rule training_batches:
    input:
        unpack(pair_inputs),
    output:
        rows=temp(batch_files("{src}", "{dst}")["rows"]),
        side=temp(batch_files("{src}", "{dst}")["side"]),
    params:
        sampling=sampling_settings(TRAIN.fit.to_dict()),
        input_digests=lambda wc: "from the pair cache" if USE_CACHE else pair_fingerprint(wc),
        code=code_of("training_batches"),
    log:
        logs("batches/{src}_{dst}"),
    benchmark:
        benchmarks("batches/{src}_{dst}")
    threads: TRAIN.run.threads
    resources:
        mem_mb=lambda wc, input: 2000 + int(12 * input.size_mb),
    conda:
        ENV
    script:
        "../scripts/training_batches.py"


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
        mem_mb=lambda wc, input: TRAIN.run.processes * train_mem_mb(input),
        device=TRAIN.run.device,
        processes=TRAIN.run.processes,
        gpu=gpus(TRAIN.run.processes),
    conda:
        ENV
    script:
        "../scripts/train.py"
