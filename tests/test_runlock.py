"""One run per results folder (cosmicai.runlock): a second run is refused naming the folder and the holder; a killed holder's lock is explained, not blocking."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.workflow import snakemake, tiny_config

from cosmicai import runlock
from cosmicai.errors import CosmicaiError

HOLD = "import sys, time; from cosmicai import runlock; runlock.acquire(sys.argv[1]); print('held', flush=True); time.sleep(600)"


def _holder(results: Path) -> subprocess.Popen:
    """Another process holding the results folder's lock (as another run's Snakemake does)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(results)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_holder_refused_then_killed_holder_explained(tmp_path: Path) -> None:
    results = tmp_path / "results"
    other = _holder(results)
    try:
        with pytest.raises(CosmicaiError) as info:
            runlock.acquire(results)
        line = str(info.value)
        assert line.startswith(f"{results}: results folder in use by another run: pid {other.pid} on host ") and "\n" not in line
    finally:
        os.kill(other.pid, signal.SIGKILL)
        other.wait()
    note = runlock.acquire(results)  # the kernel dropped the killed holder's lock; its record says it never released
    assert note and f"pid {other.pid}" in note and "ended without releasing its lock (killed?)" in note
    runlock.release(results)
    assert json.loads((results / runlock.LOCK_NAME).read_text())["released_at"]
    assert runlock.acquire(results) is None  # released cleanly: nothing to explain
    runlock.release(results)


def test_workflow_refuses_a_results_folder_in_use(tmp_path: Path, tiny_dataset: Path, random_checkpoint: Path) -> None:
    """A run whose results folder another run holds stops before its first job, with one line naming both."""
    results = tmp_path / "shared-results"
    other = _holder(results)
    try:
        start = time.perf_counter()
        work = tmp_path / "second-checkout"
        work.mkdir()
        proc = snakemake(work, "local", tiny_config(tiny_dataset, random_checkpoint, results=str(results)))
        assert proc.returncode != 0
        lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "results folder in use" in ln]
        assert len(lines) == 1 and str(results) in lines[0] and f"pid {other.pid}" in lines[0], proc.stderr[-2000:]
        assert sorted(p.name for p in results.iterdir()) == [runlock.LOCK_NAME]  # nothing written
        assert time.perf_counter() - start < 120
    finally:
        other.kill()
        other.wait()
