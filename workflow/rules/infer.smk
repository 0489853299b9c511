# Inference: one job per partition, with its own outputs and log. Profiles decide where it runs
# (local, Slurm CPU/GPU nodes). With inference.partitions_per_job > 1, consecutive partitions form
# a group job (one Slurm job): a `cosmicai serve` service loads the engine once and each partition's
# job hands it its partition file (partition_copy: true; README, "Slurm"). With backend lambda the job
# runs the Lambda invoker. A single job reads its partition's rows of the dataset (the manifest's row range).


rule serve_engine:
    input:
        checkpoint=CHECKPOINT,
        onnx=ONNX_INPUT,
    output:
        service(f"{R}/engine/{{group}}.json"),
    log:
        "logs/serve_engine/{group}.log",
    wildcard_constraints:
        group=r"group_\d+(_done)?",
    conda:
        "../envs/cosmicai.yaml"
    threads: INF["threads"]
    resources:
        mem_mb=serve_mem_mb,
        runtime=serve_runtime_min,
        cpus_per_task=INF["threads"],
    params:
        engine=lambda wc, input, threads: engine_options(input, threads),
    shell:
        "exec cosmicai serve --address {output} {params.engine} > {log} 2>&1"  # exec: Snakemake stops the service itself


rule infer_partition:
    input:
        manifest=f"{R}/partitions/manifest.json",  # the partition's row range and the source's identity
        part=f"{R}/partitions/{{part}}.h5" if COPY else [],  # partition_copy: its own file
        checkpoint=CHECKPOINT,
        onnx=[] if GROUPED else ONNX_INPUT,
        # flagged as a service here too: its name differs between runs, and Snakemake records "<service>"
        server=lambda wc: (
            [service(f"{R}/engine/{group_of(wc.part)}.json")] if GROUPED else []
        ),
    output:
        predictions=f"{R}/predictions/{{part}}.parquet",
        timings=f"{R}/predictions/{{part}}.json",
    log:
        "logs/infer_partition/{part}.log",
    conda:
        "../envs/cosmicai.yaml"
    # A group member only waits for the service, which holds the group's cores and memory.
    threads: 0 if GROUPED else INF["threads"]
    resources:
        mem_mb=infer_mem_mb,
        runtime=infer_runtime_min,
        cpus_per_task=lambda wc, threads: threads,
    params:
        batch_size=INF["batch_size"],
        on_invalid=INF["on_invalid"],
        engine=lambda wc, input, threads: (
            f"--server {input.server}" if GROUPED else engine_options(input, threads)
        ),
        failed=lambda wc: failure_record(wc.part),
        # backend lambda: the invoker stages the partition and model in S3 and invokes the function; profiles/lambda's
        # executor (cosmicai-lambda) runs these arguments on its shared pool, another executor runs the script.
        invoker=f"{workflow.basedir}/scripts/lambda_invoke.py",
        invoker_args=lambda wc, input, output: (
            lambda_invoker_args(wc, input, output)
            if config["backend"] == "lambda"
            else []
        ),
    shell:
        (
            "python {params.invoker} {params.invoker_args:q} > {log} 2>&1"
            if config["backend"] == "lambda"
            else "cosmicai infer --manifest {input.manifest} --partition {wildcards.part} --output {output.predictions} --sidecar {output.timings}"
            " --batch-size {params.batch_size} --on-invalid {params.on_invalid} --failure-record {params.failed}"
            " {params.engine} > {log} 2>&1"
        )
