# Evaluate each trained pair against plain interpolation and plot it; the tables and
# figures are report() outputs of `snakemake --report report.html`.
#
# Evaluation reads the same data as training (cache or, with use_cache: false, the
# bundles); the plots read the target bundle for its points and cells, which the cache
# does not hold. Evaluation runs on its own `device` and `threads` (resources, never the
# device the model was trained on) and writes every frame of the panel simulation, so that
# `panel_frame`, the plot rule's param, only replots.


PAIR_CATEGORY = "{src} -> {dst}"


rule evaluate_model:
    input:
        unpack(evaluate_inputs),
    output:
        metrics=report(
            metrics_file("{src}", "{dst}"),
            caption="../report/metrics_csv.rst",
            category=PAIR_CATEGORY,
            subcategory="metrics",
        ),
        html=report(
            metrics_file("{src}", "{dst}", "html"),
            caption="../report/metrics_table.rst",
            category=PAIR_CATEGORY,
            subcategory="metrics",
        ),
        frames=metrics_file("{src}", "{dst}", "frames.csv"),
        panel=f"results/metrics/{{src}}_{{dst}}_panel.npz",
        headline=report(
            metrics_file("{src}", "{dst}", "headline.csv"),
            caption="../report/headline.rst",
            category=PAIR_CATEGORY,
            subcategory="metrics",
        ),
    params:
        input_digests=lambda wc: "from the pair cache" if USE_CACHE else pair_fingerprint(wc),
        code=code_of("evaluate_model"),
    log:
        logs("evaluate/{src}_{dst}"),
    benchmark:
        benchmarks("evaluate/{src}_{dst}")
    threads: TRAIN.run.threads
    resources:
        mem_mb=lambda wc, input: 2000 + int(4 * input.size_mb),
        device=TRAIN.run.device,
        gpu=gpus(),
    conda:
        ENV
    script:
        "../scripts/evaluate.py"


rule plot_model:
    input:
        history=history_file("{src}", "{dst}"),
        frames=metrics_file("{src}", "{dst}", "frames.csv"),
        panel=f"results/metrics/{{src}}_{{dst}}_panel.npz",
        dst=lambda wc: cache_input(wc.dst),
    output:
        loss=report(
            plot_file("{src}", "{dst}", "loss"),
            caption="../report/loss.rst",
            category=PAIR_CATEGORY,
            subcategory="training",
        ),
        panel=report(
            plot_file("{src}", "{dst}", "panel"),
            caption="../report/panel.rst",
            category=PAIR_CATEGORY,
            subcategory="prediction",
        ),
        error_time=report(
            plot_file("{src}", "{dst}", "error_time"),
            caption="../report/error_time.rst",
            category=PAIR_CATEGORY,
            subcategory="prediction",
        ),
    params:
        panel_frame=TRAIN.panel_frame,
        code=code_of("plot_model"),
    log:
        logs("plots/{src}_{dst}"),
    benchmark:
        benchmarks("plots/{src}_{dst}")
    threads: 1
    resources:
        mem_mb=lambda wc, input: 1000 + int(3 * input.size_mb),
    conda:
        ENV
    script:
        "../scripts/plots.py"
