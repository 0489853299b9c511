"""What a plan is made from: the workflow config, the run's plan context, the cluster; and plan-vs-actual.

The workflow writes a run's plan context (`results/plan/context.json`, rule write_plan_context) as a
declared file: the plan backend its profile names, the config's plan-relevant blocks and the cores it
was given. The run summary reads that file; nothing travels through the environment.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from cosmicai.accounting.pricing import lambda_prices
from cosmicai.aws.settings import FREE_EPHEMERAL_MB
from cosmicai.config import DEFAULT_CONFIG, load_config, read_config_file
from cosmicai.data.dataset import ROW_BYTES
from cosmicai.planning.calibration import Backend, Calibration
from cosmicai.planning.estimate import (
    LAMBDA_ACCOUNT_CONCURRENCY,
    LAMBDA_DEFAULT_IN_FLIGHT,
    LAMBDA_MAX_TIMEOUT_S,
    Plan,
    Settings,
    estimate,
    json_row,
)

# The config blocks a plan reads (and the context file carries).
PLAN_KEYS = ("partition_mb", "inference", "lambda", "cost")


def profile_config(backend: str) -> dict:
    """The config a backend's profile runs with from this directory: config/config.yaml, then the profile's own
    config/<backend>.yaml when there is one (backend, partitions_per_job: profiles/slurm names config/slurm.yaml)."""
    if not DEFAULT_CONFIG.exists():
        return {}  # outside a checkout: the settings' defaults
    own = Path("config", f"{backend}.yaml")
    return load_config([DEFAULT_CONFIG, own] if own.exists() else [DEFAULT_CONFIG])


def backend_config(config: dict, backend: str) -> dict:
    """`config` as `backend`'s profile would run it: unchanged for its own backend; for another, the inference keys a
    profile's config file sets (partitions_per_job, batch_size) back to config/config.yaml's, then that backend's file."""
    if config.get("backend", "local") == backend:
        return config
    # The profiles' own files are partial configs (merged over config/config.yaml): read as written, not validated.
    profile_files = [f for f in sorted(Path("config").glob("*.yaml")) if f != DEFAULT_CONFIG]
    profile_keys = {k for f in profile_files for k in (read_config_file(f).get("inference") or {})}
    defaults = (load_config([DEFAULT_CONFIG]) if DEFAULT_CONFIG.exists() else {}).get("inference", {})
    own = Path("config", f"{backend}.yaml")
    own_inference = (read_config_file(own).get("inference") or {}) if own.exists() else {}
    inference = {k: v for k, v in config.get("inference", {}).items() if k not in profile_keys}
    inference |= {k: defaults[k] for k in profile_keys if k in defaults} | own_inference
    return {**config, "backend": backend, "inference": inference}


def lambda_in_flight(config: dict) -> int:
    """Invocations in flight under profiles/lambda: the config's cap (lambda.max_in_flight) within the account's limit."""
    cap = config.get("lambda", {}).get("max_in_flight") or LAMBDA_DEFAULT_IN_FLIGHT
    return min(int(cap), LAMBDA_ACCOUNT_CONCURRENCY)


def settings_from_config(config: dict, backend: Backend, data_bytes: float, **override: Any) -> Settings:
    """Settings with the workflow config's partition size, inference, Lambda block and prices; `override` wins."""
    lam = config.get("lambda", {})
    inf = config.get("inference", {})
    cost = config.get("cost", {})
    base: dict[str, Any] = dict(
        backend=backend,
        data_bytes=data_bytes,
        partition_mb=config.get("partition_mb", 100),
        threads=inf.get("threads", 2),
        precision=inf.get("precision", "fp32"),
        runtime=inf.get("runtime", "auto"),
        partitions_per_job=inf.get("partitions_per_job", "auto"),
        batch_size=inf.get("batch_size", 512),
        device=inf.get("device", "auto"),
        memory_mb=lam.get("memory_mb", 2048),
        architecture=lam.get("architecture", "x86_64"),
        timeout_s=lam.get("timeout_s", LAMBDA_MAX_TIMEOUT_S),
        ephemeral_storage_mb=lam.get("ephemeral_storage_mb", FREE_EPHEMERAL_MB),
        cpu_hour_usd=cost.get("cpu_hour_usd", 0.0),
        gpu_hour_usd=cost.get("gpu_hour_usd", 0.0),
        lambda_prices=lambda_prices(lam.get("prices")),
        data_in_s3=str(config.get("dataset", "")).startswith("s3://"),  # nothing to upload from this host
    )
    if backend == "lambda":
        base["concurrency"] = lambda_in_flight(config)
    base.update({k: v for k, v in override.items() if v is not None})
    return Settings(**base)


