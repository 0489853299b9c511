"""The workflow through a real Slurm (scripts/slurm-local.sh): profiles/slurm and profiles/slurm-gpu end to end.

The runs need the local Slurm with accounting; they skip when it is down, and fail instead in CI
(CI set), where .ci/run starts it. Dry-run planning and the conda env file need no Slurm.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from helpers.cli import REPO, env_with_venv

from cosmicai.accounting.slurm import query_jobs

INIT_WAIT = "2"  # seconds before the plugin's first sacct poll (the profile's 10 s would dominate the tests)
RATES = {"cpu_hour_usd": 0.05, "gpu_hour_usd": 2.5, "su_per_cpu_hour": 1.0, "su_per_gpu_hour": 0.0}


def slurm_status() -> tuple[bool, str]:
    """Whether scripts/slurm-local.sh reports every daemon up, and its output."""
    try:
        proc = subprocess.run(["bash", str(REPO / "scripts" / "slurm-local.sh"), "status"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


@pytest.fixture(scope="module")
def slurm() -> None:
    """Skip (fail in CI) unless the local Slurm with accounting is up."""
    up, status = slurm_status()
    if up:
        return
    message = f"needs the local Slurm (bash scripts/slurm-local.sh start); status says:\n{status}"
    if os.environ.get("CI"):
        pytest.fail(f"CI starts Slurm before the tests, yet it is down: {message}")
    pytest.skip(message)


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


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path, random_checkpoint: Path) -> Path:
    """The default config on the tiny dataset: two partitions of 150 galaxies, priced, copied into files (a
    source on a non-shared filesystem; it also lets a test break one partition alone)."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config.update(dataset=str(tiny_dataset), checkpoint=str(random_checkpoint), partition_mb=3, partition_copy=True)
    config["cost"].update(RATES)
    path = tmp_path_factory.mktemp("config") / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory, config_file: Path) -> tuple[Path, float]:
    """The reference: the local profile's run of the same data."""
    workdir = tmp_path_factory.mktemp("local")
    proc, seconds = run_workflow(workdir, "local", config_file)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, seconds


@pytest.fixture(scope="module")
def six_parts(tmp_path_factory: pytest.TempPathFactory, config_file: Path) -> Path:
    """The same data in six partitions of 1 MiB (51 rows)."""
    config = yaml.safe_load(config_file.read_text())
    config["partition_mb"] = 1
    path = tmp_path_factory.mktemp("config6") / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def slurm_run(slurm: None, tmp_path_factory: pytest.TempPathFactory, config_file: Path):
    workdir = tmp_path_factory.mktemp("slurm")
    proc, seconds = run_workflow(workdir, "slurm", config_file)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return workdir, seconds, proc


@pytest.fixture(scope="module")
def gpu_run(slurm: None, tmp_path_factory: pytest.TempPathFactory, config_file: Path):
    workdir = tmp_path_factory.mktemp("slurm-gpu")
    proc, seconds = run_workflow(workdir, "slurm-gpu", config_file)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return workdir, seconds, proc


def infer_resources(output: str) -> list[dict[str, str]]:
    """The resources Snakemake printed for each infer_partition job (dry-run or run)."""
    blocks = re.findall(r"^\s*(?:local)?rule infer_partition:\n(.*?)(?:^Shell command|^\s*\[)", output, flags=re.S | re.M)
    found = []
    for block in blocks:
        line = re.search(r"^\s+resources: (.*)$", block, flags=re.M).group(1)
        found.append(dict(item.split("=", 1) for item in line.split(", ")))
    return found


def sidecars(workdir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((workdir / "results" / "predictions").glob("*.json"))]


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


def serve_resources(output: str) -> list[dict[str, str]]:
    """The resources Snakemake printed for each serve_engine job (a group job's engine)."""
    blocks = re.findall(r"^\s*(?:local)?rule serve_engine:\n(.*?)(?:^Shell command|^\s*\[)", output, flags=re.S | re.M)
    return [dict(item.split("=", 1) for item in re.search(r"^\s+resources: (.*)$", b, flags=re.M).group(1).split(", ")) for b in blocks]


