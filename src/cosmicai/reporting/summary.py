"""Run summary (wall time, per-partition timings, throughput) from the inference sidecars."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cosmicai.atomic import write_json
from cosmicai.infer import BITS_PER_SAMPLE
from cosmicai.job import load_sidecars


def run_summary(runs: list[dict], backend: str) -> dict:
    """Wall time from the first job's start to the last job's end, totals and per-partition figures."""
    rows = sum(r["rows"] for r in runs)
    wall = max(r["ended_at"] for r in runs) - min(r["started_at"] for r in runs) if runs else 0.0
    compute = sum(r["compute_s"] for r in runs)
    return {
        "backend": backend,
        "partitions": len(runs),
        "rows": rows,
        "invalid_rows": sum(r.get("invalid_rows", 0) for r in runs),
        "wall_s": wall,
        "job_seconds": sum(r["total_s"] for r in runs),
        "compute_seconds": compute,
        "samples_per_s": rows / wall if wall else 0.0,
        "bits_per_s": rows * BITS_PER_SAMPLE / wall if wall else 0.0,
        "compute_samples_per_s": rows / compute if compute else 0.0,
        "max_peak_rss_mb": max((r["peak_rss_mb"] for r in runs), default=0.0),
        "per_partition": [
            {
                k: r.get(k)
                for k in (
                    "partition",
                    "rows",
                    "total_s",
                    "model_load_s",
                    "read_s",
                    "compute_s",
                    "write_s",
                    "samples_per_s",
                    "peak_rss_mb",
                    "device",
                    "host",
                )
            }
            for r in runs
        ],
    }


def row_accounting(manifest_path: str | os.PathLike, predictions_dir: str | os.PathLike) -> dict:
    """Rows in (the source's own row count, read from the source) and rows out (each partition's predictions file);
    per partition, rows in as the manifest gives them, so a manifest that lost rows shows as rows lost."""
    import pyarrow.parquet as pq

    from cosmicai.data.merge import source_rows

    manifest = json.loads(Path(manifest_path).read_text())
    per = []
    for entry in manifest["partitions"]:
        pred = Path(predictions_dir) / f"{entry['name']}.parquet"
        per.append(
            {"partition": entry["name"], "rows_in": entry["rows"], "rows_out": pq.read_metadata(pred).num_rows if pred.exists() else 0}
        )
    rows_in, rows_out = source_rows(manifest), sum(p["rows_out"] for p in per)
    return {
        "rows_in": rows_in,
        "manifest_rows": sum(p["rows_in"] for p in per),
        "rows_out": rows_out,
        "rows_lost": rows_in - rows_out,
        "partitions_mismatched": [p["partition"] for p in per if p["rows_in"] != p["rows_out"]],
        "per_partition": per,
    }


def write_summaries(
    sidecars: list[str | os.PathLike],
    backend: str | None,
    rates: dict,
    run_output: str | os.PathLike,
    cost_output: str | os.PathLike,
    manifest: str | os.PathLike | None = None,
    predictions_dir: str | os.PathLike | None = None,
    plan_context: dict | None = None,
    accuracy_gate: dict | None = None,
) -> tuple[dict, dict]:
    """Write the run summary (with row accounting given a manifest) and the backend's cost summary
    (with the plan's estimate beside the actuals given `plan_context`, see cosmicai.planning.context.run_estimate);
    an int8 run's summary carries its accuracy gate's report (cosmicai.int8_gate) as `int8_gate`."""
    from cosmicai.accounting.cost import cost_summary, detect_backend

    runs = load_sidecars(sidecars)
    backend = backend or detect_backend(runs)
    summary = run_summary(runs, backend)
    if manifest is not None and predictions_dir is not None:
        summary["row_accounting"] = row_accounting(manifest, predictions_dir)
    if accuracy_gate is not None:
        summary["int8_gate"] = accuracy_gate
    cost = cost_summary(runs, backend, rates, summary)
    if plan_context is not None:
        from cosmicai.errors import CosmicaiError
        from cosmicai.planning.context import run_estimate

        try:
            cost["plan_vs_actual"] = run_estimate(plan_context, runs, backend, summary, cost)
        except CosmicaiError as exc:  # the summaries stand without the estimate; the cause is recorded
            cost["plan_vs_actual"] = {"error": str(exc)}
    write_json(run_output, summary)
    write_json(cost_output, cost)
    return summary, cost
