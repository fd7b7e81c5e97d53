# meshsr: cache coarse->fine mesh interpolation once per resolution pair.
from snakemake.utils import min_version

min_version("9.0")


# A user's --configfile is the whole configuration: the example's config/config.yaml is read
# only when none is given (Snakemake would otherwise merge the user's file over it, and the
# example's resolutions would leak in). --config key=value applies on top of either.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/ingest.smk"
include: "rules/example.smk"
include: "rules/cache.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/upsample.smk"


rule all:
    default_target: True
    input:
        all_pair_caches() if USE_CACHE else [],
        all_models,
        all_evaluations,
        all_upsamples,