def check_accounting(workdir: Path, output: str, partition: str, gpus: int, partitions: int = 2, jobs: int = 1) -> list[dict]:
    """Every group job is in sacct, completed, with the partition, cores, memory, time and GPUs asked for."""
    runs = sidecars(workdir)
    job_ids = sorted({r["slurm_job_id"] for r in runs})
    assert len(runs) == partitions and all(r["slurm_job_id"] for r in runs) and len(job_ids) == jobs
    (engine,) = {tuple(sorted(r.items())) for r in serve_resources(output)}  # the same request for every group
    engine = dict(engine)
    members = infer_resources(output)
    assert {m["cpus_per_task"] for m in members} == {"0"} and {m["slurm_partition"] for m in members} == {partition}
    member_mb = int(members[0]["mem_mb"])
    accounted = {j["job_id"]: j for j in query_jobs(job_ids)}
    limits = time_limits(job_ids)
    for job_id, job in accounted.items():
        in_job = [r for r in runs if r["slurm_job_id"] == job_id]
        assert job["state"] == "COMPLETED" and job["rule"].endswith("infer_partition_serve_engine")
        assert job["partition"] == partition == engine["slurm_partition"]
        assert job["alloc_cpus"] == int(engine["cpus_per_task"]) == in_job[0]["threads"] == 2
        assert job["alloc_mem_mb"] == int(engine["mem_mb"]) + len(in_job) * member_mb  # the group's sum
        assert job["alloc_gpus"] == gpus
        assert 0 < job["max_rss_mb"] < job["alloc_mem_mb"]
        assert limits[job_id] == f"00:{int(engine['runtime']):02d}:00"
        # one engine per group job: one process served every partition, loading the model once
        assert len({r["engine_pid"] for r in in_job}) == 1
        assert sorted(r["engine_served"] for r in in_job) == list(range(1, len(in_job) + 1))
        assert sum(r["model_load_s"] > 0 for r in in_job) == 1
    return list(accounted.values())


def check_cost(workdir: Path, jobs: list[dict], gpus: int) -> dict:
    """The cost summary prices sacct's CPU-hours and GPU-hours and lists every job beside its timings."""
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
        assert row["state"] == "COMPLETED" and row["alloc_gpus"] == gpus and row["total_s"] > 0
        assert row["elapsed_s"] >= row["total_s"] - 1  # the job holds its inference
    return cost


# --- planning and software: no Slurm needed -------------------------------------------------------


@pytest.mark.parametrize("profile,partition,gres", [("slurm", "debug", None), ("slurm-gpu", "gpu", "gpu:1")])
def test_dry_run_plans_group_jobs_sized_for_the_device_path(
    tmp_path: Path, config_file: Path, profile: str, partition: str, gres: str | None
) -> None:
    proc, _ = run_workflow(tmp_path, profile, config_file, "-n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    # the profile's partitions_per_job (16, 512) puts both partitions in one group job: one engine
    assert re.search(r"^infer_partition\s+2$", out, flags=re.M) and re.search(r"^serve_engine\s+1$", out, flags=re.M)
    assert re.findall(r"wildcards: part=(part_\d+)", out).count("part_00001") == 1 and "This was a dry-run" in out
    for res in infer_resources(out):  # a member only talks to its group's engine
        assert res["slurm_partition"] == partition and res["cpus_per_task"] == "0" and res.get("gres") == gres
        assert int(res["mem_mb"]) == 20
    (engine,) = serve_resources(out)
    assert engine["slurm_partition"] == partition and engine["cpus_per_task"] == "2" and engine.get("gres") == gres
    assert int(engine["runtime"]) >= 5
    if gres:  # PyTorch and CUDA on the GPU node; no ONNX graph to export
        assert int(engine["mem_mb"]) > 3000 and "rule export_onnx:" not in out
        assert "--runtime torch" in out
    else:  # the CPU graph: no torch in the job
        assert 500 < int(engine["mem_mb"]) < 1500 and "rule export_onnx:" in out
    for rule in ("partition_dataset", "export_onnx"):  # heavy steps are jobs, not on the submit host
        assert f"localrule {rule}:" not in out
    assert not (tmp_path / "results").exists() and not (tmp_path / ".snakemake" / "slurm_logs").exists()


def test_conda_env_matches_the_venv_pins() -> None:
    env = yaml.safe_load((REPO / "workflow" / "envs" / "cosmicai.yaml").read_text())
    pins = re.search(r"^TORCH_PINS \?= (.*)$", (REPO / "Makefile").read_text(), flags=re.M).group(1).split()
    pip = next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]
    assert "python=3.11" in env["dependencies"] and pins == pip[:2] and pip[2] == "-e ${COSMICAI_SRC}"
    for smk in (REPO / "rules").glob("*.smk"):
        text = smk.read_text()
        assert text.count('conda:\n        "../envs/cosmicai.yaml"') == text.count("\n    shell:"), smk.name


