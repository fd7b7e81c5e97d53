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
from types import SimpleNamespace

UPSAMPLE = config.get("upsample") or {}
UPSAMPLED_DIR = "results/upsampled"


wildcard_constraints:
    name="[A-Za-z0-9-]+",


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


rule upsample:
    input:
        unpack(upsample_inputs),
    output:
        xdmf=upsampled_file("{name}", "xdmf"),
        h5=upsampled_file("{name}", "h5"),
        npz=upsampled_file("{name}", "npz"),
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
