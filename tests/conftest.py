"""Shared fixtures: tiny datasets and checkpoints made in the tests themselves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cosmicai.model.checkpoint import save_checkpoint
from cosmicai.model.astromae import build_model
from cosmicai.data.synth import synthesize

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep exported ONNX graphs (cached by checkpoint hash) out of the user's ~/.cache."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))


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


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 labelled synthetic galaxies with 64x64 cutouts (exercises the centre crop)."""
    path = tmp_path_factory.mktemp("data") / "tiny.h5"
    synthesize(path, 300, seed=3, size=64)
    return path


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised model (non-trivial BatchNorm statistics) saved as .safetensors."""
    torch.manual_seed(0)
    model = build_model()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    path = tmp_path_factory.mktemp("model") / "random.safetensors"
    save_checkpoint(model, path)
    return path
