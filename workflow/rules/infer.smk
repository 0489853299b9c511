# Inference: one job per partition. Profiles decide where it runs (local, Slurm CPU/GPU nodes);
# resources follow the partition size. With backend lambda the job runs the Lambda invoker instead.


rule infer_partition:
    input:
        part=f"{R}/partitions/{{part}}.h5",
        manifest=f"{R}/partitions/manifest.json",
        checkpoint=CHECKPOINT,
        onnx=ONNX_INPUT,
    output:
        predictions=f"{R}/predictions/{{part}}.parquet",
        timings=f"{R}/predictions/{{part}}.json",
    log:
        "logs/infer_partition/{part}.log",
    threads: INF["threads"]
    resources:
        mem_mb=infer_mem_mb,
        runtime=infer_runtime_min,
        cpus_per_task=infer_cpus,
    conda:
        "../envs/cosmicai.yaml"
    params:
        batch_size=INF["batch_size"],
        device=INF["device"],
        precision=INF["precision"],
        on_invalid=INF["on_invalid"],
        compile="--compile" if INF["compile"] else "",
        runtime=INF["runtime"],
        onnx=lambda wc, input: f"--onnx {input.onnx}" if input.onnx else "",
        # backend lambda: the invoker stages the partition and model in S3 and invokes the function; profiles/lambda's
        # executor (cosmicai-lambda) runs these arguments on its shared pool, another executor runs the script.
        invoker=f"{workflow.basedir}/scripts/lambda_invoke.py",
        invoker_args=lambda wc, input, output: lambda_invoker_args(wc, input, output) if config["backend"] == "lambda" else [],
    shell:
        (
            "python {params.invoker} {params.invoker_args:q} > {log} 2>&1"
            if config["backend"] == "lambda"
            else "cosmicai infer {input.part} --manifest {input.manifest} --checkpoint {input.checkpoint} --output {output.predictions}"
            " --sidecar {output.timings} --batch-size {params.batch_size} --device {params.device}"
            " --precision {params.precision} --on-invalid {params.on_invalid} --threads {threads} {params.compile}"
            " --runtime {params.runtime} {params.onnx}"
            " > {log} 2>&1"
        )