# --- through the running Slurm ---------------------------------------------------------------------


@pytest.mark.timeout(900)  # includes the module's Slurm and local runs
def test_slurm_profile_end_to_end(slurm_run, local_run) -> None:
    workdir, seconds, proc = slurm_run
    out = proc.stdout + proc.stderr
    jobs = check_accounting(workdir, out, partition="debug", gpus=0)
    assert max_abs_dz(workdir, local_run[0]) <= 1e-5
    cost = check_cost(workdir, jobs, gpus=0)
    assert all(r["device"] == "cpu" for r in cost["jobs"])
    for rule in ("merge_predictions", "compute_metrics", "plot_results", "summarize_run"):
        assert f"localrule {rule}:" in out  # on the submit host, not submitted
    print(f"\nslurm profile: {seconds:.1f} s wall, local profile: {local_run[1]:.1f} s; cost lines {cost['lines']}")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_slurm_gpu_profile_end_to_end(gpu_run, local_run) -> None:
    workdir, seconds, proc = gpu_run
    jobs = check_accounting(workdir, proc.stdout + proc.stderr, partition="gpu", gpus=1)
    assert max_abs_dz(workdir, local_run[0]) <= 1e-5
    check_cost(workdir, jobs, gpus=1)
    for run in sidecars(workdir):
        # the GPU path: PyTorch, on the node's GPU where CUDA has one (this test node's is a stand-in: CPU)
        assert run["precision"] == "fp32" and run["runtime"] == "torch" and run["device"] in ("cpu", "cuda", "cuda:0")
    print(f"\nslurm-gpu profile: {seconds:.1f} s wall, local profile: {local_run[1]:.1f} s")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_group_jobs_each_load_the_model_once(slurm: None, six_parts: Path, tmp_path: Path) -> None:
    proc, seconds = run_workflow(tmp_path, "slurm", six_parts, *per_job(3))
    assert proc.returncode == 0, proc.stderr[-5000:]
    check_accounting(tmp_path, proc.stdout + proc.stderr, partition="debug", gpus=0, partitions=6, jobs=2)
    print(f"\n6 partitions in 2 group jobs: {seconds:.1f} s wall")


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
    rc = proc.wait(timeout=600)
    reader.join()
    return rc, lines


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_killed_group_job_rerun_does_only_the_missing_partitions(slurm: None, six_parts: Path, tmp_path: Path) -> None:
    predictions = tmp_path / "results" / "predictions"
    address = tmp_path / "results" / "engine" / "group_00000.json"

    def kill_midway() -> None:  # once the group's engine has written two partitions, kill it (as the OOM killer would)
        deadline = time.monotonic() + 300
        while len(list(predictions.glob("*.json"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(json.loads(address.read_text())["pid"], signal.SIGKILL)  # the job runs on this machine's node

    threading.Thread(target=kill_midway, daemon=True).start()
    # no retry: the run stops at the failed job (a retry would rerun the whole group at once)
    rc, lines = stream(snakemake_cmd("slurm", six_parts, "--retries", "0", *per_job(6)), tmp_path)
    text = "".join(ln for _, ln in lines)
    assert rc != 0, text[-3000:]
    assert "the engine service ended without answering" in text
    assert not (tmp_path / "results" / "failures").exists() or not list((tmp_path / "results" / "failures").glob("*.json"))
    kept = {r["partition"]: r["slurm_job_id"] for r in sidecars(tmp_path)}
    assert 2 <= len(kept) < 6, text[-3000:]  # the finished partitions stay (keep-incomplete; written atomically)
    assert len(list(predictions.glob("*.parquet"))) == len(kept)

    rc, lines = stream(snakemake_cmd("slurm", six_parts, *per_job(6)), tmp_path)
    text = "".join(ln for _, ln in lines)
    assert rc == 0, text[-3000:]
    assert re.search(rf"^infer_partition\s+{6 - len(kept)}$", text, flags=re.M), text[-3000:]
    after = {r["partition"]: r["slurm_job_id"] for r in sidecars(tmp_path)}
    assert len(after) == 6 and all(after[p] == job for p, job in kept.items())  # not redone
    print(f"\nengine killed after {len(kept)} of 6 partitions; the rerun inferred the other {6 - len(kept)}")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_bad_partition_fails_without_a_doubled_retry_and_rerun_does_only_what_is_missing(
    slurm_run, config_file: Path, tmp_path: Path
) -> None:
    done, _, _ = slurm_run
    workdir = tmp_path / "run"
    shutil.copytree(done, workdir, symlinks=True)
    part = workdir / "results" / "partitions" / "part_00001.h5"
    good = part.read_bytes()
    part.write_bytes(b"\0" * 512 + good[512:])  # an invalid partition file
    for sidecar in ("part_00001.parquet", "part_00001.json"):
        (workdir / "results" / "predictions" / sidecar).unlink()
    before = {r["partition"]: r["slurm_job_id"] for r in sidecars(workdir)}

    # One retry (Snakemake retries a fixed number of times): bad input is recorded, so the retry asks for the same.
    rc, lines = stream(snakemake_cmd("slurm", config_file, "--retries", "1"), workdir)
    text = "".join(ln for _, ln in lines)
    assert rc != 0, text[-3000:]
    log_shown = next(t for t, ln in lines if ln.strip().startswith("Logfile logs/infer_partition/part_00001.log"))
    assert log_shown < 120, f"reported after {log_shown:.0f} s"
    assert "cosmicai infer: error: results/partitions/part_00001.h5" in text  # the cause, from the job's log
    record = json.loads((workdir / "results" / "failures" / "part_00001.json").read_text())
    assert record["retryable"] is False and "part_00001.h5" in record["error"]
    submitted = re.findall(r"submitted with SLURM jobid (\d+)", text)
    assert len(submitted) == 2
    attempts = {j["job_id"]: j for j in query_jobs(submitted)}
    first, retry = (attempts[j] for j in submitted)
    assert first["state"] == retry["state"] == "FAILED"
    assert retry["alloc_mem_mb"] == first["alloc_mem_mb"] and retry["alloc_cpus"] == first["alloc_cpus"]
    assert time_limits(submitted)[submitted[0]] == time_limits(submitted)[submitted[1]]

    part.write_bytes(good)
    rc, lines = stream(snakemake_cmd("slurm", config_file), workdir)
    text = "".join(ln for _, ln in lines)
    assert rc == 0, text[-3000:]
    assert re.search(r"^infer_partition\s+1$", text, flags=re.M), text[-3000:]
    after = {r["partition"]: r["slurm_job_id"] for r in sidecars(workdir)}
    assert after["part_00000.h5"] == before["part_00000.h5"]  # untouched, not rerun
    assert not (workdir / "results" / "failures" / "part_00001.json").exists()
    assert max_abs_dz(workdir, done) <= 1e-5
    print(f"\nfailure reported with its log after {log_shown:.0f} s; retried with the same request")
