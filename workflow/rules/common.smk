# Config validation, the partition plan (computed when the DAG is built), input and resource functions.
import json
import os
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from cosmicai.data.dataset import ROW_BYTES, inspect
from cosmicai.errors import CosmicaiError
from cosmicai.data.partition import partition_count, partition_name
from cosmicai.config import config_error

try:
    validate(config, "../schemas/config.schema.yaml")
except WorkflowError as exc:
    raise WorkflowError(config_error(config, f"{workflow.basedir}/schemas/config.schema.yaml")) from None

# Where workflow/envs/cosmicai.yaml installs the package from under --sdm conda (pip expands it).
os.environ.setdefault("COSMICAI_SRC", os.path.dirname(workflow.basedir))

R = config["results"]
IS_DEMO = config["dataset"] == "demo"
DATASET = f"{R}/data/demo.h5" if IS_DEMO else config["dataset"]
CHECKPOINT = config["checkpoint"] or f"{R}/model/demo.safetensors"
INF = config["inference"]
# The CPU runtimes read an ONNX graph exported once from the checkpoint (rule export_onnx).
ONNX_INPUT = [f"{R}/model/astromae.onnx"] if INF["runtime"] != "torch" and INF["device"] != "cuda" else []


def dataset_rows() -> int:
    """Rows of the input dataset, from HDF5 metadata (or the demo settings before it exists)."""
    if IS_DEMO:
        return config["demo"]["n"]
    try:
        return inspect(DATASET, check_ids=False).n_rows
    except CosmicaiError as exc:
        raise WorkflowError(f"dataset {exc}") from None


N_ROWS = dataset_rows()
N_PARTS = partition_count(N_ROWS, config["partition_mb"])
PARTS = [partition_name(i) for i in range(N_PARTS)]
ROWS_PER_PART = -(-N_ROWS // N_PARTS)


def final_outputs() -> list[str]:
    """Everything a full run produces."""
    return [
        f"{R}/predictions.parquet",
        f"{R}/metrics/metrics.json",
        f"{R}/plots/z_pred_vs_z_spec.png",
        f"{R}/summary/run_summary.json",
        f"{R}/calibration.json",  # this run's speeds, for `cosmicai plan` (workflow/rules/plan.smk)
        f"{R}/plots/plan_scaling.png",
        f"{R}/report/plan_vs_actual.html",  # and the report's other tables
    ]


# Sizing of one inference job (measured with `cosmicai infer` on CPU: ~760 MB for Python, torch and
# timm, ~250 MB for the ONNX Runtime path that never imports torch; ~0.35 MB of activations per batch
# row at 32x32 fp32), padded for other machines and precisions.
RUNTIME_MB = 350 if ONNX_INPUT else 800
ACTIVATION_MB_PER_ROW = 0.5
OUTPUT_BYTES_PER_ROW = 64  # z_pred, ids, z_spec, mag_r, valid and pyarrow's copies when writing
SAMPLES_PER_S_PER_THREAD = 25  # pessimistic CPU rate (about 300/s measured): a GPU job fits too
STARTUP_S = 120  # interpreter, imports and checkpoint read from a shared filesystem


def model_mb() -> float:
    """Size of the checkpoint's weights in MB (AstroMAE's 15.8M fp32 parameters until the demo model exists)."""
    path = Path(CHECKPOINT)
    return path.stat().st_size / 2**20 if path.exists() else 64.0


def infer_mem_mb(wildcards, attempt: int) -> int:
    """Memory for one inference job from the model, the batch and the partition's rows, doubled per retry."""
    prefetch_mb = 3 * INF["batch_size"] * ROW_BYTES / 2**20  # the batch being computed and two read ahead
    need = (
        RUNTIME_MB
        + 2 * model_mb()  # the weights and the state_dict they are loaded from
        + INF["batch_size"] * ACTIVATION_MB_PER_ROW
        + prefetch_mb
        + ROWS_PER_PART * OUTPUT_BYTES_PER_ROW / 2**20
    )
    return int(1.25 * need) * 2 ** (attempt - 1)


def infer_runtime_min(wildcards, threads: int, attempt: int) -> int:
    """Wall-time limit in minutes for one inference job from the partition's rows and the job's threads, doubled per retry."""
    seconds = STARTUP_S + model_mb() / 20 + ROWS_PER_PART / (SAMPLES_PER_S_PER_THREAD * threads)
    return max(5, -(-int(seconds) // 60)) * 2 ** (attempt - 1)


def infer_cpus(wildcards, threads: int) -> int:
    """Slurm cores for an inference job: its threads (torch uses as many, via --threads)."""
    return threads


# The invoker's arguments for one partition (workflow/scripts/lambda_invoke.py, or the cosmicai-lambda executor).
LAMBDA_ARGS = ("bucket", "prefix", "function_name", "region", "timeout_s", "memory_mb", "architecture", "ephemeral_storage_mb", "max_attempts")


def lambda_invoker_args(wildcards, input, output) -> list[str]:
    """Arguments of cosmicai.aws.invoker for one partition under backend lambda."""
    lam = config["lambda"]
    args = [input.part, "--manifest", input.manifest, "--checkpoint", input.checkpoint, "--output", output.predictions,
            "--sidecar", output.timings, "--batch-size", INF["batch_size"], "--precision", INF["precision"],
            "--on-invalid", INF["on_invalid"], "--runtime", INF["runtime"]]
    args += ["--onnx", input.onnx] if input.onnx else []
    for key in LAMBDA_ARGS:
        args += [f"--{key.replace('_', '-')}", lam[key]]
    return [str(a) for a in args]
