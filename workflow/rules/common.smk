# Config validation, the partition plan (computed when the DAG is built), input and resource functions.
import json
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from cosmicai.data.dataset import ROW_BYTES, inspect
from cosmicai.data.source import is_s3
from cosmicai.errors import CosmicaiError
from cosmicai.data.partition import partition_count, partition_name
from cosmicai.batch import batch_count, batch_index, batch_name, per_job, record_path
from cosmicai.config import SCHEMA_PATH, coerce_config, config_error, load_schema
from cosmicai import runlock
from cosmicai.aws.job_spec import SPEC_SETTINGS, BatchSpec
from cosmicai.aws.settings import LambdaSettings

# Values given with --config arrive as text (nested ones always: Snakemake reads them with YAML's
# BaseLoader): the schema's types are applied first, at every depth, then the config is validated.
# The schema is the package's (cosmicai.config), so that cosmicai's own loader validates the same way.
SCHEMA = SCHEMA_PATH
try:
    config.update(coerce_config(config, load_schema(SCHEMA)))
    validate(config, SCHEMA)
except CosmicaiError as exc:
    raise WorkflowError(str(exc)) from None
except WorkflowError:
    raise WorkflowError(config_error(config, SCHEMA)) from None

# Where workflow/envs/cosmicai.yaml installs the package from under --sdm conda (pip expands it).
os.environ.setdefault("COSMICAI_SRC", os.path.dirname(workflow.basedir))

R = config["results"]
IS_DEMO = config["dataset"] == "demo"
DATASET = f"{R}/data/demo.h5" if IS_DEMO else config["dataset"]
DATASET_IS_S3 = is_s3(
    DATASET
)  # read in place (ranged GETs); Snakemake does not track it as a file
COPY = config[
    "partition_copy"
]  # per-partition files (rule partition_dataset) instead of row ranges
CHECKPOINT = config["checkpoint"] or f"{R}/model/demo.safetensors"
INF = config["inference"]


# Where the inference jobs run decides the engine, and so what they read and ask for: the GPU path
# (PyTorch on CUDA) when the device is cuda, or auto on a GPU backend (slurm-gpu, or GPUs asked for
# with gres/gpu/gpus) or on a local machine with one; the CPU graph (OpenVINO/ONNX Runtime)
# otherwise. The job inside Slurm decides the same way: it reads the same config and resources.
def inference_resources() -> dict:
    """The resources the profile or command line gives inference jobs (defaults, then per rule)."""
    rs = workflow.resource_settings
    asked = dict(rs.default_resources or {})
    for rule_name in ("infer_batch",):
        asked.update(rs.overwrite_resources.get(rule_name, {}))
    return asked


def gpu_path() -> bool:
    if INF["precision"] == "int8":  # the int8 graph runs in the CPU runtimes only
        return False
    if INF["device"] != "auto":
        return INF["device"] == "cuda"
    if config["backend"] == "slurm-gpu" or {"gres", "gpu", "gpus"} & set(
        inference_resources()
    ):
        return True
    if config["backend"] != "local":  # Slurm CPU nodes, Lambda functions
        return False
    from cosmicai.engines.base import cuda_available

    return cuda_available()


GPU_PATH = gpu_path()
RUNTIME = "torch" if GPU_PATH and INF["runtime"] == "auto" else INF["runtime"]
# The CPU runtimes read an ONNX graph exported once from the checkpoint (rule export_onnx).
# At int8 they read the graph quantized for this run, which passed the accuracy gate (rule quantize_int8).
INT8 = INF["precision"] == "int8"
ONNX_INPUT = (
    [f"{R}/model/astromae-int8.onnx" if INT8 else f"{R}/model/astromae.onnx"]
    if RUNTIME != "torch"
    else []
)


def dataset_rows() -> int:
    """Rows of the input dataset, from HDF5 metadata only (or the demo settings before it exists)."""
    if IS_DEMO:
        return config["demo"]["n"]
    try:
        return inspect(DATASET, check_ids=False).n_rows
    except CosmicaiError as exc:
        raise WorkflowError(f"dataset {exc}") from None


N_ROWS = dataset_rows()
try:
    N_PARTS = partition_count(N_ROWS, config["partition_mb"])
except ValueError as exc:
    where = "invalid config: partition_mb" if N_ROWS else f"dataset {DATASET}"
    raise WorkflowError(f"{where}: {exc}") from None
