# The example data set: one advection-diffusion run per resolution, meshed independently.


rule example_data:
    output:
        f"{EXAMPLE_DIR}/{{res}}.npz",
    params:
        n_nodes=lambda wc: EXAMPLE_NODES[wc.res],
        mesh_seed=lambda wc: 1000 + list(EXAMPLE_NODES).index(wc.res),
        simulations=EXAMPLE.n_simulations,
        frames=EXAMPLE.n_frames,
        seed=EXAMPLE.params_seed,
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
