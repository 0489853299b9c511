"""Lambda cost from the sidecars' `lambda` records (the REPORT lines), and the paper's figure beside it.

rates["lambda"] holds the prices (config `lambda.prices`): x86_64_gb_s, arm64_gb_s,
requests_per_million, ephemeral_gb_s (per GB-s of /tmp above 512 MB) and the date they were read.
"""

from __future__ import annotations

from cosmicai.accounting.pricing import ephemeral_gb_seconds, gb_seconds, lambda_lines
from cosmicai.aws.settings import FREE_EPHEMERAL_MB
from cosmicai.data.dataset import ROW_BYTES

# CAI (Staylor et al. 2025): 12.6 GiB of SDSS (659,178 samples) on Lambda; partition MiB -> requests.
PAPER = {"rows": 659_178, "requests": {25: 517, 50: 259, 75: 173, 100: 130}, "total_usd_range": [0.16, 0.38]}


def lambda_usage(runs: list[dict], rates: dict) -> list[dict]:
    """Billed GB-seconds per architecture, requests, and ephemeral storage above 512 MB, priced."""
    gb_s = {"x86_64": 0.0, "arm64": 0.0}
    ephemeral_gb_s = 0.0
    for r in runs:
        lam = r["lambda"]
        seconds = lam["billed_ms"] / 1000  # REPORT's Billed Duration: already rounded by Lambda
        gb_s[lam.get("architecture", "x86_64")] += gb_seconds(seconds, lam["memory_mb"])
        ephemeral_gb_s += ephemeral_gb_seconds(seconds, lam.get("ephemeral_storage_mb", FREE_EPHEMERAL_MB))
    return lambda_lines(gb_s, len(runs), ephemeral_gb_s, rates.get("lambda", {}))


def paper_reference(runs: list[dict], total_usd: float) -> dict:
    """This run's cost scaled to the paper's dataset, beside the paper's requests for the nearest partitioning."""
    rows = sum(r["rows"] for r in runs)
    partition_mib = rows * ROW_BYTES / len(runs) / 2**20 if runs else 0.0
    nearest = min(PAPER["requests"], key=lambda mb: abs(mb - partition_mib))
    comparable = abs(nearest - partition_mib) <= 0.1 * nearest
    return {
        "paper": "CAI (Staylor et al. 2025): 12.6 GiB, 659,178 samples",
        "paper_total_usd_range": PAPER["total_usd_range"],
        "partition_mib": partition_mib,
        "paper_partition_mb": nearest if comparable else None,
        "paper_requests": PAPER["requests"][nearest] if comparable else None,
        "scaled_to_paper_rows_usd": total_usd * PAPER["rows"] / rows if rows else 0.0,
        "note": "the partitioning matches one of the paper's"
        if comparable
        else f"partitions of {partition_mib:.1f} MiB: not one of the paper's 25/50/75/100 MB; the scaled cost is indicative only",
    }


def lambda_invocations(runs: list[dict], rates: dict) -> list[dict]:
    """One row per invocation: cold or warm, REPORT durations and memory, retries, and its price."""
    rows = []
    for r in runs:
        lam = r["lambda"]
        priced = lambda_usage([r], rates)
        rows.append(
            {
                "partition": r["partition"],
                "request_id": lam["request_id"],
                "cold_start": lam["cold_start"],
                **{k: lam[k] for k in ("duration_ms", "billed_ms", "init_ms", "memory_mb", "max_memory_mb", "attempts", "throttles")},
                "cost_usd": sum(line["cost_usd"] for line in priced),
            }
        )
    return rows
