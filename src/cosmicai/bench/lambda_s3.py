"""What the submitting host sends when the lambda profile runs on a dataset already in S3.

Starts rclone serve s3 and the Lambda stand-in (aws_standins, in the checkout's standins/) on free
ports, puts a dataset of `--mib` MiB in S3 (directly, not counted), and runs `snakemake --profile
profiles/lambda` with `dataset: s3://...`, its S3 and Lambda traffic going through counting TCP relays
(cosmicai.bench.dataplane.CountingRelay); the functions reach S3 directly. Runs twice: the first run
also stages the model; the second (predictions deleted) is the steady state. Then the local profile on
the same S3 dataset, and the predictions compared. Every figure printed is measured in this run. Run
from the repository root (it runs the checkout's workflow, profiles and stand-ins).

    python -m cosmicai.bench.lambda_s3 --workdir /tmp/bench-lambda --mib 100 --partition-mb 10 --checkpoint model.safetensors
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from cosmicai.errors import CosmicaiError

KEY, SECRET, BUCKET, FUNCTION, PREFIX = "bench-key", "bench-secret", "bench", "cosmicai-infer", "cosmicai"
DATASET = f"s3://{BUCKET}/inputs/data.h5"
STANDIN_START_S = 3.0  # the Lambda stand-in's start before the first invoke


def _snakemake(repo: Path, workdir: Path, profile: str, config: dict[str, Any], env: dict[str, str], *args: str) -> float:
    """Run the workflow with `profile` and `config` in workdir; its wall seconds (its stderr in workdir/snakemake.log)."""
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    # A command-line --configfile replaces the profile's: name config/lambda.yaml too, last.
    files = [str(workdir / "config.yaml")] + ([str(repo / "config" / "lambda.yaml")] if profile == "lambda" else [])
    cmd = ["snakemake", "-s", str(repo / "workflow" / "Snakefile"), "--profile", str(repo / "profiles" / profile), "--configfile", *files]
    t = time.perf_counter()
    proc = subprocess.run([*cmd, *args], cwd=workdir, env=env, capture_output=True, text=True)
    (workdir / "snakemake.log").write_text(proc.stderr)
    if proc.returncode:
        # the last unindented line: the error's message (a traceback's frames are indented)
        last = next((line for line in reversed(proc.stderr.splitlines()) if line.strip() and not line[0].isspace()), "")
        raise CosmicaiError(workdir / "snakemake.log", f"snakemake --profile {profile} failed (exit {proc.returncode}): {last}")
    return time.perf_counter() - t


def _lambda_standin(repo: Path, work: Path, env: dict[str, str], jobs: int) -> tuple[subprocess.Popen, int]:
    """The Lambda stand-in serving the real handler (this checkout's src/) at reserved concurrency `jobs`; it and its port."""
    from cosmicai.bench.dataplane import free_port

    function = {
        "name": FUNCTION,
        "handler": "cosmicai.function.handler.handler",
        "memory_mb": 2048,
        "timeout_s": 300,
        "reserved_concurrency": jobs,
        "code_dirs": [str(repo / "src")],
        # as `cosmicai deploy-lambda` sets them: its bucket and prefix, and the dataset it may read in place
        "environment": {"COSMICAI_S3_BUCKET": BUCKET, "COSMICAI_S3_PREFIX": PREFIX, "COSMICAI_DATASETS": DATASET},
    }
    (work / "functions.json").write_text(json.dumps({"functions": [function]}))
    port = free_port()
    cmd = [sys.executable, "-m", "aws_standins.lambda_server", "--port", str(port), "--function-config", str(work / "functions.json")]
    env = {**env, "PYTHONPATH": f"{repo / 'src'}{os.pathsep}{repo / 'standins'}"}
    with (work / "lambda.log").open("wb") as log:
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), port


