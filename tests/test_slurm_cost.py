"""Slurm cost lines and per-job table from sacct records (a fake sacct query: no Slurm needed)."""

from __future__ import annotations

import subprocess

import pytest

from cosmicai.accounting import slurm as sa
from cosmicai.accounting.cost import cost_summary
from cosmicai.errors import CosmicaiError


def record(job_id: str, state: str = "COMPLETED", cpus: int = 2, gpus: int = 0, elapsed: int = 36, rss: float | None = 900.0) -> dict:
    """One aggregated sacct job, as query_jobs returns it."""
    return {
        "job_id": job_id,
        "rule": "infer_partition",
        "state": state,
        "partition": "debug",
        "node_list": "n1",
        "elapsed_s": elapsed,
        "alloc_cpus": cpus,
        "alloc_gpus": gpus,
        "alloc_mem_mb": 1500.0,
        "max_rss_mb": rss,
    }


def run(part: int, job_id: str, device: str = "cpu") -> dict:
    """One inference sidecar."""
    return {
        "partition": f"part_{part:05d}.h5",
        "rows": 100,
        "total_s": 10.0,
        "compute_s": 8.0,
        "device": device,
        "slurm_job_id": job_id,
        "started_at": 0.0,
        "ended_at": 10.0,
    }


class FakeSacct:
    """Answers with the given records per call (the last one repeated), counting calls."""

    def __init__(self, *answers: list[dict]) -> None:
        self.answers, self.calls = list(answers), 0

    def __call__(self, job_ids: list[str]) -> list[dict]:
        self.calls += 1
        return [r for r in self.answers[min(self.calls, len(self.answers)) - 1] if r["job_id"] in job_ids]


RATES = {"cpu_hour_usd": 0.5, "gpu_hour_usd": 3.0, "su_per_cpu_hour": 1.0, "su_per_gpu_hour": 10.0}


def test_lines_price_cpu_and_gpu_hours_and_count_service_units() -> None:
    sacct = FakeSacct([record("7", cpus=2, elapsed=36), record("8", cpus=4, gpus=1, elapsed=360)])
    lines = {line["resource"]: line for line in sa.slurm_usage([run(0, "7"), run(1, "8", "cuda:0")], RATES, sacct)}
    assert lines["cpu_hours"]["quantity"] == pytest.approx((2 * 36 + 4 * 360) / 3600)
    assert lines["gpu_hours"]["quantity"] == pytest.approx(0.1)
    assert lines["gpu_hours"]["cost_usd"] == pytest.approx(0.3)
    assert lines["service_units"]["quantity"] == pytest.approx(0.42 + 1.0) and lines["service_units"]["cost_usd"] == 0
    no_su = sa.slurm_usage([run(0, "7")], {"cpu_hour_usd": 1.0, "gpu_hour_usd": 0.0}, sacct)
    assert [line["resource"] for line in no_su] == ["cpu_hours", "gpu_hours"]


def test_job_table_beside_timings_one_row_per_job() -> None:
    # One job that ran two partitions (e.g. Snakemake inside an allocation) is priced once.
    sacct = FakeSacct([record("7"), record("9", gpus=1)])
    rows = sa.slurm_jobs([run(0, "7"), run(1, "7"), run(2, "9", "cuda:0")], RATES, sacct)
    assert [r["job_id"] for r in rows] == ["7", "9"]
    assert rows[0]["partitions"] == ["part_00000.h5", "part_00001.h5"] and rows[0]["rows"] == 200
    assert rows[0]["total_s"] == 20.0 and rows[0]["elapsed_s"] == 36 and rows[0]["max_rss_mb"] == 900.0
    assert rows[1]["cost_usd"] == pytest.approx(36 / 3600 * (2 * 0.5 + 3.0))


def test_cost_summary_for_slurm_has_lines_and_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sa, "query_jobs", FakeSacct([record("7")]))
    cost = cost_summary([run(0, "7")], "slurm", RATES, {"wall_s": 40.0, "rows": 100})
    assert cost["backend"] == "slurm" and cost["jobs"][0]["job_id"] == "7"
    assert cost["total_usd"] == pytest.approx(72 / 3600 * 0.5)


def test_waits_a_bounded_time_for_records_to_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sa.time, "sleep", lambda s: None)
    sacct = FakeSacct([record("7", state="RUNNING")], [record("7", rss=None)], [record("7")])
    assert sa.accounted_jobs(["7"], sacct)["7"]["max_rss_mb"] == 900.0 and sacct.calls == 3
    never = FakeSacct([record("7", rss=None)])
    assert sa.accounted_jobs(["7"], never, waits=4)["7"]["max_rss_mb"] is None and never.calls == 5


def test_missing_record_or_sacct_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sa.time, "sleep", lambda s: None)
    with pytest.raises(CosmicaiError, match="no accounting record for job.s. 8"):
        sa.accounted_jobs(["7", "8"], FakeSacct([record("7")]), waits=2)

    def missing(job_ids: list[str]) -> list[dict]:
        raise FileNotFoundError("sacct")

    def refused(job_ids: list[str]) -> list[dict]:
        raise subprocess.CalledProcessError(1, ["sacct"], stderr="sacct: error: Problem talking to the database\n")

    with pytest.raises(CosmicaiError, match="sacct: not found"):
        sa.accounted_jobs(["7"], missing)
    with pytest.raises(CosmicaiError, match="exit status 1: sacct: error: Problem talking to the database"):
        sa.accounted_jobs(["7"], refused)
