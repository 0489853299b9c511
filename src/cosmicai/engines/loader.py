"""load_engine: the one entry point that picks and builds the runtime for a device and precision."""

from __future__ import annotations

import os

from cosmicai.engines.base import InferenceEngine, allotted_threads, choose_runtime
from cosmicai.errors import CosmicaiError


def load_engine(
    checkpoint: str | os.PathLike,
    device: str = "auto",
    precision: str = "fp32",
    runtime: str = "auto",
    compile: bool = False,
    threads: int | None = None,
    onnx: str | os.PathLike | None = None,
) -> InferenceEngine:
    """An engine for the checkpoint (.safetensors/.pt, or an exported .onnx for the CPU runtimes)."""
    try:
        device, runtime = choose_runtime(device, precision, runtime)
    except ValueError as exc:
        raise CosmicaiError(checkpoint, str(exc)) from None
    if runtime == "torch":
        if str(checkpoint).endswith(".onnx"):
            raise CosmicaiError(checkpoint, "the torch runtime needs the .safetensors/.pt checkpoint, not an ONNX graph")
        from cosmicai.engines.torch_engine import TorchEngine
        from cosmicai.model.checkpoint import load_model

        return TorchEngine(load_model(checkpoint), device, precision, compile=compile, threads=threads)  # type: ignore[arg-type]
    from cosmicai.engines.onnx_engine import OnnxRuntimeEngine, OpenVinoEngine, onnx_for

    graph = onnx_for(checkpoint, onnx)
    if precision == "int8":
        from cosmicai.engines.quantize import graph_precision

        if graph_precision(graph) != "int8":
            raise CosmicaiError(
                graph, "precision int8 runs an int8 graph (cosmicai quantize, or `cosmicai infer` without --onnx); this one is fp32"
            )
    cls = OnnxRuntimeEngine if runtime == "onnxruntime" else OpenVinoEngine
    return cls(graph, precision, allotted_threads(threads))
