# Data: the synthetic demo dataset, the demo model, and partitioning.


# Quick, I/O-bound steps stay on the submit host under a cluster profile; training is a job.
localrules:
    synth_demo,
    synth_training_set,
    partition_dataset,
    export_onnx,
    train_demo_model,  # the demo model trains on the submit host: on clusters users bring the real checkpoint


rule synth_demo:
    output:
        f"{R}/data/demo.h5",
    log:
        "logs/synth_demo.log",
    params:
        n=config["demo"]["n"],
        seed=config["demo"]["seed"],
        size=config["demo"]["image_size"],
    conda:
        "../envs/cosmicai.yaml"
    shell:
        "cosmicai synth {output} --n {params.n} --seed {params.seed} --size {params.size} > {log} 2>&1"


rule synth_training_set:
    output:
        f"{R}/data/train.h5",
    log:
        "logs/synth_training_set.log",
    params:
        n=config["train"]["n"],
        seed=config["train"]["seed"],
        size=config["demo"]["image_size"],
    conda:
        "../envs/cosmicai.yaml"
    shell:
        "cosmicai synth {output} --n {params.n} --seed {params.seed} --size {params.size} > {log} 2>&1"


rule train_demo_model:
    input:
        f"{R}/data/train.h5",
    output:
        f"{R}/model/demo.safetensors",
    log:
        "logs/train_demo_model.log",
    threads: workflow.cores
    params:
        t=config["train"],
    conda:
        "../envs/cosmicai.yaml"
    shell:
        "cosmicai -v train {input} --output {output} --epochs {params.t[epochs]} --batch-size {params.t[batch_size]}"
        " --lr {params.t[lr]} --seed {params.t[seed]} --max-minutes {params.t[max_minutes]} > {log} 2>&1"


rule export_onnx:
    input:
        CHECKPOINT,
    output:
        f"{R}/model/astromae.onnx",
    log:
        "logs/export_onnx.log",
    conda:
        "../envs/cosmicai.yaml"
    shell:
        "cosmicai export-onnx {input} --output {output} > {log} 2>&1"


rule partition_dataset:
    input:
        DATASET,
    output:
        manifest=f"{R}/partitions/manifest.json",
        parts=expand(f"{R}/partitions/{{part}}.h5", part=PARTS),
    log:
        "logs/partition_dataset.log",
    params:
        mb=config["partition_mb"],
        outdir=f"{R}/partitions",
    conda:
        "../envs/cosmicai.yaml"
    shell:
        "cosmicai partition {input} --partition-mb {params.mb} --outdir {params.outdir} --manifest {output.manifest} > {log} 2>&1"
