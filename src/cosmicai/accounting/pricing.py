"""Prices: the one home of every rate and formula that turns usage into dollars.

Both the estimate (cosmicai.planning.estimate) and the accounting of a finished run
(cosmicai.accounting.cost, lambda_cost, slurm) price their usage here, so a plan and the run it
plans are priced by the same arithmetic. Lambda bills each invocation's duration rounded up to the
millisecond (Init Duration included, since August 2025) times its memory in GB, per architecture,
plus a price per request and one per GB-s of /tmp above the free 512 MB; clusters bill CPU-hours and
GPU-hours at the config's rates (cost.cpu_hour_usd, cost.gpu_hour_usd). A rate of 0 means unpriced,
not free: plans over unpriced usage say so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from cosmicai.aws.settings import FREE_EPHEMERAL_MB

# Defaults: us-east-1, first tier, as listed on aws.amazon.com/lambda/pricing on 2026-11-28.
DEFAULT_PRICES = {
    "date": "2026-11-28",
    "x86_64_gb_s": 0.0000166667,
    "arm64_gb_s": 0.0000133334,
    "requests_per_million": 0.20,
    "ephemeral_gb_s": 0.0000000309,
}
ARCHITECTURES = ("x86_64", "arm64")


def cost_line(resource: str, quantity: float, unit: str, rate: float) -> dict:
    """A cost-summary line: resource, quantity and unit, rate and the cost it comes to (USD)."""
    return {"resource": resource, "quantity": quantity, "unit": unit, "rate_usd": rate, "cost_usd": quantity * rate}


def lambda_prices(overrides: Mapping | None = None) -> dict:
    """The Lambda prices: the defaults, overridden key by key by the config's `lambda.prices`."""
    return {**DEFAULT_PRICES, **(overrides or {})}


def billed_s(duration_s: float) -> float:
    """Lambda's billed seconds for a duration: rounded up to the millisecond."""
    return math.ceil(round(duration_s * 1000, 6)) / 1000


def gb_seconds(seconds: float, memory_mb: float) -> float:
    """Compute GB-seconds of `seconds` billed at `memory_mb`."""
    return seconds * memory_mb / 1024


def ephemeral_gb_seconds(seconds: float, ephemeral_storage_mb: float) -> float:
    """Billed GB-seconds of /tmp above the free 512 MB."""
    return seconds * max(0.0, ephemeral_storage_mb - FREE_EPHEMERAL_MB) / 1024


def lambda_lines(gb_s: Mapping[str, float], requests: float, ephemeral_gb_s: float, prices: Mapping) -> list[dict]:
    """Priced Lambda usage: GB-s per architecture used (x86_64 when none is), requests, /tmp above 512 MB."""
    prices = lambda_prices(prices)
    used = [arch for arch in ARCHITECTURES if gb_s.get(arch)] or ["x86_64"]
    lines = [cost_line(f"lambda_{arch}_gb_s", gb_s.get(arch, 0.0), "GB-s", float(prices[f"{arch}_gb_s"])) for arch in used]
    lines.append(cost_line("lambda_requests", requests, "requests", float(prices["requests_per_million"]) / 1e6))
    lines.append(cost_line("lambda_ephemeral_gb_s", ephemeral_gb_s, "GB-s", float(prices["ephemeral_gb_s"])))
    return lines


def hour_lines(cpu_hours: float, gpu_hours: float, rates: Mapping) -> list[dict]:
    """Priced cluster usage: CPU-hours and GPU-hours at the config's cost.cpu_hour_usd and cost.gpu_hour_usd."""
    return [
        cost_line("cpu_hours", cpu_hours, "CPU-h", float(rates.get("cpu_hour_usd", 0.0))),
        cost_line("gpu_hours", gpu_hours, "GPU-h", float(rates.get("gpu_hour_usd", 0.0))),
    ]


def unpriced(lines: list[dict]) -> list[str]:
    """The resources used but not priced (rate 0): such a total is a lower bound, not a free run."""
    return [line["resource"] for line in lines if line["quantity"] and not line["rate_usd"] and line["unit"] != "SU"]
