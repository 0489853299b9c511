"""Load: 1,000 tiny partitions through the local profile and through the Lambda stand-ins at concurrency 32.

Every row is accounted for (rows in = rows out, per partition and in all; every id once, in order)
and the machine's memory stays bounded: the test samples the resident memory of everything it
started (Snakemake, its jobs, the stand-ins and their workers) and the machine's MemAvailable.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers.cli import env_with_venv
from helpers.stands import Stands, cosmicai_function, running_stands
from helpers.workflow import snakemake_cmd, tiny_config

from cosmicai.data.synth import synthesize

N_ROWS, N_PARTS = 4000, 1000
PARTITION_MB = 0.0783  # 4 rows of 20,512 bytes: 4,000 rows make exactly 1,000 partitions
CONCURRENCY = 32
MEM_FLOOR_MB = 1024  # MemAvailable must never fall below this
# Scheduling 1,000 ready jobs: the ILP scheduler solves a problem over all of them each round, and each
# round stats every input of every ready job; greedy over a sample of them keeps Snakemake's own share small
# (measured here: 1.0 job/s with the defaults, 2.3 with these).
SCHEDULER = ("--scheduler", "greedy", "--scheduler-subsample", "64")

pytestmark = [pytest.mark.slow, pytest.mark.load, pytest.mark.timeout(1800)]


class MemoryWatch:
    """Samples, every second, the summed RSS of this process's descendants and the machine's MemAvailable."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int, int]] = []  # (seconds since start, tree RSS MB, MemAvailable MB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = time.monotonic()

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.wait(1.0):
            parents: dict[int, int] = {}
            rss: dict[int, int] = {}
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                    parents[int(entry)] = int(stat[1])
                    rss[int(entry)] = int(stat[21]) * page  # fields 4 (ppid) and 24 (rss) in proc(5)
                except (OSError, ValueError, IndexError):
                    continue
            mine, frontier = set(), {os.getpid()}
            while frontier:
                frontier = {pid for pid, parent in parents.items() if parent in frontier} - mine
                mine |= frontier
            available = next(
                int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemAvailable:")
            )
            self.samples.append((time.monotonic() - self._t0, sum(rss.get(p, 0) for p in mine) >> 20, available >> 10))

    def check(self, label: str) -> str:
        """Assert memory stayed bounded; return a one-line summary."""
        assert self.samples, "no memory samples"
        peak = max(s[1] for s in self.samples)
        low = min(s[2] for s in self.samples)
        assert low >= MEM_FLOOR_MB, f"MemAvailable fell to {low} MB"
        # Bounded, not growing with the partitions done: the last third peaks no higher than the whole
        # run's first two thirds (plus noise), so memory does not accumulate per partition.
        cut = self.samples[len(self.samples) * 2 // 3][0]
        early = max(s[1] for s in self.samples if s[0] < cut)
        late = max(s[1] for s in self.samples if s[0] >= cut)
        assert late <= early * 1.1 + 200, f"memory grew: {early} MB early, {late} MB late"
        return f"{label}: peak RSS of everything started {peak} MB, MemAvailable never below {low} MB"


@pytest.fixture(scope="module")
def load_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4,000 labelled synthetic galaxies (32x32 cutouts): 1,000 partitions of 4 rows."""
    path = tmp_path_factory.mktemp("load") / "load.h5"
    synthesize(path, N_ROWS, seed=11, size=32)
    return path


def load_config(dataset: Path, checkpoint: Path) -> dict:
    """The default config with 1,000 partitions and one-thread ONNX Runtime jobs.

    ONNX Runtime, not the default OpenVINO: for a 4-row partition a job is mostly its fixed cost,
    measured here at 0.7 s of CPU with ONNX Runtime and 1.1 s with OpenVINO (which compiles the graph).
    """
    config = tiny_config(dataset, checkpoint, "load", partition_mb=PARTITION_MB)
    config["inference"].update(threads=1, runtime="onnxruntime")
    return config


def check_rows(workdir: Path, dataset: Path) -> None:
    """Rows in = rows out for each of the 1,000 partitions; the merged ids are the dataset's, each once."""
    res = workdir / "results"
    manifest = json.loads((res / "partitions" / "manifest.json").read_text())
    assert len(manifest["partitions"]) == N_PARTS and {p["rows"] for p in manifest["partitions"]} == {N_ROWS // N_PARTS}
    accounting = json.loads((res / "summary" / "run_summary.json").read_text())["row_accounting"]
    assert accounting["rows_in"] == accounting["rows_out"] == N_ROWS and accounting["rows_lost"] == 0
    assert len(accounting["per_partition"]) == N_PARTS and all(p["rows_in"] == p["rows_out"] for p in accounting["per_partition"])
    merged = pq.read_table(res / "predictions.parquet")
    with h5py.File(dataset) as f:
        np.testing.assert_array_equal(merged.column("object_id").to_numpy(), f["object_id"][:])
    assert np.isfinite(merged.column("z_pred").to_numpy()).all()


def run(workdir: Path, profile: str, config: dict, env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess, float]:
    """The workflow from the repository in workdir, output to workdir/snakemake.log; the process and its wall time."""
    start = time.perf_counter()
    with open(workdir / "snakemake.log", "w") as log:
        proc = subprocess.run(
            snakemake_cmd(workdir, profile, config, *SCHEDULER, *args),
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
    return proc, time.perf_counter() - start


def test_thousand_partitions_local_profile(tmp_path: Path, load_dataset: Path, random_checkpoint: Path) -> None:
    with MemoryWatch() as watch:
        proc, wall = run(tmp_path, "local", load_config(load_dataset, random_checkpoint), env_with_venv(), "--cores", "2")
    assert proc.returncode == 0, (tmp_path / "snakemake.log").read_text()[-4000:]
    check_rows(tmp_path, load_dataset)
    print(f"\n1,000 partitions, local profile, 2 cores, 1-thread jobs: {wall:.0f} s; {watch.check('local')}")


@pytest.fixture(scope="module")
def stand(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stands]:
    """S3 and Lambda stand-ins with the cosmicai function at reserved concurrency 32."""
    with running_stands(tmp_path_factory.mktemp("aws"), [cosmicai_function(concurrency=CONCURRENCY, timeout_s=300)]) as stands:
        yield stands


def test_thousand_partitions_lambda_stand_ins_concurrency_32(
    tmp_path: Path, load_dataset: Path, random_checkpoint: Path, stand: Stands
) -> None:
    env = stand.env
    config = load_config(load_dataset, random_checkpoint)
    config["lambda"]["timeout_s"] = 300
    with MemoryWatch() as watch:
        proc, wall = run(tmp_path, "lambda", config, env, "--jobs", str(CONCURRENCY))
    assert proc.returncode == 0, (tmp_path / "snakemake.log").read_text()[-4000:]
    check_rows(tmp_path, load_dataset)
    fn = stand.stats()
    assert fn["invocations"] == N_PARTS and fn["errors"] == 0
    assert fn["peak_concurrency"] <= CONCURRENCY and fn["cold_starts"] <= CONCURRENCY
    sidecars = [json.loads(p.read_text()) for p in (tmp_path / "results" / "predictions").glob("part_*.json")]
    max_memory = max(s["lambda"]["max_memory_mb"] for s in sidecars)
    print(
        f"\n1,000 partitions, lambda stand-ins, 32 jobs at concurrency 32: {wall:.0f} s; {fn['cold_starts']} cold starts, "
        f"peak concurrency {fn['peak_concurrency']}, {fn['throttles']} throttles, max memory used {max_memory:.0f} MB; "
        f"{watch.check('lambda')}"
    )
