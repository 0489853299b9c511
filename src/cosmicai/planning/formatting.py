"""Plans as text: the comparison table with its assumptions, CSV, JSON, and the workflow's one plan block."""

from __future__ import annotations

import csv
import io
import json
from typing import Literal

from cosmicai.planning.estimate import TERMS, Plan, json_row
from cosmicai.planning.units import human_size, human_time

Format = Literal["table", "csv", "json"]


def _table(plans: list[Plan]) -> list[str]:
    cols = [
        "backend",
        "data",
        "MiB/part",
        "memory",
        "prec",
        "jobs",
        "at once",
        "waves",
        "job time",
        "upload",
        "queue",
        "dispatch",
        "cold",
        "compute",
        "merge",
        "wall time",
        "bound by",
        "usage",
        "cost (USD)",
        "flags",
    ]
    table = [
        [
            p.backend,
            human_size(p.settings.data_bytes),
            f"{p.settings.partition_mb:g}",
            f"{p.settings.memory_mb}" if p.backend == "lambda" else "-",
            p.settings.precision,
            f"{p.jobs:,}",
            f"{p.concurrency:,}",
            f"{p.waves:,}",
            human_time(p.job_s),
            *(human_time(p.terms[term]) if p.terms[term] else "-" for term in TERMS),
            human_time(p.wall_s),
            p.bound_by,
            p.usage(),
            f"{p.cost_usd:.4f}" if p.priced else "unpriced",
            ",".join(f.split(":")[0] for f in p.flags) or "-",
        ]
        for p in plans
    ]
    widths = [max(len(c), *(len(r[i]) for r in table)) for i, c in enumerate(cols)]
    right = {1, 2, 3, 5, 6, 7, *range(8, 16), 18}

    def fmt_row(r: list[str]) -> str:
        return "  ".join(v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths))).rstrip()

    return [fmt_row(cols), fmt_row(["-" * w for w in widths]), *map(fmt_row, table)]


def format_plans(plans: list[Plan], fmt: Format = "table", detail: bool = True) -> str:
    """The plans as an aligned table (with each distinct plan's flags and assumptions when `detail`), CSV, or JSON."""
    if fmt == "json":
        return json.dumps(
            [{**json_row(p), "lines": p.lines, "assumptions": p.assumptions, "calibration": p.calibration} for p in plans], indent=2
        )
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(plans[0].row()))
        writer.writeheader()
        writer.writerows(p.row() for p in plans)
        return out.getvalue().rstrip("\n")
    first = plans[0]
    lines = []
    if len({(p.settings.data_bytes, p.settings.partition_mb) for p in plans}) == 1:
        lines.append(
            f"{human_size(first.settings.data_bytes)} ({first.settings.rows:,} rows) in partitions of "
            f"{first.settings.partition_mb:g} MiB: {first.partitions:,} partitions of {first.rows_per_partition:,} rows"
        )
    lines += _table(plans)
    if detail and len(plans) <= 8:
        for p in plans:
            lines.append(f"\n{p.backend}:")
            lines += [f"  ! {f}" for f in p.flags]
            lines += [f"  - {a}" for a in p.assumptions[1:]]
    elif detail:
        lines.append(f"\n{len(plans)} plans; calibrations: " + "; ".join(sorted({p.calibration["label"] for p in plans})))
    return "\n".join(lines)


def _settings(plan: Plan) -> str:
    """The settings a backend's plan ran with, in a few words (its profile's: batch, threads, device, memory)."""
    s = plan.settings
    if plan.backend == "lambda":
        return f"{s.memory_mb} MB {s.architecture}, {s.precision}, batch {s.batch_size}, concurrency {s.concurrency or 'default'}"
    return f"{s.threads} threads, {s.device}, {s.precision}, batch {s.batch_size}, {plan.partitions_per_job} partition(s) per job"


def format_dry_run(plan: Plan, backend: str, recommendation: str = "") -> str:
    """The one block a dry-run prints: partitions, jobs, the estimate and its calibration (and a recommendation if asked)."""
    flags = "; ".join(plan.flags) or "none"
    s = plan.settings
    per_job = f", {plan.partitions_per_job} partitions per job" if backend != "lambda" and plan.partitions_per_job > 1 else ""
    terms = ", ".join(f"{name} {human_time(s_)}" for name, s_ in plan.biggest_terms(3))
    lines = [
        f"cosmicai plan for this run ({backend}) " + "-" * 40,
        f"  data         {s.rows:,} rows, {human_size(s.data_bytes)}: {plan.partitions:,} partitions of "
        f"{s.partition_mb:g} MiB ({plan.rows_per_partition:,} rows each)",
        f"  jobs         {plan.jobs:,} {'invocations' if backend == 'lambda' else 'inference jobs'}{per_job}, {plan.concurrency:,} at once",
        f"  settings     {_settings(plan)}",
        f"  wall time    {human_time(plan.wall_s)}, bound by {plan.bound_by}: {terms} ({plan.waves:,} wave(s))",
        f"  cost         {plan.cost_text()} ({plan.usage()})",
        f"  flags        {flags}",
        f"  calibration  {plan.calibration['label']}",
    ]
    if recommendation:
        lines += ["  " + line for line in recommendation.splitlines()]
    lines.append("  (cosmicai plan --compare ... for the other backends; --config plan_recommend=true for a recommendation)")
    return "\n".join(lines)