def run(workdir: Path, mib: float, partition_mb: float, checkpoint: Path, jobs: int) -> None:
    """Measure and print both lambda runs' traffic and the comparison with the local profile (see the module's docstring)."""
    import numpy as np
    import pyarrow.parquet as pq

    from cosmicai.bench.dataplane import CountingRelay, repeat_dataset, rows_for_mib, serve_s3
    from cosmicai.bench.scaling import repository_root
    from cosmicai.data.synth import synthesize

    repo = repository_root()
    if not checkpoint.is_file():
        raise CosmicaiError(checkpoint, "no such checkpoint")
    shutil.rmtree(workdir, ignore_errors=True)
    data = workdir / "s3" / BUCKET / "inputs" / "data.h5"  # rclone serves this folder: the object exists without an upload
    data.parent.mkdir(parents=True)
    synthesize(workdir / "seed.h5", 2048, seed=1, size=32)
    repeat_dataset(str(workdir / "seed.h5"), str(data), rows_for_mib(mib))
    size = data.stat().st_size
    base = {k: v for k, v in os.environ.items() if k not in ("AWS_PROFILE", "AWS_SESSION_TOKEN")}
    with serve_s3(workdir / "s3", KEY, SECRET) as s3_env:
        base.update(s3_env)
        standin, lambda_port = _lambda_standin(repo, workdir, base, jobs)
        try:
            time.sleep(STANDIN_START_S)
            s3_relay, lambda_relay = (
                CountingRelay(("127.0.0.1", int(s3_env["AWS_ENDPOINT_URL_S3"].rsplit(":", 1)[1]))),
                CountingRelay(("127.0.0.1", lambda_port)),
            )
            host = {
                **base,
                "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{s3_relay.port}",
                "AWS_ENDPOINT_URL_LAMBDA": f"http://127.0.0.1:{lambda_relay.port}",
            }
            config = yaml.safe_load((repo / "config" / "config.yaml").read_text())
            config.update(dataset=DATASET, checkpoint=str(checkpoint.resolve()), partition_mb=partition_mb)
            config["lambda"].update(bucket=BUCKET, prefix=PREFIX, function_name=FUNCTION)
            lam = workdir / "lambda-run"
            lam.mkdir()
            for i, label in enumerate(("first run (stages the model)", "second run (model already staged)")):
                if i:  # the same run again: predictions gone, everything in S3 already
                    shutil.rmtree(lam / "results" / "predictions")
                    (lam / "results" / "predictions.parquet").unlink()
                before = (s3_relay.sent, s3_relay.received, lambda_relay.sent, lambda_relay.received)
                wall = _snakemake(repo, lam, "lambda", config, host, "--jobs", str(jobs))
                s3_sent, s3_recv = s3_relay.sent - before[0], s3_relay.received - before[1]
                l_sent, l_recv = lambda_relay.sent - before[2], lambda_relay.received - before[3]
                sidecars = [json.loads(p.read_text()) for p in sorted((lam / "results" / "predictions").glob("part_*.json"))]
                sent = s3_sent + l_sent
                print(
                    f"lambda profile, {label}: {wall:.0f} s, {len(sidecars)} partitions of a {size / 2**20:.0f} MiB dataset in S3; "
                    f"submit host sent {sent / 1e6:.3f} MB = {100 * sent / size:.3f}% of the dataset (S3 {s3_sent / 1e6:.3f} MB, "
                    f"Lambda {l_sent / 1e6:.3f} MB), received {(s3_recv + l_recv) / 1e6:.3f} MB (S3 {s3_recv / 1e6:.3f}, "
                    f"Lambda {l_recv / 1e6:.3f}); functions read {sum(r['s3_bytes_read'] for r in sidecars) / 2**20:.1f} MiB "
                    f"in {sum(r['s3_requests'] for r in sidecars)} GETs"
                )
            local = workdir / "local-run"
            local.mkdir()
            _snakemake(repo, local, "local", config, base, "--cores", "2")
        finally:
            standin.terminate()
            standin.wait()
    x, y = (pq.read_table(d / "results" / "predictions.parquet") for d in (local, lam))
    if not np.array_equal(x.column("object_id").to_numpy(), y.column("object_id").to_numpy()):
        raise CosmicaiError(lam / "results" / "predictions.parquet", "object ids differ from the local profile's")
    dz = np.abs(x.column("z_pred").to_numpy() - y.column("z_pred").to_numpy()).max()
    print(f"predictions: {x.num_rows} rows, lambda vs local profile max |dz| = {dz}")


def main(argv: list[str] | None = None) -> int:
    """Command line: python -m cosmicai.bench.lambda_s3 --workdir DIR --checkpoint FILE [--mib N] [--partition-mb N] [--jobs N]."""
    p = argparse.ArgumentParser(prog="python -m cosmicai.bench.lambda_s3", description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True, type=Path, help="emptied first: the S3 server's folder and both runs")
    p.add_argument("--mib", type=float, default=100, help="dataset size in MiB of model-ready rows")
    p.add_argument("--partition-mb", type=float, default=10)
    p.add_argument("--checkpoint", required=True, type=Path, help="the model's .safetensors")
    p.add_argument("--jobs", type=int, default=4, help="Snakemake's --jobs and the function's reserved concurrency")
    a = p.parse_args(argv)
    try:
        run(a.workdir, a.mib, a.partition_mb, a.checkpoint, a.jobs)
    except CosmicaiError as exc:
        print(f"bench lambda_s3: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
