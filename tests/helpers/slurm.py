"""The local Slurm (scripts/slurm-local.sh) for the tests that run jobs through it."""

from __future__ import annotations

import os
import subprocess

import pytest

from helpers.cli import REPO


def slurm_status() -> tuple[bool, str]:
    """Whether scripts/slurm-local.sh reports every daemon up, and its output."""
    try:
        proc = subprocess.run(["bash", str(REPO / "scripts" / "slurm-local.sh"), "status"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


def require_slurm() -> None:
    """Skip (fail in CI, where .ci/run starts it) unless the local Slurm with accounting is up."""
    up, status = slurm_status()
    if up:
        return
    message = f"needs the local Slurm (bash scripts/slurm-local.sh start); status says:\n{status}"
    if os.environ.get("CI"):
        pytest.fail(f"CI starts Slurm before the tests, yet it is down: {message}")
    pytest.skip(message)


def sacct_states(job_ids: list[str]) -> dict[str, str]:
    """Job id -> sacct's state (e.g. 'CANCELLED by 0')."""
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", f"--jobs={','.join(job_ids)}", "--format=JobIDRaw,State"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return dict(line.split("|", 1) for line in out.splitlines() if line)
