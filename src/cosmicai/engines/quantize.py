"""int8 post-training quantization of the exported ONNX graph (ONNX Runtime's static quantizer, QDQ format).

The fp32 graph's MatMul and Gemm weights are quantized per channel and their activations per tensor,
symmetrically (int8, zero point 0: an asymmetric zero point costs OpenVINO a Subtract and a Convert
per layer, 23% of the int8 graph's time), with ranges from the 99.999th percentile of a sample of the
data being inferred (min/max ranges let a few bright pixels flatten the rest). LayerNorm, Softmax and
GELU stay fp32, and so do the first layers, which read the raw fluxes and magnitudes (quantizing them
moved the demo model's sigma_NMAD by +0.0075), and the whole Inception branch (FP32_SCOPES): its
convolutions have 4-32 channels, too narrow for int8 kernels to gain much, and quantized it carried
most of the error (p99 |Δz| 0.14 against 0.016 without it). Both CPU runtimes run the result: OpenVINO
fuses each QuantizeLinear/DequantizeLinear pair around an op into an int8 kernel (VNNI on x86 since
Cascade Lake and AMD Zen 4), ONNX Runtime runs its QLinear kernels. The graph carries `cosmicai.precision: int8` in its metadata and is cached by the
fp32 graph's and the calibration sample's sha256, so quantizing runs once per model and sample.
Needs the `onnx` package (the `torch` extra, as exporting does); running the graph does not.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from cosmicai.atomic import atomic_path
from cosmicai.engines.onnx_engine import INPUTS, onnx_cache_dir
from cosmicai.errors import CosmicaiError
from cosmicai.resources import sha256_file

PRECISION_KEY = "cosmicai.precision"  # metadata of a quantized graph: what `cosmicai quantize` made
QUANTIZED_OPS = ["MatMul", "Gemm", "Conv"]  # the model's time is in these; the rest stays fp32
FP32_SCOPES = ("/vis_inception/",)  # exported node names of the Inception branch (model.astromae), kept fp32
CALIBRATION_BATCH = 64
METHOD = "int8s"  # in the cache name: a graph quantized by an earlier method (asymmetric, Inception int8) is not reused


def sample_digest(images: np.ndarray, magnitudes: np.ndarray) -> str:
    """sha256 of a calibration sample (the arrays the quantizer sees)."""
    h = hashlib.sha256()
    for a in (images, magnitudes):
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a, np.float32).tobytes())
    return h.hexdigest()


def first_layers(model: object) -> list[str]:
    """Names of the quantizable nodes that read the graph's inputs (through reshapes, slices and the like only)."""
    consumers: dict[str, list] = {}
    for node in model.graph.node:  # type: ignore[attr-defined]
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found, seen, todo = set(), set(), list(INPUTS)
    while todo:
        for node in consumers.get(todo.pop(), []):
            if node.name in seen:
                continue
            seen.add(node.name)
            if node.op_type in QUANTIZED_OPS:
                found.add(node.name)
            else:
                todo.extend(node.output)
    return sorted(found)


def fp32_nodes(model: object) -> list[str]:
    """Quantizable nodes kept fp32: the first layers and every node of the Inception branch."""
    scoped = [n.name for n in model.graph.node if n.op_type in QUANTIZED_OPS and n.name.startswith(FP32_SCOPES)]  # type: ignore[attr-defined]
    return sorted(set(first_layers(model)) | set(scoped))


def quantize_graph(graph: str | os.PathLike, images: np.ndarray, magnitudes: np.ndarray, output: str | os.PathLike) -> None:
    """Write the int8 (QDQ) graph of an fp32 ONNX graph, activation ranges calibrated on (images, magnitudes)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    class _Sample(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(
                {INPUTS[0]: images[i : i + CALIBRATION_BATCH], INPUTS[1]: magnitudes[i : i + CALIBRATION_BATCH]}
                for i in range(0, len(images), CALIBRATION_BATCH)
            )

        def get_next(self) -> dict | None:
            return next(self._batches, None)

    if len(images) == 0:
        raise CosmicaiError(graph, "the calibration sample is empty")
    try:
        kept = fp32_nodes(onnx.load(str(graph)))
    except Exception as exc:  # onnx raises DecodeError/ValidationError/... for a bad file
        raise CosmicaiError(graph, f"not a loadable ONNX model: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    with tempfile.TemporaryDirectory(prefix="cosmicai-quantize-") as work, atomic_path(output) as tmp:
        raw = Path(work) / "int8.onnx"
        try:  # the percentile calibrator prints its progress: keep stdout to the command's own result
            with contextlib.redirect_stdout(io.StringIO()):
                quantize_static(
                    str(graph),
                    str(raw),
                    _Sample(),
                    quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=QUANTIZED_OPS,
                    nodes_to_exclude=kept,
                    calibrate_method=CalibrationMethod.Percentile,
                    per_channel=True,
                    activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
                )
        except Exception as exc:  # the quantizer raises onnx/ORT errors of many types for a bad graph
            raise CosmicaiError(graph, f"cannot quantize: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        model = onnx.load(str(raw))
        onnx.helper.set_model_props(model, {PRECISION_KEY: "int8"})
        onnx.save(model, str(tmp))


def graph_precision(graph: str | os.PathLike) -> str:
    """'int8' for a graph made by quantize_graph, else 'fp32' (from the graph's metadata; onnxruntime only)."""
    import onnxruntime as ort

    try:
        meta = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types for a bad file
        raise CosmicaiError(graph, f"not a loadable ONNX model: {str(exc).splitlines()[0]}") from None
    return meta.get(PRECISION_KEY, "fp32")


def int8_for(graph: str | os.PathLike, images: np.ndarray, magnitudes: np.ndarray) -> tuple[Path, bool]:
    """The cached int8 graph for this fp32 graph and calibration sample, quantized now if missing; (path, made now)."""
    name = f"astromae-{sha256_file(graph)[:16]}-{METHOD}-{sample_digest(images, magnitudes)[:16]}.onnx"
    path = onnx_cache_dir() / name
    if path.exists():
        return path, False
    quantize_graph(graph, images, magnitudes, path)
    return path, True


def copy_graph(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy a graph to an output path atomically."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
