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
        # backend lambda: the invoker stages the partition and model in S3 and invokes the function.
        invoker=f"{workflow.basedir}/scripts/lambda_invoke.py",
        lam=(
            {k: config["lambda"][k] for k in ("bucket", "prefix", "function_name", "region", "timeout_s",
                                              "architecture", "ephemeral_storage_mb", "max_attempts")}
            if config["backend"] == "lambda"
            else {}
        ),
    shell:
        (
            "python {params.invoker} {input.part} --manifest {input.manifest} --checkpoint {input.checkpoint} --output {output.predictions}"
            " --sidecar {output.timings} --bucket '{params.lam[bucket]}' --prefix '{params.lam[prefix]}'"
            " --function-name '{params.lam[function_name]}' --region '{params.lam[region]}'"
            " --timeout-s {params.lam[timeout_s]} --architecture {params.lam[architecture]}"
            " --ephemeral-storage-mb {params.lam[ephemeral_storage_mb]} --max-attempts {params.lam[max_attempts]}"
            " --batch-size {params.batch_size} --precision {params.precision} --on-invalid {params.on_invalid}"
            " --runtime {params.runtime} {params.onnx}"
            " > {log} 2>&1"
            if config["backend"] == "lambda"
            else "cosmicai infer {input.part} --manifest {input.manifest} --checkpoint {input.checkpoint} --output {output.predictions}"
            " --sidecar {output.timings} --batch-size {params.batch_size} --device {params.device}"
            " --precision {params.precision} --on-invalid {params.on_invalid} --threads {threads} {params.compile}"
            " --runtime {params.runtime} {params.onnx}"
            " > {log} 2>&1"
        )
