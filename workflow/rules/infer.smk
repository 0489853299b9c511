# Inference: one job per partitions_per_job consecutive partitions (cosmicai.job). The job
# loads the engine once, infers its partitions in order (reading the next while computing the
# current) and writes each partition's predictions and timings; its own output is the job's
# record. A rerun reuses the partitions an earlier attempt finished. Profiles decide where it runs
# (local, Slurm CPU/GPU nodes); under backend lambda the job invokes the function once per partition.


rule infer_job:
    input:
        manifest=f"{R}/partitions/manifest.json",  # the partitions' row ranges and the source's identity
        parts=lambda wc: (
            [f"{R}/partitions/{p}.h5" for p in job_partitions(wc.job)] if COPY else []
        ),
        # partition_copy: their own files
        checkpoint=CHECKPOINT,
        onnx=ONNX_INPUT,
    output:
        record=f"{R}/predictions/jobs/{{job}}.json",
    log:
        "logs/infer_job/{job}.log",
    wildcard_constraints:
        job=r"job_\d+",
    conda:
        "../envs/cosmicai.yaml"
    threads: INF["threads"]
    resources:
        mem_mb=infer_mem_mb,
        runtime=infer_runtime_min,
        cpus_per_task=lambda wc, threads: threads,
    params:
        partitions=lambda wc: job_partitions(wc.job),
        pred_dir=lambda wc, output: Path(output.record).parent.parent,  # predictions/, beside jobs/
        batch_size=INF["batch_size"],
        on_invalid=INF["on_invalid"],
        engine=lambda wc, input, threads: engine_options(input, threads),
        failed=lambda wc: failure_record(wc.job),
        # backend lambda: the job stages the model in S3 and invokes the function per partition; profiles/lambda's
        # executor (cosmicai-lambda) runs lambda_job on its shared pool, another executor runs the script with its argv.
        lambda_job=lambda wc, input, output: (
            lambda_job(wc, input, output) if config["backend"] == "lambda" else None
        ),
        invoker=f"{workflow.basedir}/scripts/lambda_invoke.py",
        invoker_args=lambda wc, input, output: (
            lambda_job(wc, input, output).argv()
            if config["backend"] == "lambda"
            else []
        ),
    shell:
        (
            "python {params.invoker:q} {params.invoker_args:q} > {log:q} 2>&1"
            if config["backend"] == "lambda"
            else "cosmicai infer --manifest {input.manifest:q} --job {wildcards.job:q} --partitions {params.partitions:q}"
            " --predictions-dir {params.pred_dir:q} --record {output.record:q} --batch-size {params.batch_size:q}"
            " --on-invalid {params.on_invalid:q} --failure-record {params.failed:q} {params.engine:q} > {log:q} 2>&1"
        )
