# Merge, metrics, plots and the run/cost summaries: shared by every backend.


localrules:
    merge_predictions,
    compute_metrics,
    plot_results,
    summarize_run,


rule merge_predictions:
    input:
        manifest=f"{R}/partitions/manifest.json",
        records=job_records(),  # every job done: its partitions' predictions are in predictions/
    output:
        f"{R}/predictions.parquet",
    log:
        "logs/merge_predictions.log",
    conda:
        "../envs/cosmicai.yaml"
    params:
        pred_dir=f"{R}/predictions",
    shell:
        "cosmicai merge --manifest {input.manifest:q} --predictions-dir {params.pred_dir:q} --output {output:q} > {log:q} 2>&1"


rule compute_metrics:
    input:
        f"{R}/predictions.parquet",
    output:
        metrics=f"{R}/metrics/metrics.json",
        by_zspec=report(
            f"{R}/metrics/by_zspec.csv",
            caption="../report/by_zspec.rst",
            category="Metrics",
        ),
        by_rmag=report(
            f"{R}/metrics/by_rmag.csv",
            caption="../report/by_rmag.rst",
            category="Metrics",
        ),
    log:
        "logs/compute_metrics.log",
    conda:
        "../envs/cosmicai.yaml"
    shell:
        "cosmicai metrics {input:q} --output {output.metrics:q} --by-zspec {output.by_zspec:q} --by-rmag {output.by_rmag:q} > {log:q} 2>&1"


rule plot_results:
    input:
        predictions=f"{R}/predictions.parquet",
        timings=job_records(),
    output:
        z=report(
            f"{R}/plots/z_pred_vs_z_spec.png",
            caption="../report/z_pred_vs_z_spec.rst",
            category="Predictions",
        ),
        delta=report(
            f"{R}/plots/delta_vs_z_spec.png",
            caption="../report/delta_vs_z_spec.rst",
            category="Predictions",
        ),
        timings=report(
            f"{R}/plots/partition_timings.png",
            caption="../report/partition_timings.rst",
            category="Run",
        ),
    log:
        "logs/plot_results.log",
    conda:
        "../envs/cosmicai.yaml"
    params:
        outdir=f"{R}/plots",
    shell:
        "cosmicai plots {input.predictions:q} --sidecars {input.timings:q} --outdir {params.outdir:q} > {log:q} 2>&1"


rule summarize_run:
    input:
        timings=job_records(),
        merged=f"{R}/predictions.parquet",
        manifest=f"{R}/partitions/manifest.json",
        context=f"{R}/plan/context.json",  # the run's plan, put beside the actuals (workflow/rules/plan.smk)
        gate=[f"{R}/model/int8_gate.json"] if INT8 else [],  # the int8 accuracy gate's report
    output:
        run=f"{R}/summary/run_summary.json",
        cost=f"{R}/summary/cost_summary.json",
    log:
        "logs/summarize_run.log",
    conda:
        "../envs/cosmicai.yaml"
    params:
        rates=lambda wc: json.dumps(
            {**config["cost"], "lambda": config["lambda"]["prices"]}
        ),
        pred_dir=f"{R}/predictions",
        gate=lambda wc, input: (
            ["--accuracy-gate", str(input.gate)] if input.gate else []
        ),
    shell:
        "cosmicai summarize --sidecars {input.timings:q} --rates {params.rates:q}"
        " --run-output {output.run:q} --cost-output {output.cost:q} --plan {input.context:q}"
        " --manifest {input.manifest:q} --predictions-dir {params.pred_dir:q}"
        " {params.gate:q} > {log:q} 2>&1"
