# Config validation, the partition plan (computed when the DAG is built), input and resource functions.
import json
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from cosmicai.dataset import ROW_BYTES, inspect
from cosmicai.errors import CosmicaiError
from cosmicai.partition import partition_count, partition_name
from cosmicai.settings import config_error

try:
    validate(config, "../config/schema.yaml")
except WorkflowError as exc:
    raise WorkflowError(config_error(config, f"{workflow.basedir}/config/schema.yaml")) from None

R = config["results"]
IS_DEMO = config["dataset"] == "demo"
DATASET = f"{R}/data/demo.h5" if IS_DEMO else config["dataset"]
CHECKPOINT = config["checkpoint"] or f"{R}/model/demo.safetensors"
INF = config["inference"]


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
    ]


def infer_mem_mb(wildcards, attempt: int) -> int:
    """Memory for one inference job: the model and runtime (~700 MB) plus two batches, doubled per retry."""
    batch_mb = 2 * INF["batch_size"] * ROW_BYTES / 2**20
    return int((1024 + 4 * batch_mb) * attempt)


def infer_runtime_min(wildcards, attempt: int) -> int:
    """Minutes for one inference job, assuming a pessimistic 50 samples/s per job, longer per retry."""
    return int((5 + ROWS_PER_PART / 50 / 60) * attempt)