PARTS = [partition_name(i) for i in range(N_PARTS)]
ROWS_PER_PART = -(-N_ROWS // N_PARTS)


# One inference job per batch of partitions_per_job consecutive partitions (cosmicai.batch): the DAG
# holds hundreds of jobs, not one per partition, and a job pays its start-up once for its batch.
PER_JOB = per_job(INF["partitions_per_job"], N_PARTS)
BATCHES = [batch_name(b) for b in range(batch_count(N_PARTS, PER_JOB))]


def batch_parts(batch: str) -> list[str]:
    """The partitions of a batch, in order."""
    b = batch_index(batch)
    return PARTS[b * PER_JOB : (b + 1) * PER_JOB]


def batch_records() -> list[str]:
    """Every inference job's output: its record (the timings of its partitions)."""
    return [str(record_path(f"{R}/predictions", b)) for b in BATCHES]


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


def engine_options(input, threads: int) -> list[str]:
    """The engine's command-line options of `cosmicai infer`, one element each, quoted by :q in the shell command."""
    args = [
        "--checkpoint",
        input.checkpoint,
        "--device",
        INF["device"],
        "--precision",
        INF["precision"],
    ]
    args += ["--runtime", RUNTIME, "--threads", threads] + (
        ["--compile"] if INF["compile"] else []
    )
    args += ["--onnx", input.onnx] if input.onnx else []
    return [str(a) for a in args]


def failure_record(batch: str) -> str:
    """Where `cosmicai infer` records a batch's non-retryable failure (bad input, wrong checkpoint)."""
    return f"{R}/failures/{batch}.json"


# Sizing of inference jobs, per device path (measured with `cosmicai infer`: ~250 MB for the CPU
# graph, which never imports torch; ~760 MB for Python, torch and timm on CPU; PyTorch with CUDA
# maps its libraries and context into host memory, ~2.5 GB, while activations live on the GPU),
# padded for other machines; a batch job adds, for the two partitions in flight (the one computed and
# the next one read ahead), their output columns and read-ahead.
RUNTIME_MB = 3000 if GPU_PATH else (800 if RUNTIME == "torch" else 350)
HOST_ACTIVATION_MB_PER_ROW = (
    0.0 if GPU_PATH else 0.5
)  # ~0.35 MB per batch row at 32x32 fp32 on CPU
OUTPUT_BYTES_PER_ROW = (
    64  # z_pred, ids, z_spec, mag_r, valid and pyarrow's copies when writing
)
# Pessimistic rates for the wall-time limit (measured: ~300/s on 2 CPU threads; 94K/s fp32 on an
# H200, where reading from a shared filesystem at ~100 MB/s, ~5K rows/s, is the bound).
SAMPLES_PER_S = 5000 if GPU_PATH else 25 * INF["threads"]
STARTUP_S = (
    120  # interpreter, imports, CUDA start and checkpoint read from a shared filesystem
)


def model_mb() -> float:
    """Size of the checkpoint's weights in MB (AstroMAE's 15.8M fp32 parameters until the demo model exists)."""
    path = Path(CHECKPOINT)
    return path.stat().st_size / 2**20 if path.exists() else 64.0


def retry_factor(batch: str, attempt: int) -> int:
    """2^(attempt-1), but 1 when the batch recorded a failure that more resources cannot fix."""
    if attempt > 1 and Path(failure_record(batch)).exists():
        return 1
    return 2 ** (attempt - 1)


def infer_mem_mb(wildcards, attempt: int) -> int:
    """Host memory for one job's engine inferring its batch's partitions, two at a time."""
    parts = batch_parts(wildcards.batch)
    in_flight = min(2, len(parts))
    prefetch_mb = (
        3 * INF["batch_size"] * ROW_BYTES / 2**20
    )  # the batch being computed and two read ahead
    need = (
        RUNTIME_MB
        + 2 * model_mb()  # the weights and the state_dict they are loaded from
        + INF["batch_size"] * HOST_ACTIVATION_MB_PER_ROW
        + in_flight * (prefetch_mb + ROWS_PER_PART * OUTPUT_BYTES_PER_ROW / 2**20)
    )
    return int(1.25 * need) * retry_factor(wildcards.batch, attempt)


def infer_runtime_min(wildcards, attempt: int) -> int:
    """Wall-time limit in minutes for a batch's job, doubled per retry (unless not retryable)."""
    parts = batch_parts(wildcards.batch)
    seconds = STARTUP_S + model_mb() / 20 + len(parts) * ROWS_PER_PART / SAMPLES_PER_S
    return max(5, -(-int(seconds) // 60)) * retry_factor(wildcards.batch, attempt)


# One batch's job under backend lambda, typed (cosmicai.aws.job_spec.BatchSpec): the cosmicai-lambda executor
# runs it as it is; another executor runs workflow/scripts/lambda_invoke.py with its argv().
def lambda_job(wildcards, input, output) -> BatchSpec:
    """The Lambda batch job of one inference job (rule infer_batch)."""
    lam = config["lambda"]
    # Its files as a dict: in a .smk file no line may begin with the keyword `checkpoint`.
    files = {
        "manifest": str(input.manifest),
        "record": str(output.record),
        "checkpoint": str(input.checkpoint),
        "onnx": str(input.onnx) if input.onnx else None,
        "predictions_dir": f"{R}/predictions",
    }
    return BatchSpec(
        batch=wildcards.batch,
        partitions=tuple(batch_parts(wildcards.batch)),
        runtime=INF["runtime"],
        batch_size=INF["batch_size"],
        precision=INF["precision"],
        on_invalid=INF["on_invalid"],
        settings=LambdaSettings(
            **{key: lam[key] for key in SPEC_SETTINGS if key in lam}
        ),
        **files,
    )


def lock_results() -> None:
    """Take the results folder's lock for this run (one run per results folder; cosmicai.runlock)."""
    try:
        note = runlock.acquire(R)
    except CosmicaiError as exc:
        raise WorkflowError(str(exc)) from None
    if note:
        print(note, file=sys.stderr, flush=True)
