"""The upstream Slurm plugin's own test suite, run against cosmicai-slurm on the local Slurm.

cosmicai-slurm subclasses snakemake-executor-plugin-slurm's executor, so it must pass that plugin's suite at
the version it subclasses (the installed one). The suite comes from that version's sdist on PyPI (pip's cache
makes the second download free), is unpacked into a temporary folder, never into this repository, and runs
with a conftest that makes the upstream module's `Executor` cosmicai-slurm's: Snakemake resolves the
`slurm` executor through that module attribute, and the unit tests import it from there.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
from importlib.metadata import version
from pathlib import Path

import pytest
from helpers.cli import env_with_venv
from helpers.slurm import require_slurm

UPSTREAM = "snakemake-executor-plugin-slurm"
UPSTREAM_WORKERS = 4  # pytest-xdist workers for the suite
CONFTEST = """
import pytest
import snakemake_executor_plugin_slurm as upstream
import snakemake_executor_plugin_cosmicai_slurm as cosmicai_slurm

from snakemake_interface_executor_plugins.registry import ExecutorPluginRegistry

upstream.Executor = cosmicai_slurm.Executor  # the `slurm` executor the suite runs is now cosmicai-slurm's


@pytest.fixture(autouse=True)
def _runs_cosmicai_slurm():
    assert ExecutorPluginRegistry().get_plugin("slurm").executor is cosmicai_slurm.Executor
"""


def upstream_tests(dest: Path) -> Path:
    """Unpack the installed upstream version's tests/ from its sdist into dest; skip when PyPI is out of reach."""
    pinned = f"{UPSTREAM}=={version(UPSTREAM)}"
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", UPSTREAM, "-d", str(dest), pinned]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot download the sdist of {pinned}: {proc.stderr.strip().splitlines()[-1:]}")
    (sdist,) = dest.glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if "/tests/" in m.name and m.isfile()]
        tar.extractall(dest, members=members, filter="data")
    (tests,) = dest.glob("*/tests")
    (tests / "conftest.py").write_text(CONFTEST)
    return tests


@pytest.mark.slow
@pytest.mark.timeout(3600)  # 213 tests, ~20 Slurm workflows: 13 min one at a time on a quiet 2-core machine
def test_upstream_slurm_suite_passes_against_cosmicai_slurm(tmp_path: Path) -> None:
    require_slurm()
    tests = upstream_tests(tmp_path / "upstream")
    proc = subprocess.run(
        # the suite's own pytest settings (pyproject.toml: python_files = test_*.py and tests.py), from its sdist;
        # its workflows mostly wait for the slurm plugin's first status poll (40 s), so 4 run at once (pytest-xdist)
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout", "600", "-o", "python_files=test_*.py tests.py"]
        + ["-n", str(UPSTREAM_WORKERS), "."],
        cwd=tests,
        capture_output=True,
        text=True,
        env=env_with_venv(),
        timeout=3500,
        check=False,
    )
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr
    print(f"{UPSTREAM} {version(UPSTREAM)} suite against cosmicai-slurm: {summary}")
    assert re.search(r"\d+ passed", summary), proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, proc.stdout[-8000:]
