# Config validation and the small path helpers every rule file uses.
import os
from pathlib import Path

from snakemake.exceptions import WorkflowError

from meshsr.cache.freshness import rebuild_command
from meshsr.config import check_config, load_schema
from meshsr.errors import InputError
from meshsr.provenance.code import output_fingerprint
from meshsr.provenance.digests import memoised_sha256
from meshsr.provenance.rerun import RUN_OPTIONS, run_options
from meshsr.learn.splits import splits_for
from meshsr.mesh.bundle import peek_shape
from meshsr.mesh.sources import entry_files, is_bundle_entry
from meshsr.learn.settings import TrainSettings, check_pairs, sampling_settings
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

# The command line's --configfile files and --config words, repeated by every command that an
# error message quotes (meshsr/provenance/rerun.py); the jobs inherit them with the environment.
os.environ[RUN_OPTIONS] = run_options(workflow.overwrite_configfiles, workflow.config_settings.config_args)

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


INPUTS_DIR = "results/inputs"


def ingested_bundle(name):
    """The canonical bundle that rule ingest_mesh writes from a meshio entry (rules/ingest.smk)."""
    return f"{INPUTS_DIR}/{name}.npz"


def bundle_for(name, entry):
    """The .npz to read for a `meshes`-style entry: an .npz path itself, anything else its ingested bundle.

    ``name`` is a resolution of 'meshes', or upsample-{run} for the entry upsample.{run}.input.
    """
    return entry if is_bundle_entry(entry) else ingested_bundle(name)


def is_ingested(path):
    return os.path.normpath(os.path.dirname(path)) == os.path.normpath(INPUTS_DIR)


def ingest_entry(name):
    """The meshio entry behind ingested_bundle(name): meshes.{name}, or upsample.{run}.input for upsample-{run}."""
    entry = config["meshes"].get(name)
    if entry is None and name.startswith("upsample-"):
        entry = ((config.get("upsample") or {}).get(name.removeprefix("upsample-")) or {}).get("input")
    if entry is None or is_bundle_entry(entry):
        raise config_error(f"{ingested_bundle(name)}: no meshio entry {name!r} in config 'meshes' or 'upsample'")
    return entry


def ingest_sources(name):
    """The files ingesting entry ``name`` reads (a glob: the files it matches now)."""
    try:
        return entry_files(ingest_entry(name))
    except InputError as exc:
        raise config_error(exc) from None


def mesh_input(res):
    if res not in config["meshes"]:
        raise config_error(f"config key 'meshes': no resolution {res!r}; use one of {', '.join(RESOLUTIONS)}")
    return bundle_for(res, config["meshes"][res])


def entry_problem(key, entry):
    """Why the files of a `meshes`-style entry cannot be read now (None: they are there)."""
    if is_bundle_entry(entry):
        if is_example(entry) or Path(entry).is_file():
            return None
        return f"config key '{key}': input file {entry} does not exist; correct the path or put the file there"
    try:
        entry_files(entry)
    except InputError as exc:
        return f"config key '{key}': {exc}"
    return None


def missing_mesh_inputs():
    problems = [entry_problem(f"meshes.{res}", entry) for res, entry in config["meshes"].items()]
    return [problem for problem in problems if problem]


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


# Input fingerprints and cache keys of the cache rules (rules/cache.smk explains the mechanism).
import sys
import time

from meshsr.atomic import free_bytes, size_text
from meshsr.cache.keys import CURRENT, FOREIGN, cache_key, estimated_cache_bytes, example_identity, file_identity
from meshsr.cache.keys import foreign_problem, key_status, read_meta
from meshsr.provenance.digests import WORKFLOW_MEMO

HASH_MEMO = WORKFLOW_MEMO
KEY_DIR = "results/.cache-keys"
CACHE_DIR_REMEDY = "set cache_dir elsewhere (--config cache_dir=DIR)"


def input_digest(res):
    """'sha256:<digest>' of one resolution's input; a placeholder while a generated one does not exist yet.

    Snakemake re-evaluates params right before a job runs, so the recorded value is
    always the digest of the file the job read.
    """
    path = mesh_input(res)
    return file_identity(memoised_sha256(path, HASH_MEMO)) if os.path.exists(path) else "not-yet-built"


