"""Reporting commands: metrics, plots, run and cost summaries, report tables."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _metrics(a: argparse.Namespace) -> None:
    from cosmicai.reporting.metrics import compute_metrics

    result = compute_metrics(a.predictions, a.output, a.by_zspec, a.by_rmag)
    print(json.dumps(result["metrics"] if result["metrics"] else result["reason"], indent=2))


def _plots(a: argparse.Namespace) -> None:
    from cosmicai.reporting import plots

    plots.plot_z_pred_vs_spec(a.predictions, f"{a.outdir}/z_pred_vs_z_spec.png")
    plots.plot_delta_vs_z(a.predictions, f"{a.outdir}/delta_vs_z_spec.png")
    plots.plot_partition_timings(a.sidecars, f"{a.outdir}/partition_timings.png")


def _summarize(a: argparse.Namespace) -> None:
    from cosmicai.reporting.summary import write_summaries

    rates = json.loads(a.rates) if a.rates else {}
    plan = json.loads(Path(a.plan).read_text()) if a.plan else None
    gate = json.loads(Path(a.accuracy_gate).read_text()) if a.accuracy_gate else None
    summary, cost = write_summaries(
        a.sidecars, a.backend, rates, a.run_output, a.cost_output, a.manifest, a.predictions_dir, plan, accuracy_gate=gate
    )
    print(
        f"{summary['rows']} rows in {summary['wall_s']:.1f} s wall ({summary['samples_per_s']:.0f} samples/s), cost ${cost['total_usd']:.4f}"
    )
    if gate:
        from cosmicai.int8_gate import gate_line

        print(gate_line(gate))
    pva = cost.get("plan_vs_actual")
    if pva and "error" in pva:
        print(f"plan: no estimate: {pva['error']}", file=sys.stderr)
    elif pva:
        print(f"plan: {pva['rows'][0]['estimate']:.1f} s estimated ({pva['backend']}), actual / estimate = {pva['time_ratio']:.2f}")


def _report_tables(a: argparse.Namespace) -> None:
    from cosmicai.reporting.tables import write_tables

    for path in write_tables(a.metrics, a.run_summary, a.cost_summary, a.outdir):
        print(path)


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's subcommands."""
    s = sub.add_parser("metrics", help="photo-z metrics of a predictions table")
    s.add_argument("predictions")
    s.add_argument("--output", required=True)
    s.add_argument("--by-zspec", help="CSV of metrics binned by z_spec")
    s.add_argument("--by-rmag", help="CSV of metrics binned by r magnitude")
    s.set_defaults(fn=_metrics)
    s = sub.add_parser("plots", help="diagnostic PNG plots")
    s.add_argument("predictions")
    s.add_argument("--sidecars", nargs="+", required=True)
    s.add_argument("--outdir", required=True)
    s.set_defaults(fn=_plots)
    s = sub.add_parser("summarize", help="run summary and cost summary from the timing sidecars")
    s.add_argument("--backend", default=None, help="local, slurm or lambda (default: detected from the sidecars)")
    s.add_argument("--sidecars", nargs="+", required=True)
    s.add_argument("--rates", help="JSON object of prices, e.g. '{\"cpu_hour_usd\": 0.02}'")
    s.add_argument("--run-output", required=True)
    s.add_argument("--cost-output", required=True)
    s.add_argument("--manifest", help="partition manifest: record rows in (manifest) and rows out (predictions) per partition")
    s.add_argument("--predictions-dir", help="per-partition predictions (with --manifest)")
    s.add_argument(
        "--plan",
        help="the run's plan context file (results/plan/context.json): put the plan's estimate beside the actuals (see cosmicai.planning.context)",
    )
    s.add_argument("--accuracy-gate", help="the int8 accuracy gate's report (cosmicai quantize --gate-report): put in the run summary")
    s.set_defaults(fn=_summarize)
    s = sub.add_parser("report-tables", help="HTML tables of the metrics, run and cost summaries and plan-vs-actual, for the report")
    s.add_argument("--metrics", required=True)
    s.add_argument("--run-summary", required=True)
    s.add_argument("--cost-summary", required=True)
    s.add_argument("--outdir", required=True)
    s.set_defaults(fn=_report_tables)
