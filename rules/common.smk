# Config validation and the small path helpers every rule file uses.
import os
from pathlib import Path

from snakemake.exceptions import WorkflowError

from meshsr.cache.freshness import rebuild_command
from meshsr.config import check_config, load_schema
from meshsr.errors import InputError
from meshsr.provenance.code import output_fingerprint
from meshsr.provenance.digests import memoised_sha256
from meshsr.learn.splits import make_splits
from meshsr.mesh.bundle import peek_shape
from meshsr.learn.settings import TrainSettings, check_pairs
from meshsr.example.settings import ExampleSettings


def config_error(*problems):
    """Bad configuration or input as Snakemake prints it: one 'ERROR <key or file>: <problem>; <what to do>' line each.

    Raised at the top level of this file, Snakemake frames it with two short lines only (the
    file and line); raised inside a function, it adds one line per function.
    """
    return WorkflowError("\n".join(f"ERROR {problem}" for problem in problems))


# One line per problem, unknown keys refused at every level; fills in the schema's defaults.
CONFIG_PROBLEMS = check_config(config, load_schema(Path(workflow.basedir) / "config" / "config.schema.yaml"))
if CONFIG_PROBLEMS:
    raise config_error(*CONFIG_PROBLEMS)

RESOLUTIONS = list(config["meshes"])
CACHE_DIR = config["cache_dir"].rstrip("/")
EXAMPLE_DIR = "results/example"
EXAMPLE_NODES = config.get("example", {}).get("nodes", {})
EXAMPLE = ExampleSettings.from_config(config.get("example"))  # defaults: meshsr/example/settings.py
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
        raise config_error(f"config key 'meshes': no resolution {res!r}; use one of {', '.join(RESOLUTIONS)}")
    return config["meshes"][res]


def missing_mesh_inputs():
    return [
        f"config key 'meshes.{res}': input file {path} does not exist; correct the path or put the file there"
        for res, path in config["meshes"].items()
        if not is_example(path) and not Path(path).is_file()
    ]


if missing_mesh_inputs():
    raise config_error(*missing_mesh_inputs())


def ordered_pairs():
    """Every (coarser, finer) pair in the order of config 'meshes'."""
    return [(a, b) for i, a in enumerate(RESOLUTIONS) for b in RESOLUTIONS[i + 1 :]]


def pair_cache(src, dst):
    return f"{CACHE_DIR}/{src}_{dst}.npz"


def all_pair_caches():
    return [pair_cache(s, d) for s, d in ordered_pairs()]


def check_pair(src, dst):
    if (src, dst) not in ordered_pairs():
        todo = f"ask for {dst}_{src}" if (dst, src) in ordered_pairs() else "pair two names of config 'meshes'"
        raise config_error(
            f"no pair {src}_{dst}: pairs run coarser -> finer in the order of config 'meshes' "
            f"({' < '.join(RESOLUTIONS)}); {todo}"
        )


def logs(name):
    return f"results/logs/{name}.log"


def benchmarks(name):
    return f"results/benchmarks/{name}.tsv"


# Code fingerprints: every rule that writes outputs has `code=code_of("<rule>")` in its
# params, so Snakemake's params trigger reruns it when the library code behind its outputs
# changes (and only then: comments, docstrings and modules outside that code do not count).
# Which modules each rule's outputs depend on: meshsr.provenance.code.OUTPUT_CODE.
def code_of(name):
    try:
        return output_fingerprint(name)
    except (KeyError, ModuleNotFoundError) as exc:
        problem = f"no code fingerprint for the {name} rule ({exc})"
        raise config_error(f"{problem}; add its modules to meshsr.provenance.code.OUTPUT_CODE") from None


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


# Training settings (checked at parse time: bad pairs fail before any job) and paths.
def _train_settings():
    settings = TrainSettings.from_config(config.get("train"))
    pairs = check_pairs(settings.pairs, RESOLUTIONS)
    for src, dst in pairs:
        shape = peek_shape(mesh_input(src), example_shape(src))
        if shape is not None:
            make_splits(*shape, settings.fit.test_simulations, settings.fit.validation_simulations)
    return settings, pairs


def example_shape(res):
    """(S, T) of a generated example input, known before it exists; None for a user's file."""
    if not is_example(mesh_input(res)):
        return None
    return EXAMPLE.n_simulations, EXAMPLE.n_frames


try:
    TRAIN, TRAIN_PAIRS = _train_settings()
except InputError as exc:
    raise config_error(exc) from None
USE_CACHE = config["use_cache"]  # the schema's default fills it in


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


def metrics_file(src, dst, ext="csv"):
    return f"results/metrics/{src}_{dst}.{ext}"


def plot_file(src, dst, name):
    return f"results/plots/{src}_{dst}_{name}.png"


def all_evaluations():
    return [metrics_file(s, d) for s, d in TRAIN_PAIRS] + [
        plot_file(s, d, name) for s, d in TRAIN_PAIRS for name in ("loss", "panel", "error_time")
    ]


def evaluate_inputs(wildcards):
    return {"model": model_file(wildcards.src, wildcards.dst), **train_inputs(wildcards)}
