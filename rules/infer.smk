# Inference: one job per partition. Profiles decide where it runs (local, Slurm CPU/GPU nodes);
# resources follow the partition size.


rule infer_partition:
    input:
        part=f"{R}/partitions/{{part}}.h5",
        checkpoint=CHECKPOINT,
    output:
        predictions=f"{R}/predictions/{{part}}.parquet",
        timings=f"{R}/predictions/{{part}}.json",
    log:
        "logs/infer_partition/{part}.log",
    threads: INF["threads"]
    resources:
        mem_mb=infer_mem_mb,
        runtime=infer_runtime_min,
    params:
        batch_size=INF["batch_size"],
        device=INF["device"],
        precision=INF["precision"],
        on_invalid=INF["on_invalid"],
        compile="--compile" if INF["compile"] else "",
    shell:
        "cosmicai infer {input.part} --checkpoint {input.checkpoint} --output {output.predictions}"
        " --sidecar {output.timings} --batch-size {params.batch_size} --device {params.device}"
        " --precision {params.precision} --on-invalid {params.on_invalid} --threads {threads} {params.compile}"
        " > {log} 2>&1"
