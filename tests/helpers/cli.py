"""The repository, the installed `cosmicai` command, and the environment the workflow's jobs run in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run_cli(*args: str, cwd: Path | None = None, check: bool = False) -> subprocess.CompletedProcess:
    """Run the installed `cosmicai` command, capturing output."""
    proc = subprocess.run([str(BIN / "cosmicai"), *map(str, args)], capture_output=True, text=True, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"cosmicai {' '.join(map(str, args))} failed:\n{proc.stderr}")
    return proc


def env_with_venv() -> dict[str, str]:
    """The environment with this interpreter's bin/ first on PATH (so rules find `cosmicai`)."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def assert_clean_failure(proc: subprocess.CompletedProcess, path: Path, message: str, outdir: Path) -> None:
    """A user error as the house rules want it: non-zero exit, one stderr line naming path and problem, no output."""
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(path) in lines[0] and message in lines[0], lines[0]
    assert not any(outdir.iterdir()), list(outdir.iterdir())