def pair_fingerprint(wildcards):
    # One value with the roles: Snakemake compares params as a set of values, so two
    # separate params would miss a swap of the source and destination inputs. No paths:
    # the outputs depend on the inputs' bytes, not on where they are.
    return f"source {input_digest(wildcards.src)}; destination {input_digest(wildcards.dst)}"


def example_params(name):
    """The params of the example_data job that writes results/example/{name}.npz (rules/example.smk)."""
    return {
        "n_nodes": EXAMPLE_NODES[name],
        "mesh_seed": 1000 + list(EXAMPLE_NODES).index(name),
        "simulations": EXAMPLE.n_simulations,
        "frames": EXAMPLE.n_frames,
        "seed": EXAMPLE.params_seed,
        "dim": EXAMPLE.dim,
        "code": code_of("example_data"),
    }


def input_identity(res):
    """What a cache key knows of one input (meshsr/cache/keys.py): its digest, or how it is generated."""
    path = mesh_input(res)
    if is_example(path):
        return example_identity(example_params(Path(path).stem))
    if is_ingested(path) and not os.path.exists(path):
        return "not-yet-ingested"  # ingest_mesh is a checkpoint: its dependents are planned again once it ran
    return file_identity(memoised_sha256(path, HASH_MEMO))


def pair_key(wildcards):
    return cache_key(input_identity(wildcards.src), input_identity(wildcards.dst), code_of("pair_cache"))


def key_marker(src, dst, key):
    return f"{KEY_DIR}/{src}_{dst}.{key}"


def cache_input(res):
    path = mesh_input(res)
    return path if is_example(path) else ancient(path)


