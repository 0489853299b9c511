"""The workflow through a real Slurm (scripts/slurm-local.sh): profiles/slurm and profiles/slurm-gpu end to end.

An inference job is a group of partitions_per_job partitions (rule infer_job): one Slurm job, one
model load, each partition with its own predictions and sidecar. The runs need the local Slurm with
accounting; they skip when it is down, and fail instead in CI (CI set), where .ci/run starts it.
Dry-run planning and the conda env file need no Slurm.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from helpers.cli import REPO, env_with_venv
from helpers.slurm import require_slurm, sacct_states

from cosmicai.accounting.slurm import query_jobs
from cosmicai.data.synth import synthesize

INIT_WAIT = "2"  # seconds before the plugin's first sacct poll (the profile's 10 s would dominate the tests)
RATES = {"cpu_hour_usd": 0.05, "gpu_hour_usd": 2.5, "su_per_cpu_hour": 1.0, "su_per_gpu_hour": 0.0}
PARTS = [f"part_{i:05d}" for i in range(6)]


@pytest.fixture(scope="module")
def slurm() -> None:
    require_slurm()


def per_job(k: int) -> list[str]:
    """--config setting partitions_per_job (beats the profile's config/slurm*.yaml)."""
    return ["--config", f"inference={{partitions_per_job: {k}}}"]


def snakemake_cmd(profile: str, config: Path, *args: str) -> list[str]:
    """The snakemake command line for a profile, with the test config and a short first status check."""
    cmd = ["snakemake", "-s", str(REPO / "workflow" / "Snakefile"), "--profile", str(REPO / "profiles" / profile)]
    if profile.startswith("slurm"):
        cmd += ["--cosmicai-slurm-init-seconds-before-status-checks", INIT_WAIT]
    else:
        cmd += ["--cores", "2"]
    cmd += list(args) + ["--configfile", str(config)]
    if profile.startswith("slurm"):  # the profile's own config file (backend, partitions_per_job), as users name it too
        cmd.append(str(REPO / "config" / f"{profile}.yaml"))
    return cmd


def run_workflow(workdir: Path, profile: str, config: Path, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    """Run the workflow in `workdir`; return the process and its wall time in seconds."""
    workdir.mkdir(parents=True, exist_ok=True)
    t = time.monotonic()
    proc = subprocess.run(snakemake_cmd(profile, config, *args), cwd=workdir, capture_output=True, text=True, env=env_with_venv())
    return proc, time.monotonic() - t


def write_config(directory: Path, dataset: Path, checkpoint: Path, **override) -> Path:
    """The default config on `dataset` (row-range partitions, no copies), priced; `override` replaces top-level keys."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config.update({"dataset": str(dataset), "checkpoint": str(checkpoint), "partition_mb": 1, **override})
    config["cost"].update(RATES)
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path, random_checkpoint: Path) -> Path:
    """The tiny dataset (300 galaxies) in six partitions of 1 MiB (51 rows), as row ranges of the one file."""
    return write_config(tmp_path_factory.mktemp("config"), tiny_dataset, random_checkpoint)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory, config_file: Path) -> tuple[Path, float]:
    """The reference: the local profile's run of the same data."""
    workdir = tmp_path_factory.mktemp("local")
    proc, seconds = run_workflow(workdir, "local", config_file)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, seconds


def job_resources(output: str, rule: str = "infer_job") -> list[dict[str, str]]:
    """The resources Snakemake printed for each job of `rule` (dry-run or run)."""
    blocks = re.findall(rf"^\s*(?:local)?rule {rule}:\n(.*?)(?:^Shell command|^\s*\[)", output, flags=re.S | re.M)
    found = []
    for block in blocks:
        line = re.search(r"^\s+resources: (.*)$", block, flags=re.M).group(1)
        found.append(dict(item.split("=", 1) for item in line.split(", ")))
    return found


def sidecars(workdir: Path) -> dict[str, dict]:
    """Partition name -> its timing sidecar."""
    return {p.stem: json.loads(p.read_text()) for p in sorted((workdir / "results" / "predictions").glob("part_*.json"))}


def stamps(workdir: Path) -> dict[str, tuple[int, bytes]]:
    """Partition name -> (modification time, bytes) of its sidecar: unchanged when a rerun reuses it."""
    return {p.stem: (p.stat().st_mtime_ns, p.read_bytes()) for p in (workdir / "results" / "predictions").glob("part_*.json")}


def max_abs_dz(a: Path, b: Path) -> float:
    """Largest |z_pred difference| between two merged prediction files (same rows, same order)."""
    ta, tb = pq.read_table(a / "results" / "predictions.parquet"), pq.read_table(b / "results" / "predictions.parquet")
    np.testing.assert_array_equal(ta.column("object_id").to_numpy(), tb.column("object_id").to_numpy())
    return float(np.max(np.abs(ta.column("z_pred").to_numpy() - tb.column("z_pred").to_numpy())))


def time_limits(job_ids: list[str]) -> dict[str, str]:
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", f"--jobs={','.join(job_ids)}", "--format=JobIDRaw,Timelimit"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return dict(line.split("|") for line in out.split())


def check_jobs(workdir: Path, output: str, partition: str, gpus: int, n_jobs: int) -> list[dict]:
    """Each inference job is one Slurm job, completed, with the partition, cores, memory, time and GPUs asked for, that
    inferred its partitions with one model load; its record lists them."""
    runs = sidecars(workdir)
    assert sorted(runs) == PARTS
    asked = job_resources(output)
    assert len(asked) == n_jobs and {a["slurm_partition"] for a in asked} == {partition}
    job_ids = sorted({r["slurm_job_id"] for r in runs.values()})
    assert len(job_ids) == n_jobs and all(job_ids)
    accounted = {j["job_id"]: j for j in query_jobs(job_ids)}
    limits = time_limits(job_ids)
    records = sorted((workdir / "results" / "predictions" / "jobs").glob("job_*.json"))
    assert len(records) == n_jobs
    for record_path in records:
        record = json.loads(record_path.read_text())
        in_job = record["partitions"]
        (job_id,) = {r["slurm_job_id"] for r in in_job}  # one Slurm job for the whole job's partitions
        job = accounted[job_id]
        res = next(a for a in asked if int(a["mem_mb"]) == job["alloc_mem_mb"])
        assert job["state"] == "COMPLETED" and job["rule"] == "infer_job"
        assert job["partition"] == partition
        assert job["alloc_cpus"] == int(res["cpus_per_task"]) == in_job[0]["threads"] == 2
        assert job["alloc_gpus"] == gpus
        assert 0 < job["max_rss_mb"] < job["alloc_mem_mb"]
        assert limits[job_id] == f"00:{int(res['runtime']):02d}:00"
        # one engine for the job: the model loaded once, by the first partition; the rest reuse it
        assert [r["model_load_s"] > 0 for r in in_job] == [True] + [False] * (len(in_job) - 1)
        assert [r["partition"] for r in in_job] == [r["partition"] for r in sorted(in_job, key=lambda r: r["partition"])]
        assert record["reused"] == [] and all(runs[r["partition"]] == r for r in in_job)
        log = (workdir / "logs" / "infer_job" / f"{record['job']}.log").read_text()
        assert [ln.split(":")[0] for ln in log.splitlines() if ln.startswith("part_")] == [r["partition"] for r in in_job]
    return list(accounted.values())


def check_cost(workdir: Path, jobs: list[dict], gpus: int) -> dict:
    """The cost summary prices sacct's CPU-hours and GPU-hours and lists every job."""
    cost = json.loads((workdir / "results" / "summary" / "cost_summary.json").read_text())
    assert cost["backend"] == "slurm"
    lines = {line["resource"]: line for line in cost["lines"]}
    cpu_h = sum(j["elapsed_s"] * j["alloc_cpus"] for j in jobs) / 3600
    gpu_h = sum(j["elapsed_s"] * j["alloc_gpus"] for j in jobs) / 3600
    assert lines["cpu_hours"]["quantity"] == pytest.approx(cpu_h) and cpu_h > 0
    assert lines["gpu_hours"]["quantity"] == pytest.approx(gpu_h) and (gpu_h > 0) == bool(gpus)
    assert lines["service_units"]["quantity"] == pytest.approx(cpu_h * RATES["su_per_cpu_hour"])
    assert cost["total_usd"] == pytest.approx(cpu_h * RATES["cpu_hour_usd"] + gpu_h * RATES["gpu_hour_usd"])
    assert sorted(j["job_id"] for j in cost["jobs"]) == sorted(j["job_id"] for j in jobs)
    for row in cost["jobs"]:
        assert row["state"] == "COMPLETED" and row["alloc_gpus"] == gpus
    return cost


# --- planning and software: no Slurm needed -------------------------------------------------------


@pytest.mark.parametrize("profile,partition,gres", [("slurm", "debug", None), ("slurm-gpu", "gpu", "gpu:1")])
def test_dry_run_plans_inference_jobs_sized_for_the_device_path(
    tmp_path: Path, config_file: Path, profile: str, partition: str, gres: str | None
) -> None:
    proc, _ = run_workflow(tmp_path, profile, config_file, "-n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    # the profile's partitions_per_job (16, 512) puts the six partitions in one job
    assert re.search(r"^infer_job\s+1$", out, flags=re.M) and "This was a dry-run" in out
    assert f"--job job_00000 --partitions {' '.join(PARTS)} " in out
    (res,) = job_resources(out)
    assert res["slurm_partition"] == partition and res["cpus_per_task"] == "2" and res.get("gres") == gres
    assert int(res["runtime"]) >= 5
    if gres:  # PyTorch and CUDA on the GPU node (host memory for CUDA's libraries); no ONNX graph to export
        assert int(res["mem_mb"]) > 3000 and "rule export_onnx:" not in out and "--runtime torch" in out
    else:  # the CPU graph: no torch in the job
        assert 400 < int(res["mem_mb"]) < 1500 and "rule export_onnx:" in out
    for rule in ("partition_dataset", "export_onnx"):  # heavy steps are jobs, not on the submit host
        assert f"localrule {rule}:" not in out
    assert not (tmp_path / "results").exists() and not (tmp_path / ".snakemake" / "slurm_logs").exists()
    # three per job: two jobs, each asking for the memory of its own partitions
    proc, _ = run_workflow(tmp_path, profile, config_file, "-n", *per_job(3))
    assert re.search(r"^infer_job\s+2$", proc.stdout, flags=re.M), proc.stdout[-3000:]


def test_conda_env_matches_the_venv_pins() -> None:
    env = yaml.safe_load((REPO / "workflow" / "envs" / "cosmicai.yaml").read_text())
    pins = re.search(r"^TORCH_PINS \?= (.*)$", (REPO / "Makefile").read_text(), flags=re.M).group(1).split()
    pip = next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]
    assert "python=3.11" in env["dependencies"] and pins == pip[:2] and pip[2] == "-e ${COSMICAI_SRC}"
    files = sorted((REPO / "workflow" / "rules").glob("*.smk"))
    rules = [block for smk in files for block in re.split(r"^rule ", smk.read_text(), flags=re.M)[1:]]
    runs_package = [r for r in rules if re.search(r"^    shell:[\s\S]*?\b(cosmicai|python) ", r, flags=re.M)]
    assert len(runs_package) >= 10  # every rule that runs the package or a script (not printf) names the env
    for rule in runs_package:
        assert 'conda:\n        "../envs/cosmicai.yaml"' in rule, rule.split(":")[0]


# --- through the running Slurm ---------------------------------------------------------------------


@pytest.mark.timeout(900)  # includes the local reference run
def test_slurm_profile_end_to_end(slurm: None, config_file: Path, local_run, tmp_path: Path) -> None:
    proc, seconds = run_workflow(tmp_path, "slurm", config_file)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    jobs = check_jobs(tmp_path, out, partition="debug", gpus=0, n_jobs=1)
    assert max_abs_dz(tmp_path, local_run[0]) <= 1e-5
    cost = check_cost(tmp_path, jobs, gpus=0)
    assert all(r["device"] == "cpu" for r in sidecars(tmp_path).values())
    for rule in ("merge_predictions", "compute_metrics", "plot_results", "summarize_run"):
        assert f"localrule {rule}:" in out  # on the submit host, not submitted
    print(f"\nslurm profile: {seconds:.1f} s wall, local profile: {local_run[1]:.1f} s; cost lines {cost['lines']}")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_slurm_gpu_profile_end_to_end(slurm: None, config_file: Path, local_run, tmp_path: Path) -> None:
    proc, seconds = run_workflow(tmp_path, "slurm-gpu", config_file)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    jobs = check_jobs(tmp_path, out, partition="gpu", gpus=1, n_jobs=1)
    assert max_abs_dz(tmp_path, local_run[0]) <= 1e-5
    check_cost(tmp_path, jobs, gpus=1)
    for run in sidecars(tmp_path).values():
        # the GPU path: PyTorch, on the node's GPU where CUDA has one (this test node's is a stand-in: CPU)
        assert run["precision"] == "fp32" and run["runtime"] == "torch" and run["device"] in ("cpu", "cuda", "cuda:0")
    print(f"\nslurm-gpu profile: {seconds:.1f} s wall, local profile: {local_run[1]:.1f} s")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_inference_jobs_each_load_the_model_once(slurm: None, config_file: Path, tmp_path: Path) -> None:
    proc, seconds = run_workflow(tmp_path, "slurm", config_file, *per_job(3))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    check_jobs(tmp_path, out, partition="debug", gpus=0, n_jobs=2)
    print(f"\n6 partitions in 2 inference jobs: {seconds:.1f} s wall")


def stream(cmd: list[str], cwd: Path, on_line=None) -> tuple[int, list[tuple[float, str]]]:
    """Run a command, stamping each output line with the seconds since it started (and handing it to on_line)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env_with_venv())
    lines: list[tuple[float, str]] = []

    def read() -> None:
        for ln in proc.stdout:
            lines.append((time.monotonic() - t0, ln))
            if on_line is not None:
                on_line(ln)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        rc = proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join()
    return rc, lines


@pytest.fixture(scope="module")
def slow_config(tmp_path_factory: pytest.TempPathFactory, random_checkpoint: Path) -> Path:
    """3,000 galaxies in 12 partitions of 5 MiB (256 rows, about a second each here): an inference job to stop mid-way."""
    directory = tmp_path_factory.mktemp("slow")
    synthesize(directory / "slow.h5", 3000, seed=5)
    return write_config(directory, directory / "slow.h5", random_checkpoint, partition_mb=5)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_scancelled_inference_job_rerun_does_only_the_missing_partitions(slurm: None, slow_config: Path, tmp_path: Path) -> None:
    predictions = tmp_path / "results" / "predictions"
    cancelled: list[str] = []

    def cancel_midway() -> None:  # once the job has finished two partitions, scancel its Slurm job
        deadline = time.monotonic() + 400
        while len(list(predictions.glob("part_*.json"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        job_id = json.loads(next(predictions.glob("part_*.json")).read_text())["slurm_job_id"]
        subprocess.run(["scancel", job_id], check=True, timeout=30)
        cancelled.append(job_id)

    threading.Thread(target=cancel_midway, daemon=True).start()
    # no retry: the run stops at the cancelled job (a retry would finish the job by itself, reusing the same way)
    rc, lines = stream(snakemake_cmd("slurm", slow_config, "--retries", "0", *per_job(12)), tmp_path)
    text = "".join(ln for _, ln in lines)
    assert rc != 0 and cancelled, text[-3000:]
    assert sacct_states(cancelled)[cancelled[0]].startswith("CANCELLED")
    assert f"SLURM job '{cancelled[0]}' was cancelled" in text  # reported as failed, not waited on forever
    kept = stamps(tmp_path)
    assert 2 <= len(kept) < 12, text[-3000:]  # the finished partitions stay on disk (committed by their sidecar)
    assert not (predictions / "jobs" / "job_00000.json").exists()  # the job's output: only when all are done

    rc, lines = stream(snakemake_cmd("slurm", slow_config, *per_job(12)), tmp_path)
    text = "".join(ln for _, ln in lines)
    assert rc == 0, text[-3000:]
    assert re.search(r"^infer_job\s+1$", text, flags=re.M), text[-3000:]
    after = stamps(tmp_path)
    assert len(after) == 12 and all(after[p] == kept[p] for p in kept)  # the reused sidecars: the same file, untouched
    record = json.loads((predictions / "jobs" / "job_00000.json").read_text())
    assert record["reused"] == sorted(kept)
    runs = sidecars(tmp_path)
    rerun_jobs = {runs[p]["slurm_job_id"] for p in runs if p not in kept}
    assert len(rerun_jobs) == 1 and cancelled[0] not in rerun_jobs
    assert sum(runs[p]["model_load_s"] > 0 for p in runs if p not in kept) == 1  # the rerun loaded the model once
    assert pq.read_table(tmp_path / "results" / "predictions.parquet").num_rows == 3000
    print(f"\nbatch job cancelled after {len(kept)} of 12 partitions; the rerun inferred the other {12 - len(kept)}")


@pytest.fixture(scope="module")
def bad_config(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path, random_checkpoint: Path) -> Path:
    """The tiny dataset with a NaN magnitude in partition 1 (row 60 of rows 51-101)."""
    directory = tmp_path_factory.mktemp("bad")
    bad = directory / "bad.h5"
    bad.write_bytes(tiny_dataset.read_bytes())
    with h5py.File(bad, "r+") as f:
        f["magnitudes"][60, 0] = np.nan
    return write_config(directory, bad, random_checkpoint)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_bad_partition_fails_once_without_a_doubled_retry(slurm: None, bad_config: Path, tmp_path: Path) -> None:
    # One retry (Snakemake retries a fixed number of times): bad input is recorded, so the retry asks for the same.
    rc, lines = stream(snakemake_cmd("slurm", bad_config, "--retries", "1"), tmp_path)
    text = "".join(ln for _, ln in lines)
    assert rc != 0, text[-3000:]
    log_shown = next(t for t, ln in lines if ln.strip().startswith("Logfile logs/infer_job/job_00000.log"))
    assert log_shown < 180, f"reported after {log_shown:.0f} s"
    # the cause, from the job's log: the file, the partition of the job, the row
    assert re.search(
        r"bad\.h5: partition part_00001 \(rows 50-100\): 1 row\(s\) with NaN or Inf in images or magnitudes, first at row 60", text
    )
    record = json.loads((tmp_path / "results" / "failures" / "job_00000.json").read_text())
    assert record["retryable"] is False and "NaN" in record["error"] and record["partitions"] == PARTS
    submitted = re.findall(r"submitted with SLURM jobid (\d+)", text)
    attempts = {j["job_id"]: j for j in query_jobs(submitted) if j["rule"] == "infer_job"}
    assert len(attempts) == 2, text[-3000:]
    first, retry = (attempts[j] for j in sorted(attempts, key=int))
    assert first["state"] == retry["state"] == "FAILED"
    assert retry["alloc_mem_mb"] == first["alloc_mem_mb"] and retry["alloc_cpus"] == first["alloc_cpus"]
    limits = time_limits(list(attempts))
    assert limits[first["job_id"]] == limits[retry["job_id"]]
    # the partition before the bad one was done by the first attempt; the retry reused it (same file), wrote nothing after
    runs = sidecars(tmp_path)
    assert sorted(runs) == ["part_00000"] and runs["part_00000"]["slurm_job_id"] == first["job_id"]
    assert not (tmp_path / "results" / "predictions" / "jobs").exists()
    print(f"\nfailure reported with its log after {log_shown:.0f} s; retried with the same request")
