# The example data set: one advection-diffusion run per resolution, meshed independently.


rule example_data:
    output:
        f"{EXAMPLE_DIR}/{{res}}.npz",
    params:
        # One definition (example_params in common.smk): the cache keys identify a generated input by it.
        n_nodes=lambda wc: example_params(wc.res)["n_nodes"],
        mesh_seed=lambda wc: example_params(wc.res)["mesh_seed"],
        simulations=lambda wc: example_params(wc.res)["simulations"],
        frames=lambda wc: example_params(wc.res)["frames"],
        seed=lambda wc: example_params(wc.res)["seed"],
        dim=lambda wc: example_params(wc.res)["dim"],
        code=code_of("example_data"),
    wildcard_constraints:
        res="|".join(EXAMPLE_NODES) or "(?!)",
    log:
        logs("example/{res}"),
    benchmark:
        benchmarks("example/{res}")
    threads: 1
    resources:
        mem_mb=lambda wc: 1000 + EXAMPLE_NODES[wc.res] // 10,
    conda:
        ENV
    script:
        "../scripts/example_data.py"
