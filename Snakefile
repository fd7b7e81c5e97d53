# meshsr: cache coarse->fine mesh interpolation once per resolution pair.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/example.smk"
include: "rules/cache.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/upsample.smk"


rule all:
    default_target: True
    input:
        all_pair_caches() if USE_CACHE else [],
        all_models(),
        all_evaluations(),
        all_upsamples,
