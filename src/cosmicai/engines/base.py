"""Inference engines: one interface, a runtime chosen per device and precision.

On CPU the exported ONNX graph runs in OpenVINO, at fp32, with a bf16 inference-precision hint
(AVX-512 BF16/AMX) or as the int8 graph `cosmicai quantize` makes, or in ONNX Runtime at fp32 or int8;
`auto` picks OpenVINO whenever it is installed (the `cpu` extra), else ONNX Runtime for fp32 and int8,
else PyTorch (choose_runtime); on CUDA, PyTorch runs the model with pinned,
non-blocking copies at fp32/tf32/bf16/fp16. The CPU runtimes need no torch import, which keeps
an inference job's fixed cost (about 0.5 s instead of 3 s) and memory (about 0.6 GB less) down.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

Precision = Literal["fp32", "bf16", "tf32", "fp16", "int8"]
Runtime = Literal["auto", "torch", "onnxruntime", "openvino"]
Device = Literal["auto", "cpu", "cuda"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "tf32", "fp16", "int8")
RUNTIMES: tuple[str, ...] = ("auto", "torch", "onnxruntime", "openvino")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
CPU_PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8")  # what a CPU job (local, Slurm CPU, Lambda) can run
# What each runtime runs (choose_runtime refuses the other pairs).
RUNTIME_PRECISIONS: dict[str, tuple[str, ...]] = {
    "torch": ("fp32", "bf16", "tf32", "fp16"),
    "onnxruntime": ("fp32", "int8"),
    "openvino": ("fp32", "bf16", "int8"),
}


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


def cpu_bf16() -> bool:
    """True when this CPU has bf16 units OpenVINO uses (x86 AVX-512 BF16 or AMX, Arm BF16); read from /proc/cpuinfo."""
    try:
        flags = {
            f for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith(("flags", "Features")) for f in line.split()
        }
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def choose_runtime(device: str, precision: str, runtime: str) -> tuple[str, str]:
    """Resolve ('auto' device, 'auto' runtime) to a concrete (device, runtime), refusing impossible pairs."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}' (choose from {', '.join(PRECISIONS)})")
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime '{runtime}' (choose from {', '.join(RUNTIMES)})")
    if precision == "int8" and device != "cpu":  # the quantized graph runs in the CPU runtimes only
        if device == "cuda":
            raise ValueError("precision 'int8' runs on CPU only (OpenVINO or ONNX Runtime); on CUDA use fp16 or bf16")
        device = "cpu"
    if device == "auto":
        device = "cuda" if cuda_available() else "cpu"
    elif device == "cuda" and not cuda_available():
        raise ValueError("device 'cuda' requested but no CUDA GPU is available")
    if device == "cpu" and precision in ("tf32", "fp16"):
        raise ValueError(f"precision '{precision}' needs a CUDA GPU; on CPU use fp32, bf16 or int8")
    if runtime == "auto":
        if device == "cuda":
            runtime = "torch"
        elif _importable("openvino"):  # fastest measured on CPU at fp32 and bf16 (`cosmicai bench`)
            runtime = "openvino"
        elif precision in RUNTIME_PRECISIONS["onnxruntime"] and _importable("onnxruntime"):
            runtime = "onnxruntime"
        else:
            runtime = "torch"
    if device == "cuda" and runtime != "torch":
        raise ValueError(f"runtime '{runtime}' runs on CPU only; on CUDA use torch")
    if precision not in RUNTIME_PRECISIONS[runtime]:
        able = [r for r, ps in RUNTIME_PRECISIONS.items() if precision in ps]
        raise ValueError(f"runtime '{runtime}' does not run {precision}; use {' or '.join(able)}")
    return device, runtime
