# Data: the synthetic demo dataset, the demo model, and partitioning (a manifest of row ranges;
# per-partition files only with partition_copy).


# Under a cluster profile the heavy steps are jobs: training the demo model, partitioning the
# dataset (it reads, and by default copies, the whole dataset) and exporting the ONNX graph (torch).
# Generating the small synthetic demo inputs stays on the submit host.
localrules:
    synth_demo,
    synth_training_set,


# The Lambda executor runs only the inference invocations: under backend lambda the heavy steps run
# on the submit host, as every other rule does.
if config["backend"] == "lambda":

    localrules:
        partition_dataset,
        export_onnx,
        quantize_int8,
        train_demo_model,


rule synth_demo:
    output:
        f"{R}/data/demo.h5",
    log:
        "logs/synth_demo.log",
    conda:
        "../envs/cosmicai.yaml"
    params:
        n=config["demo"]["n"],
        seed=config["demo"]["seed"],
        size=config["demo"]["image_size"],
    shell:
        "cosmicai synth {output:q} --n {params.n:q} --seed {params.seed:q} --size {params.size:q} > {log:q} 2>&1"


rule synth_training_set:
    output:
        f"{R}/data/train.h5",
    log:
        "logs/synth_training_set.log",
    conda:
        "../envs/cosmicai.yaml"
    params:
        n=config["train"]["n"],
        seed=config["train"]["seed"],
        size=config["demo"]["image_size"],
    shell:
        "cosmicai synth {output:q} --n {params.n:q} --seed {params.seed:q} --size {params.size:q} > {log:q} 2>&1"


rule train_demo_model:
    input:
        f"{R}/data/train.h5",
    output:
        f"{R}/model/demo.safetensors",
    log:
        "logs/train_demo_model.log",
    conda:
        "../envs/cosmicai.yaml"
    threads: INF["threads"] if config["backend"] in ("slurm", "slurm-gpu") else workflow.cores  # a Slurm job: the per-job cores
    resources:
        mem_mb=4000,  # torch, the model and its optimizer state, the training set read in batches
        runtime=config["train"]["max_minutes"] + 10,
        cpus_per_task=lambda wc, threads: threads,
    params:
        t=config["train"],
    shell:
        "cosmicai -v train {input:q} --output {output:q} --epochs {params.t[epochs]:q} --batch-size {params.t[batch_size]:q}"
        " --lr {params.t[lr]:q} --seed {params.t[seed]:q} --max-minutes {params.t[max_minutes]:q} > {log:q} 2>&1"


rule export_onnx:
    input:
        CHECKPOINT,
    output:
        f"{R}/model/astromae.onnx",
    log:
        "logs/export_onnx.log",
    conda:
        "../envs/cosmicai.yaml"
    resources:
        mem_mb=3000,  # torch and the traced graph
        runtime=15,
    shell:
        "cosmicai export-onnx {input:q} --output {output:q} > {log:q} 2>&1"


# inference.precision int8: the graph quantized on a sample of the run's partitions, then checked by the
# accuracy gate against fp32 (cosmicai.int8_gate); a graph that fails stops the run here, before inference.
rule quantize_int8:
    input:
        onnx=f"{R}/model/astromae.onnx",
        manifest=f"{R}/partitions/manifest.json",
    output:
        graph=f"{R}/model/astromae-int8.onnx",
        gate=f"{R}/model/int8_gate.json",
    log:
        "logs/quantize_int8.log",
    conda:
        "../envs/cosmicai.yaml"
    threads: INF["threads"]
    resources:
        mem_mb=3000,  # the quantizer's calibration keeps every activation of the sample
        runtime=30,
        cpus_per_task=lambda wc, threads: threads,
    params:
        runtime=RUNTIME,
    shell:
        "cosmicai quantize {input.onnx:q} --manifest {input.manifest:q} --output {output.graph:q} --gate-report {output.gate:q}"
        " --runtime {params.runtime:q} --threads {threads:q} > {log:q} 2>&1"


rule partition_dataset:
    input:
        dataset=[] if DATASET_IS_S3 else DATASET,
    output:
        manifest=f"{R}/partitions/manifest.json",
        parts=expand(f"{R}/partitions/{{part}}.h5", part=PARTS) if COPY else [],
    log:
        "logs/partition_dataset.log",
    conda:
        "../envs/cosmicai.yaml"
    resources:
        mem_mb=2000,  # streams the dataset in batches
        runtime=lambda wc: max(15, int(N_ROWS * ROW_BYTES / 2**20 / 50 / 60) + 10),  # at >= 50 MB/s
    params:
        dataset=DATASET,
        mb=config["partition_mb"],
        copy_files=["--copy", "--outdir", f"{R}/partitions"] if COPY else [],
    shell:
        "cosmicai partition {params.dataset:q} --partition-mb {params.mb:q} --manifest {output.manifest:q} {params.copy_files:q} > {log:q} 2>&1"
