"""The model reproduces the published AstroMAE checkpoint layout and architecture."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from helpers.cli import run_cli
from reference_astromae import random_state_dict, reference_forward
from safetensors.torch import save_file

from cosmicai.engines.loader import load_engine
from cosmicai.engines.torch_engine import TorchEngine, fold_batchnorm
from cosmicai.model.astromae import build_model
from cosmicai.model.checkpoint import load_model

REFERENCE_TSV = Path(__file__).resolve().parent / "data" / "astromae_state_dict.tsv"


def _reference_layout() -> dict[str, tuple[str, str]]:
    rows = {}
    for line in REFERENCE_TSV.read_text().splitlines():
        if line.startswith("#") or line.startswith("key\t"):
            continue
        key, dtype, shape = line.split("\t")
        rows[key] = (dtype, shape)
    return rows


def test_state_dict_layout_equals_published_checkpoint() -> None:
    ours = {k: (str(v.dtype).removeprefix("torch."), str(tuple(v.shape))) for k, v in build_model().state_dict().items()}
    ref = _reference_layout()
    assert len(ref) == 388
    assert list(ours) == list(ref)
    assert ours == ref


def test_independent_checkpoint_through_cli_matches_reference(tmp_path: Path, tiny_dataset: Path) -> None:
    sd = random_state_dict(str(REFERENCE_TSV), seed=1)
    ckpt = tmp_path / "independent.safetensors"
    save_file({k: v.clone().contiguous() for k, v in sd.items()}, str(ckpt))
    out = tmp_path / "pred.parquet"
    run_cli("infer", tiny_dataset, "--checkpoint", ckpt, "--output", out, "--precision", "fp32", "--device", "cpu", check=True)
    z_cli = pq.read_table(out).column("z_pred").to_numpy()
    with h5py.File(tiny_dataset) as f:
        x = torch.from_numpy(f["images"][:, :, 16:48, 16:48].astype(np.float32))
        m = torch.from_numpy(f["magnitudes"][:])
    with torch.no_grad():
        z_ref = reference_forward(sd, x, m).numpy()
    assert len(z_cli) == 300
    assert np.abs(z_cli - z_ref).max() <= 1e-4 * max(1.0, np.abs(z_ref).max())


def test_torch_state_dict_file_with_dataparallel_prefix_loads(tmp_path: Path) -> None:
    model = build_model()
    path = tmp_path / "model.pt"
    torch.save({"model": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    loaded = load_model(path)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)


def test_batchnorm_folding_keeps_outputs(random_checkpoint: Path) -> None:
    x, m = torch.randn(8, 5, 32, 32), torch.randn(8, 5) + 20
    model = load_model(random_checkpoint)
    with torch.no_grad():
        before = model(x, m)
        after = fold_batchnorm(model)(x, m)
    assert not any(isinstance(mod, torch.nn.BatchNorm2d) for mod in model.modules())
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_engine_on_cpu_close_to_eager(random_checkpoint: Path, precision: str) -> None:
    x, m = np.random.default_rng(0).normal(size=(16, 5, 32, 32)).astype(np.float32), np.full((16, 5), 20.0, np.float32)
    with torch.no_grad():
        eager = load_model(random_checkpoint)(torch.from_numpy(x), torch.from_numpy(m)).numpy()
    z = TorchEngine(load_model(random_checkpoint), device="cpu", precision=precision).predict(x, m)  # type: ignore[arg-type]
    tol = 1e-4 if precision == "fp32" else 5e-2
    assert np.abs(z - eager).max() <= tol * max(1.0, np.abs(eager).max())


def test_gpu_only_precision_refused_on_cpu(random_checkpoint: Path) -> None:
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        TorchEngine(load_model(random_checkpoint), device="cpu", precision="tf32")


@pytest.mark.parametrize("runtime,precision,tol", [("onnxruntime", "fp32", 1e-4), ("openvino", "fp32", 1e-4), ("openvino", "bf16", 5e-2)])
def test_cpu_runtimes_match_pytorch(onnx_graph: Path, random_checkpoint: Path, runtime: str, precision: str, tol: float) -> None:
    onnx = onnx_graph  # exported once per session (the workflow tests run `cosmicai export-onnx` itself)
    rng = np.random.default_rng(0)
    x, m = rng.normal(size=(40, 5, 32, 32)).astype(np.float32), rng.normal(20, 1, (40, 5)).astype(np.float32)
    with torch.no_grad():
        eager = load_model(random_checkpoint)(torch.from_numpy(x), torch.from_numpy(m)).numpy()
    engine = load_engine(random_checkpoint, device="cpu", precision=precision, runtime=runtime, onnx=onnx)
    assert (engine.runtime, engine.precision) == (runtime, precision)
    z = engine.predict(x, m)
    assert z.shape == (40,)
    assert np.abs(z - eager).max() <= tol * max(1.0, np.abs(eager).max())


def test_auto_runtime_on_cpu() -> None:
    from cosmicai.engines.base import choose_runtime

    assert choose_runtime("cpu", "fp32", "auto") == ("cpu", "openvino")
    assert choose_runtime("cpu", "bf16", "auto") == ("cpu", "openvino")
    assert choose_runtime("cpu", "int8", "auto") == ("cpu", "openvino")
    with pytest.raises(ValueError, match="does not run bf16"):
        choose_runtime("cpu", "bf16", "onnxruntime")
    with pytest.raises(ValueError, match="does not run int8"):
        choose_runtime("cpu", "int8", "torch")
    with pytest.raises(ValueError, match="runs on CPU only"):
        choose_runtime("cuda", "int8", "torch")


def test_auto_runtime_without_openvino(monkeypatch: pytest.MonkeyPatch) -> None:
    from cosmicai.engines import base

    monkeypatch.setattr(base, "_importable", lambda module: module == "onnxruntime")  # the core install
    assert base.choose_runtime("cpu", "fp32", "auto") == ("cpu", "onnxruntime")
    assert base.choose_runtime("cpu", "bf16", "auto") == ("cpu", "torch")
    assert base.choose_runtime("cpu", "int8", "auto") == ("cpu", "onnxruntime")
