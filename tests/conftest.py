"""Shared fixtures: tiny datasets and checkpoints made in the tests themselves, and the local AWS stand-ins.

Shared code (runners, servers) is in tests/helpers/; test modules import it from there, never from each other.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers.stands import Stands, cosmicai_function, running_stands

from cosmicai.data.synth import synthesize
from cosmicai.model.astromae import build_model
from cosmicai.model.checkpoint import save_checkpoint


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep exported ONNX graphs (cached by checkpoint hash) out of the user's ~/.cache."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))


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


@pytest.fixture(scope="session")
def onnx_graph(_private_cache: None, random_checkpoint: Path) -> Path:
    """random_checkpoint exported as an ONNX graph, into the cache every `cosmicai infer` of it then reuses."""
    from cosmicai.engines.onnx_engine import onnx_for

    return onnx_for(random_checkpoint)


@pytest.fixture(scope="module")
def stand(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stands]:
    """S3 and Lambda stand-ins serving the cosmicai function at reserved concurrency 4; one set per test
    module, since tests change the function's settings. Skips without awslambdaric, boto3 or rclone."""
    with running_stands(tmp_path_factory.mktemp("aws"), [cosmicai_function()]) as stands:
        yield stands
