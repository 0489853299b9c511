"""Small HTML tables of a run's JSON summaries, for Snakemake's HTML report (`snakemake --report`)."""

from __future__ import annotations

import html
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cosmicai.atomic import atomic_path

_STYLE = (
    "<style>body{font-family:sans-serif;font-size:14px}table{border-collapse:collapse;margin:0 0 1em}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}"
    "td:first-child,th:first-child{text-align:left}caption{text-align:left;font-weight:bold;padding:4px 0}</style>"
)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e6 else f"{v:,.0f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    if v is None:
        return "-"
    return str(v)


def table(rows: Iterable[dict], caption: str, columns: list[str] | None = None) -> str:
    """An HTML table of dicts (columns: the first row's keys unless given)."""
    rows = list(rows)
    if not rows:
        return f"<p><b>{html.escape(caption)}</b>: none</p>"
    columns = columns or list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><caption>{html.escape(caption)}</caption><tr>{head}</tr>{body}</table>"


def _pairs(obj: dict, caption: str) -> str:
    return table([{"field": k, "value": v} for k, v in obj.items() if not isinstance(v, (dict, list))], caption)


def _page(title: str, *parts: str) -> str:
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>{_STYLE}</head><body>{''.join(parts)}</body></html>\n"


def _write(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_tables(
    metrics: str | os.PathLike, run_summary: str | os.PathLike, cost_summary: str | os.PathLike, outdir: str | os.PathLike
) -> list[Path]:
    """metrics.html, run_summary.html, cost_summary.html and plan_vs_actual.html under `outdir`."""
    m, run, cost = (json.loads(Path(p).read_text()) for p in (metrics, run_summary, cost_summary))
    outdir = Path(outdir)
    written = []

    metric_rows = [{"metric": k, "value": v} for k, v in (m.get("metrics") or {}).items()]
    page = _page(
        "metrics", table(metric_rows, "photo-z metrics") if metric_rows else f"<p>no metrics: {html.escape(str(m.get('reason')))}</p>"
    )
    written.append(outdir / "metrics.html")
    _write(written[-1], page)

    per = run.get("per_partition", [])
    written.append(outdir / "run_summary.html")
    _write(written[-1], _page("run summary", _pairs(run, "run"), table(per, "per partition")))

    parts = [_pairs(cost, "cost"), table(cost.get("lines", []), "usage lines", ["resource", "quantity", "unit", "rate_usd", "cost_usd"])]
    if cost.get("jobs"):
        parts.append(table(cost["jobs"], "per job"))
    if cost.get("paper"):
        parts.append(_pairs(cost["paper"], "beside the paper"))
    written.append(outdir / "cost_summary.html")
    _write(written[-1], _page("cost summary", *parts))

    pva = cost.get("plan_vs_actual")
    if pva and "error" in pva:
        pva_parts = [f"<p>no estimate: {html.escape(pva['error'])}</p>"]
    elif pva:
        est = pva["estimate"]
        pva_parts = [
            table(
                pva["rows"],
                f"plan vs actual ({pva['backend']}): ratio = actual / estimate",
                ["quantity", "unit", "estimate", "actual", "ratio"],
            ),
            f"<p>time within a factor of 2: <b>{pva['time_within_factor_2']}</b>. {html.escape(pva['note'])}.</p>",
            table([{"assumption": a} for a in est["assumptions"]], "what the estimate assumed"),
        ]
    else:
        pva_parts = ["<p>no estimate recorded for this run</p>"]
    written.append(outdir / "plan_vs_actual.html")
    _write(written[-1], _page("plan vs actual", *pva_parts))
    return written
