#!/usr/bin/env python3
"""Measure reading one row range of an HDF5 dataset from S3 (rclone serve s3 on this machine).

Writes the same rows in several layouts, serves them with rclone, and reads rows [R, 2R) (R rows =
`--mib` MiB of model-ready rows) as an inference job does (cosmicai.data.source: h5py over ranged
GETs), against downloading the same bytes as one object with boto3's transfer manager. With
`--s3fs-python` (an interpreter with s3fs and h5py installed) the same reads also go through
h5py over s3fs. Prints one line per measurement; every figure is measured in this run.

    python scripts/bench-s3-read.py --workdir /tmp/bench --mib 100 [--s3fs-python /tmp/venv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

S3FS_READ = """
import json, sys, time, h5py, s3fs
uri, start, stop, cache, block = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
fs = s3fs.S3FileSystem(key=sys.argv[6], secret=sys.argv[7], client_kwargs={"endpoint_url": sys.argv[8], "region_name": "us-east-1"})
t = time.perf_counter()
with fs.open(uri, "rb", cache_type=cache, block_size=block) as raw, h5py.File(raw, "r") as f:
    for a in range(start, stop, 512):
        rows = slice(a, min(a + 512, stop))
        n = sum(f[k][rows].nbytes for k in f)
print(json.dumps({"seconds": time.perf_counter() - t}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--mib", type=float, default=100)
    p.add_argument("--rounds", type=int, default=2, help="each read is repeated; the best is reported")
    p.add_argument("--s3fs-python", help="an interpreter with s3fs and h5py, to compare h5py over s3fs")
    a = p.parse_args()

    from cosmicai.bench.dataplane import (
        download_read,
        range_read,
        repeat_dataset,
        rows_for_mib,
    )
    from cosmicai.data.rechunk import rechunk
    from cosmicai.data.synth import synthesize

    work = Path(a.workdir)
    (work / "s3" / "bench").mkdir(parents=True, exist_ok=True)
    rows = rows_for_mib(a.mib)
    seed = work / "seed.h5"
    if not seed.exists():
        synthesize(seed, 2048, seed=1, size=32)
    layouts = {
        "contiguous": dict(layout="contiguous"),
        "chunked-16-rows (320 KiB chunks)": dict(layout="chunked", chunk_rows=16),
        "chunked-256-rows (5 MiB, DatasetWriter's)": dict(layout="chunked", chunk_rows=256),
    }
    files = {}
    for name, kw in layouts.items():
        path = work / "s3" / "bench" / (name.split(" ")[0] + ".h5")
        if not path.exists():
            repeat_dataset(str(seed), str(path), 3 * rows, **kw)
        files[name] = path
    rechunked = work / "s3" / "bench" / "rechunked.h5"
    if not rechunked.exists():
        chunk_rows = rechunk(files["chunked-16-rows (320 KiB chunks)"], rechunked, a.mib)
        print(f"cosmicai rechunk --partition-mb {a.mib}: chunks of {chunk_rows} rows")
    files["rechunked (cosmicai rechunk)"] = rechunked
    blob = work / "s3" / "bench" / "blob.bin"
    nbytes = rows * 20504  # the row range's bytes in these 32x32 files (images, magnitudes, ids, z)
    if not blob.exists() or blob.stat().st_size != nbytes:
        blob.write_bytes(os.urandom(nbytes))

    port = free_port()
    key, secret = "bench-key", "bench-secret"
    rclone = Path(sys.executable).parent / "rclone"
    server = subprocess.Popen(
        [
            str(rclone),
            "serve",
            "s3",
            "--config",
            "/dev/null",
            "--addr",
            f"127.0.0.1:{port}",
            "--auth-key",
            f"{key},{secret}",
            str(work / "s3"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.environ.update(
        AWS_ENDPOINT_URL_S3=f"http://127.0.0.1:{port}",
        AWS_ACCESS_KEY_ID=key,
        AWS_SECRET_ACCESS_KEY=secret,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    try:
        time.sleep(1.5)
        best = lambda results: min(results, key=lambda r: r["seconds"])
        d = best([download_read("s3://bench/blob.bin", nbytes) for _ in range(a.rounds)])
        print(
            f"download as one object (boto3 transfer manager, 8 x 8 MiB parts): {d['bytes'] / 2**20:.0f} MiB in {d['seconds']:.2f} s = {d['mb_per_s']:.0f} MiB/s"
        )
        for name, path in files.items():
            uri = f"s3://bench/{path.name}"
            r = best([range_read(uri, rows, 2 * rows) for _ in range(a.rounds)])
            print(
                f"row range from S3, {name}: {r['row_bytes'] / 2**20:.0f} MiB of rows in {r['seconds']:.2f} s = {r['mb_per_s']:.0f} MiB/s; "
                f"fetched {r['s3_bytes_fetched'] / 2**20:.0f} MiB in {r['s3_requests']} GETs"
            )
            if a.s3fs_python:
                for cache, block in (("readahead", 5 * 2**20), ("blockcache", 8 * 2**20)):
                    out = [
                        json.loads(
                            subprocess.run(
                                [
                                    a.s3fs_python,
                                    "-c",
                                    S3FS_READ,
                                    f"bench/{path.name}",
                                    str(rows),
                                    str(2 * rows),
                                    cache,
                                    str(block),
                                    key,
                                    secret,
                                    os.environ["AWS_ENDPOINT_URL_S3"],
                                ],
                                capture_output=True,
                                text=True,
                                check=True,
                            ).stdout
                        )
                        for _ in range(a.rounds)
                    ]
                    s = min(o["seconds"] for o in out)
                    print(
                        f"  same rows via h5py over s3fs ({cache}, {block >> 20} MiB blocks): {s:.2f} s = {r['row_bytes'] / 2**20 / s:.0f} MiB/s"
                    )
        r = best([range_read(str(files["contiguous"]), rows, 2 * rows) for _ in range(a.rounds)])
        print(f"row range from the local file (page cache), contiguous: {r['mb_per_s']:.0f} MiB/s")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    tempfile.tempdir = None
    main()
