"""Resume: SIGKILL Snakemake and its jobs mid-run; the rerun does only what is missing, byte-identical result."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from conftest import REPO, env_with_venv
from test_workflow import snakemake, tiny_config

N_PARTS = 6  # 300 rows at partition_mb 1.0


def _start_detached(workdir: Path, config: dict) -> subprocess.Popen:
    """Snakemake in a process group of its own (its jobs join it), output to a log file."""
    (workdir / "test-config.yaml").write_text(yaml.safe_dump(config))
    cmd = ["snakemake", "-s", str(REPO / "workflow" / "Snakefile"), "--profile", str(REPO / "profiles" / "local"), "--cores", "2",
           "--configfile", str(workdir / "test-config.yaml")]
    log = open(workdir / "killed-run.log", "w")
    return subprocess.Popen(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=env_with_venv(), start_new_session=True)


def _done(pred_dir: Path) -> dict[str, tuple[int, int]]:
    """Partitions with both outputs in place, with (mtime_ns, inode) of their predictions file."""
    out = {}
    for p in sorted(pred_dir.glob("part_*.parquet")):
        if p.with_suffix(".json").exists():
            st = p.stat()
            out[p.stem] = (st.st_mtime_ns, st.st_ino)
    return out


def _incomplete(workdir: Path) -> set[str]:
    """Stems of outputs Snakemake had marked incomplete (jobs running when it was killed)."""
    stems = set()
    for f in (workdir / ".snakemake" / "incomplete").glob("*"):
        try:
            stems.add(Path(base64.urlsafe_b64decode(f.name).decode()).stem)
        except ValueError:
            continue  # not a record (e.g. migration_underway)
    return stems


def _group_gone(pgid: int, timeout: float = 10.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        alive = [pid for pid in os.listdir("/proc") if pid.isdigit() and _pgid_of(int(pid)) == pgid and not _zombie(int(pid))]
        if not alive:
            return True
        time.sleep(0.2)
    return False


def _pgid_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_sigkill_mid_run_then_resume(tmp_path: Path, tiny_dataset: Path, random_checkpoint: Path) -> None:
    config = tiny_config(tiny_dataset, random_checkpoint, partition_mb=1.0)
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    reference.mkdir()
    killed.mkdir()

    full = snakemake(reference, config=config)
    assert full.returncode == 0, full.stderr[-3000:]
    assert f"infer_partition          {N_PARTS}" in full.stdout + full.stderr

    proc = _start_detached(killed, config)
    pred_dir = killed / "results" / "predictions"
    deadline = time.time() + 300
    while len(_done(pred_dir)) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _group_gone(proc.pid), "jobs of the killed run are still running"

    done, incomplete = _done(pred_dir), _incomplete(killed)
    kept = {name: st for name, st in done.items() if name not in incomplete}
    assert 1 <= len(kept) < N_PARTS, (done, incomplete)  # really killed mid-way
    assert not (killed / "results" / "predictions.parquet").exists()

    assert snakemake(killed, "--unlock", config=config).returncode == 0
    resumed = snakemake(killed, config=config)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    ran = re.search(r"^infer_partition\s+(\d+)$", log, re.M)
    assert ran and int(ran.group(1)) == N_PARTS - len(kept), log[-3000:]
    after = _done(pred_dir)
    assert all(after[name] == st for name, st in kept.items()), "a finished partition ran again"
    assert len(after) == N_PARTS

    merged = killed / "results" / "predictions.parquet"
    assert merged.read_bytes() == (reference / "results" / "predictions.parquet").read_bytes()
    meta = pq.read_metadata(merged)
    assert meta.num_rows == 300
    assert not any(re.search("time|date", name) for name in meta.schema.names)
    assert set(meta.metadata or {}) <= {b"ARROW:schema"} and pq.read_schema(merged).metadata is None  # no run-specific metadata
    accounting = json.loads((killed / "results" / "summary" / "run_summary.json").read_text())["row_accounting"]
    assert accounting["rows_in"] == accounting["rows_out"] == 300 and accounting["rows_lost"] == 0
