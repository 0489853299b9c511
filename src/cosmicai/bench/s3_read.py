"""Reading one row range of an HDF5 dataset from S3 (rclone serve s3 on this machine), as an inference job does.

Writes the same rows in several layouts, serves them with rclone, and reads rows [R, 2R) (R rows =
`--mib` MiB of model-ready rows) as a job does (cosmicai.data.source: h5py over ranged GETs), against
downloading the same bytes as one object with boto3's transfer manager. With `--s3fs-python` (an
interpreter with s3fs and h5py installed) the same reads also go through h5py over s3fs. Prints one
line per measurement; every figure is measured in this run.

    python -m cosmicai.bench.s3_read --workdir /tmp/bench --mib 100 [--s3fs-python /tmp/venv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cosmicai.errors import CosmicaiError

KEY, SECRET, BUCKET = "bench-key", "bench-secret", "bench"
ROW_RANGE_BYTES = 20504  # one row's bytes in these 32x32 files (images, magnitudes, id, z): the download's size per row
# h5py over s3fs, run by another interpreter (s3fs is no dependency of this project).
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
LAYOUTS = {
    "contiguous": {"layout": "contiguous"},
    "chunked-16-rows (320 KiB chunks)": {"layout": "chunked", "chunk_rows": 16},
    "chunked-256-rows (5 MiB, DatasetWriter's)": {"layout": "chunked", "chunk_rows": 256},
}


def _best(measure: Callable[[], dict[str, Any]], rounds: int) -> dict[str, Any]:
    """The fastest of `rounds` runs of a measurement."""
    return min((measure() for _ in range(rounds)), key=lambda r: r["seconds"])


def _datasets(work: Path, rows: int, mib: float) -> dict[str, Path]:
    """The benchmark's datasets under work/s3/bench (kept between runs): 3 x `rows` rows in each layout, and rechunked."""
    from cosmicai.bench.dataplane import repeat_dataset
    from cosmicai.data.rechunk import rechunk
    from cosmicai.data.synth import synthesize

    (work / "s3" / BUCKET).mkdir(parents=True, exist_ok=True)
    seed = work / "seed.h5"
    if not seed.exists():
        synthesize(seed, 2048, seed=1, size=32)
    files = {}
    for name, layout in LAYOUTS.items():
        path = work / "s3" / BUCKET / (name.split(" ")[0] + ".h5")
        if not path.exists():
            repeat_dataset(str(seed), str(path), 3 * rows, **layout)
        files[name] = path
    rechunked = work / "s3" / BUCKET / "rechunked.h5"
    if not rechunked.exists():
        chunk_rows = rechunk(files["chunked-16-rows (320 KiB chunks)"], rechunked, mib)
        print(f"cosmicai rechunk --partition-mb {mib}: chunks of {chunk_rows} rows")
    files["rechunked (cosmicai rechunk)"] = rechunked
    return files


def _s3fs_seconds(python: str, key: str, rows: int, cache: str, block: int, endpoint: str, rounds: int) -> float:
    """The fastest of `rounds` reads of rows [rows, 2 rows) through h5py over s3fs, in seconds."""
    args = [python, "-c", S3FS_READ, key, str(rows), str(2 * rows), cache, str(block), KEY, SECRET, endpoint]
    return min(json.loads(subprocess.run(args, capture_output=True, text=True, check=True).stdout)["seconds"] for _ in range(rounds))


def run(workdir: Path, mib: float, rounds: int, s3fs_python: str | None) -> None:
    """Measure and print every read (see the module's docstring)."""
    from cosmicai.bench.dataplane import download_read, range_read, rows_for_mib, serve_s3

    rows = rows_for_mib(mib)
    files = _datasets(workdir, rows, mib)
    blob = workdir / "s3" / BUCKET / "blob.bin"
    nbytes = rows * ROW_RANGE_BYTES
    if not blob.exists() or blob.stat().st_size != nbytes:
        blob.write_bytes(os.urandom(nbytes))
    with serve_s3(workdir / "s3", KEY, SECRET) as env:
        os.environ.update(env)  # this process's S3 client (cosmicai.data.source) reads them from the environment
        endpoint = env["AWS_ENDPOINT_URL_S3"]
        d = _best(lambda: download_read(f"s3://{BUCKET}/blob.bin", nbytes), rounds)
        print(
            f"download as one object (boto3 transfer manager, 8 x 8 MiB parts): {d['bytes'] / 2**20:.0f} MiB in {d['seconds']:.2f} s "
            f"= {d['mb_per_s']:.0f} MiB/s"
        )
        for name, path in files.items():
            uri = f"s3://{BUCKET}/{path.name}"
            r = _best(lambda uri=uri: range_read(uri, rows, 2 * rows), rounds)
            print(
                f"row range from S3, {name}: {r['row_bytes'] / 2**20:.0f} MiB of rows in {r['seconds']:.2f} s = {r['mb_per_s']:.0f} MiB/s; "
                f"fetched {r['s3_bytes_fetched'] / 2**20:.0f} MiB in {r['s3_requests']} GETs"
            )
            for cache, block in (("readahead", 5 * 2**20), ("blockcache", 8 * 2**20)) if s3fs_python else ():
                s = _s3fs_seconds(s3fs_python, f"{BUCKET}/{path.name}", rows, cache, block, endpoint, rounds)
                print(
                    f"  same rows via h5py over s3fs ({cache}, {block >> 20} MiB blocks): {s:.2f} s = {r['row_bytes'] / 2**20 / s:.0f} MiB/s"
                )
    r = _best(lambda: range_read(str(files["contiguous"]), rows, 2 * rows), rounds)
    print(f"row range from the local file (page cache), contiguous: {r['mb_per_s']:.0f} MiB/s")


def main(argv: list[str] | None = None) -> int:
    """Command line: python -m cosmicai.bench.s3_read --workdir DIR [--mib N] [--rounds N] [--s3fs-python PY]."""
    p = argparse.ArgumentParser(prog="python -m cosmicai.bench.s3_read", description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True, type=Path, help="datasets (kept for the next run) and the S3 server's folder")
    p.add_argument("--mib", type=float, default=100, help="MiB of model-ready rows read (the partition size)")
    p.add_argument("--rounds", type=int, default=2, help="each read is repeated; the best is reported")
    p.add_argument("--s3fs-python", help="an interpreter with s3fs and h5py, to compare h5py over s3fs")
    a = p.parse_args(argv)
    try:
        run(a.workdir, a.mib, a.rounds, a.s3fs_python)
    except CosmicaiError as exc:
        print(f"bench s3_read: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
