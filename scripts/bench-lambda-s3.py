#!/usr/bin/env python3
"""Measure what the submit host sends when the lambda profile runs on a dataset already in S3.

Starts rclone serve s3 and the Lambda stand-in on free ports, puts a dataset of `--mib` MiB in S3
(directly, not counted), and runs `snakemake --profile profiles/lambda` with `dataset:
s3://...`, its S3 and Lambda traffic going through counting TCP relays (cosmicai.bench.dataplane.
CountingRelay); the functions reach S3 directly. Run twice: the first run also stages the model;
the second (predictions deleted) is the steady state. Then the local profile on the same S3
dataset, and the predictions compared. Every figure printed is measured in this run.

    PYTHONPATH=src:standins python scripts/bench-lambda-s3.py --workdir /tmp/bench-lambda --mib 100 --partition-mb 10
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import yaml

REPO = Path(__file__).resolve().parents[1]
KEY, SECRET, BUCKET, FUNCTION = "bench-key", "bench-secret", "bench", "cosmicai-infer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def snakemake(workdir: Path, profile: str, config: dict, env: dict, *args: str) -> float:
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    files = [str(workdir / "config.yaml")] + ([str(REPO / "config" / "lambda.yaml")] if profile == "lambda" else [])
    t = time.perf_counter()
    proc = subprocess.run(
        [
            "snakemake",
            "-s",
            str(REPO / "workflow" / "Snakefile"),
            "--profile",
            str(REPO / "profiles" / profile),
            "--configfile",
            *files,
            *args,
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        sys.exit(proc.stderr[-4000:])
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--mib", type=float, default=100)
    p.add_argument("--partition-mb", type=float, default=10)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--jobs", type=int, default=4)
    a = p.parse_args()

    from cosmicai.bench.dataplane import CountingRelay, repeat_dataset, rows_for_mib
    from cosmicai.data.synth import synthesize

    work = Path(a.workdir)
    shutil.rmtree(work, ignore_errors=True)
    (work / "s3" / BUCKET).mkdir(parents=True)
    synthesize(work / "seed.h5", 2048, seed=1, size=32)
    data = work / "s3" / BUCKET / "inputs" / "data.h5"  # rclone serves this folder: the object exists without an upload
    data.parent.mkdir(parents=True)
    repeat_dataset(str(work / "seed.h5"), str(data), rows_for_mib(a.mib))
    size = data.stat().st_size

    s3_port, lambda_port = free_port(), free_port()
    base = {k: v for k, v in os.environ.items() if k not in ("AWS_PROFILE", "AWS_SESSION_TOKEN")}
    base.update(
        AWS_ACCESS_KEY_ID=KEY,
        AWS_SECRET_ACCESS_KEY=SECRET,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_ENDPOINT_URL_S3=f"http://127.0.0.1:{s3_port}",
    )
    rclone = Path(sys.executable).parent / "rclone"
    procs = [
        subprocess.Popen(
            [
                str(rclone),
                "serve",
                "s3",
                "--config",
                "/dev/null",
                "--addr",
                f"127.0.0.1:{s3_port}",
                "--auth-key",
                f"{KEY},{SECRET}",
                str(work / "s3"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
    ]
    functions = {
        "functions": [
            {
                "name": FUNCTION,
                "handler": "cosmicai.function.handler.handler",
                "memory_mb": 2048,
                "timeout_s": 300,
                "reserved_concurrency": a.jobs,
                "code_dirs": [str(REPO / "src")],
            }
        ]
    }
    (work / "functions.json").write_text(json.dumps(functions))
    procs.append(
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aws_standins.lambda_server",
                "--port",
                str(lambda_port),
                "--function-config",
                str(work / "functions.json"),
            ],
            env={**base, "PYTHONPATH": f"{REPO / 'src'}:{REPO / 'standins'}"},
            stdout=(work / "lambda.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
    )
    try:
        time.sleep(3)
        s3_relay, lambda_relay = CountingRelay(("127.0.0.1", s3_port)), CountingRelay(("127.0.0.1", lambda_port))
        host = {
            **base,
            "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{s3_relay.port}",
            "AWS_ENDPOINT_URL_LAMBDA": f"http://127.0.0.1:{lambda_relay.port}",
        }
        config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
        config.update(dataset=f"s3://{BUCKET}/inputs/data.h5", checkpoint=str(a.checkpoint), partition_mb=a.partition_mb)
        config["lambda"].update(bucket=BUCKET, prefix="cosmicai", function_name=FUNCTION)
        lam = work / "lambda-run"
        lam.mkdir()
        for i, run in enumerate(("first run (stages the model)", "second run (model already staged)")):
            if i:  # the same run again: predictions gone, everything in S3 already
                shutil.rmtree(lam / "results" / "predictions")
                (lam / "results" / "predictions.parquet").unlink()
            before = (s3_relay.sent, s3_relay.received, lambda_relay.sent, lambda_relay.received)
            wall = snakemake(lam, "lambda", config, host, "--jobs", str(a.jobs))
            s3_sent, s3_recv = s3_relay.sent - before[0], s3_relay.received - before[1]
            l_sent, l_recv = lambda_relay.sent - before[2], lambda_relay.received - before[3]
            sidecars = [json.loads(p.read_text()) for p in sorted((lam / "results" / "predictions").glob("part_*.json"))]
            sent = s3_sent + l_sent
            print(
                f"lambda profile, {run}: {wall:.0f} s, {len(sidecars)} partitions of a {size / 2**20:.0f} MiB dataset in S3; "
                f"submit host sent {sent / 1e6:.3f} MB = {100 * sent / size:.3f}% of the dataset (S3 {s3_sent / 1e6:.3f} MB, "
                f"Lambda {l_sent / 1e6:.3f} MB), received {(s3_recv + l_recv) / 1e6:.3f} MB (S3 {s3_recv / 1e6:.3f}, Lambda {l_recv / 1e6:.3f}); "
                f"functions read {sum(r['s3_bytes_read'] for r in sidecars) / 2**20:.1f} MiB in {sum(r['s3_requests'] for r in sidecars)} GETs"
            )
        local = work / "local-run"
        local.mkdir()
        snakemake(local, "local", config, base, "--cores", "2")
        x, y = (pq.read_table(d / "results" / "predictions.parquet") for d in (local, lam))
        assert np.array_equal(x.column("object_id").to_numpy(), y.column("object_id").to_numpy())
        dz = np.abs(x.column("z_pred").to_numpy() - y.column("z_pred").to_numpy()).max()
        print(f"predictions: {x.num_rows} rows, lambda vs local profile max |dz| = {dz}")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
