"""The PyTorch engine: AstroMAE eager on CPU or CUDA (BatchNorm folded, channels_last, autocast precisions)."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from cosmicai.engines.base import PRECISIONS, Precision, allotted_threads
from cosmicai.model.astromae import ConvBlock


def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA when available; 'cuda' without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA GPU is available")
    return torch.device(device)


def configure_threads(threads: int | None = None) -> int:
    """Give torch the cores this job was allotted, one intra-op thread each."""
    torch.set_num_threads(allotted_threads(threads))
    return torch.get_num_threads()


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold each eval-mode BatchNorm into the convolution before it (same outputs, one op fewer)."""
    for block in model.modules():
        if isinstance(block, ConvBlock) and isinstance(block.bn, nn.BatchNorm2d):
            bn, conv = block.bn, block.conv
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            with torch.no_grad():
                conv.weight.mul_(scale[:, None, None, None])
                bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
                conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias)
            block.bn = nn.Identity()
    return model


class TorchEngine:
    """Runs a loaded AstroMAE model on numpy batches, on one device at one precision."""

    runtime = "torch"

    def __init__(
        self,
        model: nn.Module,
        device: str = "auto",
        precision: Precision = "fp32",
        compile: bool = False,
        threads: int | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision '{precision}' (choose from {', '.join(PRECISIONS)})")
        self.device = resolve_device(device)
        if self.device.type == "cpu" and precision in ("tf32", "fp16"):
            raise ValueError(f"precision '{precision}' needs a CUDA GPU; on CPU use fp32 or bf16")
        self.precision = precision
        self.threads = configure_threads(threads) if self.device.type == "cpu" else torch.get_num_threads()
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
            torch.backends.cudnn.allow_tf32 = precision == "tf32"
        model = fold_batchnorm(model.eval()).to(self.device)
        self.model = model.to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.model, dynamic=False) if compile else self.model
        self._pinned: tuple[torch.Tensor, torch.Tensor] | None = None  # reused page-locked staging buffers

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision in ("bf16", "fp16"):
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
            return torch.autocast(self.device.type, dtype=dtype)
        return contextlib.nullcontext()

    def predict(self, images: np.ndarray, magnitudes: np.ndarray) -> np.ndarray:
        """Redshifts (float32, shape (B,)) for images (B, 5, 32, 32) and magnitudes (B, 5)."""
        x, m = torch.from_numpy(images), torch.from_numpy(magnitudes)
        if self.device.type == "cuda":
            x, m = self._stage(x, m)
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        m = m.to(self.device, non_blocking=True)
        with torch.inference_mode(), self._autocast():
            z = self.forward(x, m)
        return z.float().cpu().numpy()

    def _stage(self, x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Copy a batch into pinned buffers (allocated once, grown on demand) for asynchronous transfer."""
        if self._pinned is None or self._pinned[0].shape[0] < x.shape[0]:
            self._pinned = (torch.empty(x.shape, pin_memory=True), torch.empty(m.shape, pin_memory=True))
        px, pm = self._pinned[0][: x.shape[0]], self._pinned[1][: m.shape[0]]
        px.copy_(x)
        pm.copy_(m)
        return px, pm
