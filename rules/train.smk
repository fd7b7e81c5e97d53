# Train one residual super-resolution model per pair in config 'train.pairs' (unset: the
# coarsest and the finest resolution of 'meshes').
#
# The settings are checked here, at parse time, so a bad pair or an empty training split
# fails before any job runs (the library checks them again). The job reads the pair cache
# (a normal input: a rebuilt cache retrains) and both mesh bundles, taken as cache.smk
# takes them (a user's file is ancient(); the cache's freshness check compares its
# digest). With use_cache: false it reads only the bundles and builds the same arrays in
# memory; their content fingerprints are then params, so changed content retrains.
from meshsr.errors import InputError
from meshsr.splits import make_splits, peek_shape
from meshsr.train_settings import TrainSettings, check_pairs


def _train_settings():
    try:
        settings = TrainSettings.from_config(config.get("train"))
        pairs = check_pairs(settings.pairs, RESOLUTIONS)
        for src, dst in pairs:
            shape = peek_shape(mesh_input(src), example_shape(src))
            if shape is not None:
                make_splits(*shape, settings.test_simulations, settings.validation_simulations)
    except InputError as exc:
        raise WorkflowError(str(exc)) from None
    return settings, pairs


def example_shape(res):
    """(S, T) of a generated example input, known before it exists; None for a user's file."""
    if not is_example(mesh_input(res)):
        return None
    example = config.get("example", {})
    return example.get("simulations", 6), example.get("frames", 48)


TRAIN, TRAIN_PAIRS = _train_settings()
USE_CACHE = config.get("use_cache", True)


def model_file(src, dst):
    return f"results/models/{src}_{dst}.pt"


def history_file(src, dst):
    return f"results/models/{src}_{dst}_history.csv"


def all_models():
    return [model_file(s, d) for s, d in TRAIN_PAIRS]


def train_inputs(wildcards):
    check_pair(wildcards.src, wildcards.dst)
    inputs = {"src": cache_input(wildcards.src), "dst": cache_input(wildcards.dst)}
    if USE_CACHE:
        inputs["cache"] = pair_cache(wildcards.src, wildcards.dst)
    return inputs


rule train_model:
    input:
        unpack(train_inputs),
    output:
        model=model_file("{src}", "{dst}"),
        history=history_file("{src}", "{dst}"),
    params:
        settings=TRAIN.to_dict(),
        resolutions=RESOLUTIONS,
        rebuild=lambda wc: f"snakemake --cores 1 {pair_cache(wc.src, wc.dst)}",
        inputs=lambda wc: "from the pair cache" if USE_CACHE else pair_fingerprint(wc),
    log:
        logs("train/{src}_{dst}"),
    benchmark:
        benchmarks("train/{src}_{dst}")
    threads: TRAIN.threads
    resources:
        mem_mb=lambda wc, input: 2000 + int(12 * input.size_mb),
    conda:
        ENV
    script:
        "../scripts/train.py"
