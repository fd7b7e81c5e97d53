# Config validation and the small path helpers every rule file uses.
import os
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from meshsr.hashing import memoised_sha256

validate(config, schema="../config/config.schema.yaml")

# Scripts import the workflow's own package, also when it is not pip-installed.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (workflow.basedir, os.environ.get("PYTHONPATH")) if p
)

RESOLUTIONS = list(config["meshes"])
CACHE_DIR = config["cache_dir"].rstrip("/")
EXAMPLE_DIR = "results/example"
EXAMPLE_NODES = config.get("example", {}).get("nodes", {})
ENV = "../environment.yml"


wildcard_constraints:
    src="[A-Za-z0-9-]+",
    dst="[A-Za-z0-9-]+",
    res="[A-Za-z0-9-]+",


def example_path(res):
    return f"{EXAMPLE_DIR}/{res}.npz"


def is_example(path):
    return any(os.path.normpath(path) == os.path.normpath(example_path(r)) for r in EXAMPLE_NODES)


def mesh_input(res):
    if res not in config["meshes"]:
        raise WorkflowError(f"unknown resolution {res!r}; config 'meshes' has {RESOLUTIONS}")
    return config["meshes"][res]


def check_mesh_inputs():
    for res, path in config["meshes"].items():
        if not is_example(path) and not Path(path).is_file():
            raise WorkflowError(f"config 'meshes.{res}': input file {path} does not exist")


check_mesh_inputs()


def ordered_pairs():
    """Every (coarser, finer) pair in the order of config 'meshes'."""
    return [(a, b) for i, a in enumerate(RESOLUTIONS) for b in RESOLUTIONS[i + 1 :]]


def pair_cache(src, dst):
    return f"{CACHE_DIR}/{src}_{dst}.npz"


def all_pair_caches():
    return [pair_cache(s, d) for s, d in ordered_pairs()]


def check_pair(src, dst):
    if (src, dst) not in ordered_pairs():
        raise WorkflowError(
            f"no pair {src}_{dst}: pairs run coarser -> finer in the order of config 'meshes' "
            f"({' < '.join(RESOLUTIONS)})"
        )


def logs(name):
    return f"results/logs/{name}.log"


def benchmarks(name):
    return f"results/benchmarks/{name}.tsv"


# Input fingerprints of the cache rules (rules/cache.smk explains the mechanism).
HASH_MEMO = ".snakemake/meshsr/sha256-memo.json"


def input_fingerprint(res):
    """'<path> sha256:<digest>' of one resolution's input; placeholder while not generated yet.

    Snakemake re-evaluates params right before a job runs, so the recorded value is
    always the digest of the file the job read.
    """
    path = mesh_input(res)
    digest = memoised_sha256(path, HASH_MEMO) if os.path.exists(path) else "not-yet-built"
    return f"{path} sha256:{digest}"


def pair_fingerprint(wildcards):
    # One value with the roles: Snakemake compares params as a set of values, so two
    # separate params would miss a swap of the source and destination inputs.
    return f"source {input_fingerprint(wildcards.src)}; destination {input_fingerprint(wildcards.dst)}"


def cache_input(res):
    path = mesh_input(res)
    return path if is_example(path) else ancient(path)


def cache_inputs(wildcards):
    check_pair(wildcards.src, wildcards.dst)
    return {"src": cache_input(wildcards.src), "dst": cache_input(wildcards.dst)}