def stop_planning(problem):
    """End the run while Snakemake plans it, with one line on stderr: 'ERROR <problem>'.

    A WorkflowError raised in an input function comes with Snakemake's frame (rule, file,
    wildcards, traceback); nothing has been locked or written yet, so a plain exit is safe.
    """
    print(f"ERROR {problem}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def cache_forced(path):
    """Whether this run was told to rebuild the cache at ``path``: --force on it, --forcerun pair_cache, --forceall."""
    dag = getattr(workflow, "dag_settings", None)
    if dag is None:
        return False
    if dag.forceall or "pair_cache" in dag.forcerun:
        return True
    return dag.forcetargets and any(os.path.abspath(t) == os.path.abspath(path) for t in dag.targets)


def set_marker(marker, mtime):
    """Make ``marker`` the pair's only marker, with modification time ``mtime``."""
    try:
        os.makedirs(KEY_DIR, exist_ok=True)
        pair = Path(marker).name.rsplit(".", 1)[0]
        for old in Path(KEY_DIR).glob(f"{pair}.*"):
            if old.name != Path(marker).name:
                old.unlink()
        Path(marker).touch()
        os.utime(marker, (mtime, mtime))
    except OSError as exc:
        stop_planning(f"{marker}: cannot write the cache key marker ({exc.strerror}); make {KEY_DIR} writable")


PLANNED_BYTES = {}  # cache path -> bytes its (re)build in this run needs


def check_cache_dir(path, dst):
    """The cache at ``path`` is to be (re)built: refuse now, in one line, a cache_dir that cannot take it.

    Snakemake itself would fail later, with tracebacks: a missing output in a read-only
    directory cannot be "removed" before the job, and a full disk fails the write.
    """
    directory = Path(os.path.abspath(CACHE_DIR))
    existing = next(p for p in (directory, *directory.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        stop_planning(
            f"{CACHE_DIR}: cache directory is not writable (read-only file system or no permission) and the "
            f"pair cache {Path(path).stem} must be built; make it writable or {CACHE_DIR_REMEDY}"
        )
    needed = estimated_cache_bytes(mesh_input(dst))
    if needed is None:
        return  # a generated input not made yet; the job checks the space again before writing
    PLANNED_BYTES[path] = max(0, needed - (os.path.getsize(path) if os.path.exists(path) else 0))
    total, free = sum(PLANNED_BYTES.values()), free_bytes(existing)
    if free is not None and total > free:
        pairs = ", ".join(Path(p).stem for p in PLANNED_BYTES)
        stop_planning(
            f"{CACHE_DIR}: not enough space for the pair caches to build ({pairs}: about {size_text(total)} "
            f"needed, {size_text(free)} free); free space or {CACHE_DIR_REMEDY}"
        )


def update_marker(src, dst, key, marker):
    """Keep the pair's key marker in step with its cache, before Snakemake decides; stop on a foreign cache.

    A cache of the current key (built here or by another working directory, or whose marker
    was lost) gets a marker older than itself: Snakemake keeps it. A missing cache, a cache
    of another key or a forced rebuild gets a marker newer than the cache: Snakemake rebuilds
    it by its mtime rule. A cache that another working directory, still there, wrote at this
    very path from other inputs stops the run: it is neither used nor rebuilt over.
    """
    path = pair_cache(src, dst)
    if not os.path.exists(path):
        if not os.path.exists(marker):
            set_marker(marker, time.time())
        return check_cache_dir(path, dst)
    built = os.path.getmtime(path)
    marked = os.path.getmtime(marker) if os.path.exists(marker) else None
    meta = read_meta(path)
    status = key_status(meta, key, path)
    forced = cache_forced(path)
    if status == FOREIGN and not forced:
        stop_planning(f"{path}: {foreign_problem(meta, key, CACHE_DIR, rebuild_command(path, CACHE_DIR))}")
    if status == CURRENT and not forced:
        if marked is None or marked > built:
            set_marker(marker, built - 1)
        return
    if marked is None or marked <= built:
        set_marker(marker, max(time.time(), built + 1))
    check_cache_dir(path, dst)


def cache_inputs(wildcards):
    check_pair(wildcards.src, wildcards.dst)
    key = pair_key(wildcards)
    marker = key_marker(wildcards.src, wildcards.dst, key)
    update_marker(wildcards.src, wildcards.dst, key, marker)
    # The marker is always an input: one that came and went would trip Snakemake's input trigger.
    return {"src": cache_input(wildcards.src), "dst": cache_input(wildcards.dst), "key": marker}


# Training settings: read at parse time, checked against the data only when a training,
# evaluation or plot job is planned (all_models, train_inputs), so that caches, cache_info
# and cache_verify never depend on them.
def example_shape(res):
    """(S, T) of a generated example input, known before it exists; None for a user's file."""
    if not is_example(mesh_input(res)):
        return None
    return EXAMPLE.n_simulations, EXAMPLE.n_frames


def check_training(pairs):
    """Stop planning, in one line, when the training settings cannot work for a pair's data (S, T)."""
    for src, dst in pairs:
        shape = peek_shape(mesh_input(src), example_shape(src))
        try:
            if shape is not None:
                splits_for(TRAIN.fit, *shape)
        except InputError as exc:
            stop_planning(f"{exc} (pair {src}_{dst}: S = {shape[0]}, T = {shape[1]})")


def train_pairs():
    """The pairs of config 'train.pairs' (default: coarsest -> finest), checked; stops planning on a bad one."""
    try:
        pairs = check_pairs(TRAIN.pairs, RESOLUTIONS)
    except InputError as exc:
        stop_planning(str(exc))
    check_training(pairs)
    return pairs


try:
    TRAIN = TrainSettings.from_config(config.get("train"))
except InputError as exc:
    raise config_error(exc) from None
USE_CACHE = config["use_cache"]  # the schema's default fills it in


def gpus(processes=1):
    """GPUs a training or evaluation job asks a cluster for (resource `gpu`): one per process with train.device cuda.

    profiles/slurm turns it into `sbatch --gpus=N`; `auto` asks for none (it uses a GPU where there is one).
    """
    return processes if TRAIN.run.device == "cuda" else 0


def model_file(src, dst):
    return f"results/models/{src}_{dst}.pt"


def history_file(src, dst):
    return f"results/models/{src}_{dst}_history.csv"


def all_models(wildcards=None):
    return [model_file(s, d) for s, d in train_pairs()]


def pair_inputs(wildcards):
    """What a job that reads a pair's data takes: both mesh inputs and, with use_cache, the pair cache."""
    check_pair(wildcards.src, wildcards.dst)
    check_training([(wildcards.src, wildcards.dst)])
    inputs = {"src": cache_input(wildcards.src), "dst": cache_input(wildcards.dst)}
    if USE_CACHE:
        inputs["cache"] = pair_cache(wildcards.src, wildcards.dst)
    return inputs


def batch_files(src, dst):
    """The training_batches job's outputs (rules/train.smk): the batches and their side file."""
    return {"rows": f"results/batches/{src}_{dst}.npy", "side": f"results/batches/{src}_{dst}.npz"}


def train_mem_mb(input):
    """Memory of one training process: the pair's data, or (mlp) the side file; batches come a group at a time."""
    if TRAIN.fit.model == "mlp":
        return 2000 + int(2 * os.path.getsize(input.side) / 2**20) if os.path.exists(input.side) else 2000
    return 2000 + int(12 * input.size_mb)


def train_inputs(wildcards):
    """The mlp trains from its written batches (rules/train.smk), the gnn from the pair's data."""
    if TRAIN.fit.model == "mlp":
        check_pair(wildcards.src, wildcards.dst)
        check_training([(wildcards.src, wildcards.dst)])
        return batch_files(wildcards.src, wildcards.dst)
    return pair_inputs(wildcards)


def metrics_file(src, dst, ext="csv"):
    return f"results/metrics/{src}_{dst}.{ext}"


def plot_file(src, dst, name):
    return f"results/plots/{src}_{dst}_{name}.png"


def all_evaluations(wildcards=None):
    pairs = train_pairs()
    return [metrics_file(s, d) for s, d in pairs] + [
        plot_file(s, d, name) for s, d in pairs for name in ("loss", "panel", "error_time")
    ]


def evaluate_inputs(wildcards):
    return {"model": model_file(wildcards.src, wildcards.dst), **pair_inputs(wildcards)}


# New coarse runs to super-resolve (config 'upsample', rules/upsample.smk) and their paths.
from types import SimpleNamespace

UPSAMPLE = config.get("upsample") or {}
UPSAMPLED_DIR = "results/upsampled"


def upsampled_file(name, ext):
    return f"{UPSAMPLED_DIR}/{name}.{ext}"


def all_upsamples(wildcards=None):
    return [upsampled_file(name, ext) for name in UPSAMPLE for ext in ("xdmf", "npz")]


def upsample_entry(name):
    if name not in UPSAMPLE:
        known = ", ".join(UPSAMPLE) or "none"
        stop_planning(f"config key 'upsample': no run {name!r} (configured: {known}); add it to config 'upsample'")
    return UPSAMPLE[name]


def upsample_pair(name):
    """(source, target) of the run's pair; stops planning on a pair that is not one of config 'meshes'."""
    src, dst = upsample_entry(name)["pair"]
    if (src, dst) not in ordered_pairs():
        stop_planning(
            f"config key 'upsample.{name}.pair': no pair [{src}, {dst}]; name two resolutions of config "
            f"'meshes', coarser first ({' < '.join(RESOLUTIONS)})"
        )
    return src, dst


def upsample_run(name):
    """The bundle the job reads: the input itself (.npz), or what ingest_mesh makes of it (upsample-{name})."""
    entry = upsample_entry(name)["input"]
    problem = entry_problem(f"upsample.{name}.input", entry)
    if problem:
        stop_planning(problem)
    return bundle_for(f"upsample-{name}", entry)


def upsample_inputs(wildcards):
    src, dst = upsample_pair(wildcards.name)
    run = upsample_run(wildcards.name)
    inputs = {
        "run": run if is_example(run) else ancient(run),
        "model": model_file(src, dst),
        "src": cache_input(src),
        "dst": cache_input(dst),
    }
    if USE_CACHE:
        inputs["cache"] = pair_cache(src, dst)
    return inputs


def upsample_digests(wildcards):
    """Content of the run, and of the pair's inputs when no cache (a normal input) stands for them."""
    run = upsample_run(wildcards.name)
    digest = file_identity(memoised_sha256(run, HASH_MEMO)) if os.path.exists(run) else "not-yet-built"
    src, dst = upsample_pair(wildcards.name)
    pair = "from the pair cache" if USE_CACHE else pair_fingerprint(SimpleNamespace(src=src, dst=dst))
    return f"run {digest}; pair {pair}"
