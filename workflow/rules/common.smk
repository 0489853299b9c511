# Config validation, the partitions and jobs (computed when the DAG is built), input and resource functions.
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
from cosmicai.job import job_count, job_index, job_name, per_job, record_path
from cosmicai.config import SCHEMA_PATH, coerce_config, config_error, load_schema
from cosmicai import runlock, sizing
from cosmicai.aws.job_spec import SPEC_SETTINGS, LambdaJobSpec
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
    for rule_name in ("infer_job",):
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


# One inference job per partitions_per_job consecutive partitions (cosmicai.job): the DAG
# holds hundreds of jobs, not one per partition, and a job pays its start-up once for its partitions.
PER_JOB = per_job(INF["partitions_per_job"], N_PARTS)
JOBS = [job_name(j) for j in range(job_count(N_PARTS, PER_JOB))]


def job_partitions(job: str) -> list[str]:
    """The partitions of a job, in order."""
    j = job_index(job)
    return PARTS[j * PER_JOB : (j + 1) * PER_JOB]


def job_records() -> list[str]:
    """Every inference job's output: its record (the timings of its partitions)."""
    return [str(record_path(f"{R}/predictions", j)) for j in JOBS]


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


def failure_record(job: str) -> str:
    """Where `cosmicai infer` records a job's non-retryable failure (bad input, wrong checkpoint)."""
    return f"{R}/failures/{job}.json"


# Inference jobs' requests (Slurm's --mem and --time) are sized by cosmicai.sizing, per engine path,
# doubled per retry unless the job recorded a failure that more resources cannot fix.
ENGINE_PATH = sizing.engine_path(GPU_PATH, RUNTIME)


def failed_before(job: str, attempt: int) -> bool:
    """Whether a job's earlier attempt recorded a non-retryable failure."""
    return attempt > 1 and Path(failure_record(job)).exists()


def infer_mem_mb(wildcards, attempt: int) -> int:
    """Host memory in MB for one inference job (cosmicai.sizing.mem_mb)."""
    return sizing.mem_mb(
        ENGINE_PATH,
        partitions=len(job_partitions(wildcards.job)),
        rows_per_partition=ROWS_PER_PART,
        batch_size=INF["batch_size"],
        model_mb=sizing.model_mb(CHECKPOINT),
        attempt=attempt,
        failed=failed_before(wildcards.job, attempt),
    )


def infer_runtime_min(wildcards, attempt: int) -> int:
    """Wall-time limit in minutes for one inference job (cosmicai.sizing.runtime_min)."""
    return sizing.runtime_min(
        ENGINE_PATH,
        partitions=len(job_partitions(wildcards.job)),
        rows_per_partition=ROWS_PER_PART,
        threads=INF["threads"],
        model_mb=sizing.model_mb(CHECKPOINT),
        attempt=attempt,
        failed=failed_before(wildcards.job, attempt),
    )


# One inference job under backend lambda, typed (cosmicai.aws.job_spec.LambdaJobSpec): the cosmicai-lambda executor
# runs it as it is; another executor runs workflow/scripts/lambda_invoke.py with its argv().
def lambda_job(wildcards, input, output) -> LambdaJobSpec:
    """The Lambda job of one inference job (rule infer_job)."""
    lam = config["lambda"]
    # Its files as a dict: in a .smk file no line may begin with the keyword `checkpoint`.
    files = {
        "manifest": str(input.manifest),
        "record": str(output.record),
        "checkpoint": str(input.checkpoint),
        "onnx": str(input.onnx) if input.onnx else None,
        "predictions_dir": f"{R}/predictions",
    }
    return LambdaJobSpec(
        job=wildcards.job,
        partitions=tuple(job_partitions(wildcards.job)),
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
