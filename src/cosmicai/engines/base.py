"""Inference engines: one interface, a runtime chosen per device and precision.

On CPU the exported ONNX graph runs in OpenVINO, at fp32 or with a bf16 inference-precision hint
(AVX-512 BF16/AMX), or in ONNX Runtime at fp32; `auto` picks OpenVINO whenever it is installed (the
`cpu` extra), else ONNX Runtime for fp32, else PyTorch (choose_runtime); on CUDA, PyTorch runs the model with pinned,
non-blocking copies at fp32/tf32/bf16/fp16. The CPU runtimes need no torch import, which keeps
an inference job's fixed cost (about 0.5 s instead of 3 s) and memory (about 0.6 GB less) down.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

Precision = Literal["fp32", "bf16", "tf32", "fp16"]
Runtime = Literal["auto", "torch", "onnxruntime", "openvino"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "tf32", "fp16")
RUNTIMES: tuple[str, ...] = ("auto", "torch", "onnxruntime", "openvino")


class InferenceEngine(Protocol):
    """Predicts redshifts for numpy batches; says where and how it runs."""

    runtime: str
    device: object
    precision: str
    threads: int

    def predict(self, images: np.ndarray, magnitudes: np.ndarray) -> np.ndarray:
        """z (float32, (B,)) for images (B, 5, 32, 32) and magnitudes (B, 5)."""
        ...


def allotted_threads(threads: int | None = None) -> int:
    """The cores this job was given: explicit, else Slurm's allocation, else the CPU affinity set."""
    if threads is None:
        threads = int(os.environ.get("SLURM_CPUS_PER_TASK", 0)) or len(os.sched_getaffinity(0))
    return max(1, threads)


def cuda_available() -> bool:
    """True when a CUDA GPU is usable; avoids importing torch on machines with no NVIDIA driver."""
    if not (Path("/proc/driver/nvidia").exists() or Path("/dev/nvidiactl").exists()):
        return False
    import torch

    return torch.cuda.is_available()


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def choose_runtime(device: str, precision: str, runtime: str) -> tuple[str, str]:
    """Resolve ('auto' device, 'auto' runtime) to a concrete (device, runtime), refusing impossible pairs."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}' (choose from {', '.join(PRECISIONS)})")
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime '{runtime}' (choose from {', '.join(RUNTIMES)})")
    if device == "auto":
        device = "cuda" if cuda_available() else "cpu"
    elif device == "cuda" and not cuda_available():
        raise ValueError("device 'cuda' requested but no CUDA GPU is available")
    if device == "cpu" and precision in ("tf32", "fp16"):
        raise ValueError(f"precision '{precision}' needs a CUDA GPU; on CPU use fp32 or bf16")
    if runtime == "auto":
        if device == "cuda":
            runtime = "torch"
        elif _importable("openvino"):  # fastest measured on CPU at fp32 and bf16 (`cosmicai bench`)
            runtime = "openvino"
        elif precision == "fp32" and _importable("onnxruntime"):
            runtime = "onnxruntime"
        else:
            runtime = "torch"
    if device == "cuda" and runtime != "torch":
        raise ValueError(f"runtime '{runtime}' runs on CPU only; on CUDA use torch")
    if runtime == "onnxruntime" and precision != "fp32":
        raise ValueError("runtime 'onnxruntime' runs fp32 only here; for bf16 use openvino or torch")
    return device, runtime
