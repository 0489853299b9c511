"""CPU engines over the exported ONNX graph: ONNX Runtime (fp32, int8) and OpenVINO (fp32, bf16, int8).

The graph is exported once from the checkpoint (BatchNorm folded), checked against PyTorch, and
cached by the checkpoint's sha256, so inference jobs load it without importing torch. At int8 the
engines run the quantized graph `cosmicai quantize` made (cosmicai.engines.quantize).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cosmicai.atomic import atomic_path
from cosmicai.errors import CosmicaiError
from cosmicai.resources import sha256_file

INPUTS = ("images", "magnitudes")


def export_onnx(checkpoint: str | os.PathLike, output: str | os.PathLike) -> None:
    """Export the checkpoint's model as an ONNX graph with a dynamic batch; verify it against PyTorch."""
    import warnings

    import torch

    from cosmicai.engines.torch_engine import fold_batchnorm
    from cosmicai.model.checkpoint import load_model

    model = fold_batchnorm(load_model(checkpoint))
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8, 5, 32, 32, generator=generator).abs()
    m = 20 + 2 * torch.randn(8, 5, generator=generator)
    with atomic_path(output) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x, m),
            str(tmp),
            input_names=list(INPUTS),
            output_names=["z"],
            opset_version=17,
            dynamo=False,
            dynamic_axes={"images": {0: "batch"}, "magnitudes": {0: "batch"}, "z": {0: "batch"}},
        )
        import onnxruntime as ort

        with torch.inference_mode():
            expected = model(x, m).numpy()
        got = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy(), "magnitudes": m.numpy()})[
            0
        ]
        if not np.allclose(got, expected, rtol=1e-4, atol=1e-4):
            raise CosmicaiError(checkpoint, f"ONNX export differs from PyTorch by {np.abs(got - expected).max():.2e}")


def onnx_cache_dir() -> Path:
    """Where exported and quantized graphs are cached (by content hashes)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cosmicai" / "onnx"


def onnx_for(checkpoint: str | os.PathLike, onnx: str | os.PathLike | None = None) -> Path:
    """The ONNX graph to run: the one given, the checkpoint itself if .onnx, else a cached export."""
    if onnx is not None:
        path = Path(onnx)
    elif str(checkpoint).endswith(".onnx"):
        path = Path(checkpoint)
    else:
        if not Path(checkpoint).is_file():
            raise CosmicaiError(checkpoint, "checkpoint not found")
        path = onnx_cache_dir() / f"astromae-{sha256_file(checkpoint)[:16]}.onnx"
        if not path.exists():
            export_onnx(checkpoint, path)
    if not path.is_file():
        raise CosmicaiError(path, "ONNX model not found")
    return path


class OnnxRuntimeEngine:
    """ONNX Runtime on CPU: fp32, or int8 on a quantized graph."""

    runtime = "onnxruntime"
    device = "cpu"

    def __init__(self, graph: str | os.PathLike, precision: str, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types for a bad file
            raise CosmicaiError(graph, f"not a loadable ONNX model: {str(exc).splitlines()[0]}") from None
        if [i.name for i in self.session.get_inputs()] != list(INPUTS):
            raise CosmicaiError(graph, f"ONNX model inputs must be {INPUTS}")
        self.precision, self.threads = precision, threads

    def predict(self, images: np.ndarray, magnitudes: np.ndarray) -> np.ndarray:
        """Redshifts for one batch."""
        return self.session.run(None, {"images": images, "magnitudes": magnitudes})[0].reshape(-1)


class OpenVinoEngine:
    """OpenVINO on CPU; bf16 uses the CPU's bf16 units through the inference-precision hint, int8 a quantized graph."""

    runtime = "openvino"
    device = "cpu"

    def __init__(self, graph: str | os.PathLike, precision: str, threads: int) -> None:
        import openvino as ov

        core = ov.Core()
        try:
            model = core.read_model(str(graph))
        except RuntimeError as exc:
            raise CosmicaiError(graph, f"not a loadable ONNX model: {str(exc).splitlines()[0]}") from None
        # int8: the quantized ops run in int8 kernels, the ops left unquantized in f32 (not the bf16 a
        # bf16-capable CPU would otherwise pick), so the accuracy gate measures int8 alone.
        hint = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}.get(precision)
        if hint is None:
            raise CosmicaiError(graph, f"runtime 'openvino' runs fp32, bf16 or int8, not {precision}")
        config = {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        self.compiled = core.compile_model(model, "CPU", config)
        self.precision, self.threads = precision, threads

    def predict(self, images: np.ndarray, magnitudes: np.ndarray) -> np.ndarray:
        """Redshifts for one batch."""
        return np.asarray(self.compiled({"images": images, "magnitudes": magnitudes})[0], np.float32).reshape(-1)