def sinfo_cluster(gpu: bool) -> tuple[int, int, int] | None:
    """(nodes, cores per node, GPUs) of the default Slurm partition, or of the first with GPUs; None without sinfo."""
    import subprocess

    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P|%D|%c|%G"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    rows = []
    for line in out.splitlines():
        name, nodes, cpus, gres = (line.split("|") + ["", "", ""])[:4]
        per_node = sum(int(n) for n in re.findall(r"gpu(?::[\w.-]+)?:(\d+)", gres))
        if nodes.isdigit() and cpus.rstrip("+").isdigit():
            rows.append((name.endswith("*"), int(nodes), int(cpus.rstrip("+")), per_node * int(nodes)))
    pick = [r for r in rows if r[3]] if gpu else [r for r in rows if r[0]] or rows
    return (pick[0][1], pick[0][2], pick[0][3]) if pick else None


def workflow_settings(context: dict, data_bytes: float) -> Settings:
    """The plan settings of a workflow invocation from its plan context (write_plan_context's file).

    Lambda runs the config's in-flight cap at once; a local run fits cores // threads jobs at once; a
    cluster's nodes, cores and GPUs come from sinfo (without it: one node of `cores`), with no queue wait.
    """
    config, backend = context["config"], context["backend"]
    over: dict[str, Any] = {"cores": context.get("cores") or os.cpu_count() or 1}
    if backend in ("slurm", "slurm-gpu"):
        found = sinfo_cluster(backend == "slurm-gpu")
        if found:
            over.update(nodes=found[0], cores_per_node=found[1], gpus=found[2] or 1, cluster="sinfo")
        else:
            over.update(nodes=1, cores_per_node=over["cores"], gpus=1, cluster="no sinfo: one node of the run's cores")
    return settings_from_config(config, backend, data_bytes, **over)


def plan_vs_actual(plan: Plan, summary: dict, cost: dict, runtime_ran: str = "") -> dict:
    """The estimate beside the run's measured wall time, usage and cost, with actual / estimate ratios; flagged when
    the runtime that ran (`runtime_ran`, from the sidecars) is not the one the calibration measured."""
    est = {line["resource"]: line["quantity"] for line in plan.lines}
    act = {line["resource"]: line["quantity"] for line in cost["lines"]}

    def row(name: str, unit: str, e: float, a: float) -> dict:
        return {"quantity": name, "unit": unit, "estimate": e, "actual": a, "ratio": a / e if e else None}

    # run_summary's wall_s runs from the first job's start to the last one's end (with a Lambda upload): no merge.
    rows = [row("wall_s", "s", plan.run_wall_s, summary["wall_s"]), row("partitions", "partitions", plan.partitions, summary["partitions"])]
    rows += [
        row(line["resource"], line["unit"], est[line["resource"]], act[line["resource"]])
        for line in plan.lines
        if line["resource"] in act and (est[line["resource"]] or act[line["resource"]])
    ]
    rows.append(row("cost_usd", "USD", plan.cost_usd, cost["total_usd"]))
    ratio = rows[0]["ratio"]
    flags = [f.split(":")[0] for f in plan.flags]
    if runtime_ran and runtime_ran != plan.calibration["runtime"] and "RUNTIME" not in flags:
        flags.append("RUNTIME")  # the speed planned is another engine's: the ratio does not test the calibration
    return {
        "backend": plan.backend,
        "rows": rows,
        "time_ratio": ratio,
        "cost_ratio": rows[-1]["ratio"],
        "time_within_factor_2": ratio is not None and 0.5 <= ratio <= 2.0,
        "time_within_30_percent": ratio is not None and 0.7 <= ratio <= 1.3,
        "runtime_planned": plan.calibration["runtime"],
        "runtime_ran": runtime_ran,
        "flags": flags,
        "calibration": plan.calibration,
        "estimate": {**json_row(plan), "lines": plan.lines, "assumptions": plan.assumptions},
        "note": "estimate made with the calibration the run named (not the one it measured); ratio = actual / estimate",
    }


def run_estimate(context: dict, runs: list[dict], cost_backend: str, summary: dict, cost: dict) -> dict:
    """Plan-vs-actual for a finished run: the estimate for its rows under its plan context, beside the actuals."""
    from cosmicai.planning import calibration

    backend = calibration.plan_backend(runs, cost_backend)
    if context["backend"] == "local" and backend == "local-gpu":  # one GPU job slot at a time: slurm-gpu's model with one GPU
        context = {**context, "backend": "slurm-gpu"}
    elif context["backend"] == "local" and backend != "local":
        context = {**context, "backend": backend}  # what the sidecars say ran (e.g. Slurm jobs without the slurm config file)
    s = workflow_settings(context, summary["rows"] * ROW_BYTES)
    cals: dict[str, Calibration] = calibration.load(context.get("calibration") or None)
    ran = ",".join(sorted({str(r.get("runtime")) for r in runs if r.get("runtime")}))
    return plan_vs_actual(estimate(s, cals), summary, cost, ran)
