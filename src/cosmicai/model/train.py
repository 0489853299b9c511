"""Train the AstroMAE architecture on a labelled dataset (the demo model for synthetic data)."""

from __future__ import annotations

import logging
import math
import os
import time

import h5py
import numpy as np
import torch

from cosmicai.data.dataset import IMAGE_SIZE, inspect
from cosmicai.engines.torch_engine import configure_threads
from cosmicai.errors import CosmicaiError
from cosmicai.model.astromae import build_model
from cosmicai.model.checkpoint import save_checkpoint

log = logging.getLogger(__name__)


def _load_training_arrays(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    info = inspect(path)
    if not info.has_redshift:
        raise CosmicaiError(path, "training needs a 'redshift' dataset (spectroscopic labels)")
    y0, x0 = (info.height - IMAGE_SIZE) // 2, (info.width - IMAGE_SIZE) // 2
    with h5py.File(path, "r") as f:
        images = f["images"][:, :, y0 : y0 + IMAGE_SIZE, x0 : x0 + IMAGE_SIZE].astype(np.float32)
        mags = f["magnitudes"][:].astype(np.float32)
        z = f["redshift"][:].astype(np.float32)
    finite = np.isfinite(images).all(axis=(1, 2, 3)) & np.isfinite(mags).all(axis=1) & np.isfinite(z)
    return torch.from_numpy(images[finite]), torch.from_numpy(mags[finite]), torch.from_numpy(z[finite])


def _init_from_data(model: torch.nn.Module, mags: torch.Tensor, z: torch.Tensor) -> None:
    """Start as if magnitudes were standardised and z at its mean: the architecture has no input scaling."""
    first = model.inception_model.magnitude_block[0]
    mean, std = mags.mean(0), mags.std(0).clamp_min(1e-3)
    with torch.no_grad():
        first.weight.div_(std)
        first.bias.sub_(first.weight @ mean)
        model.concat_block[2].bias.fill_(float(z.mean()))


def train(
    data: str | os.PathLike,
    output: str | os.PathLike,
    epochs: int = 3,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    max_minutes: float | None = None,
) -> dict:
    """Fit the model with AdamW and a one-cycle schedule on a Huber loss in Delta z/(1+z); write .safetensors."""
    torch.manual_seed(seed)
    configure_threads()
    images, mags, z = _load_training_arrays(data)
    n = len(z)
    model = build_model().train()
    _init_from_data(model, mags, z)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * math.ceil(n / batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.15)
    generator = torch.Generator().manual_seed(seed)
    started, step, loss_value = time.perf_counter(), 0, float("nan")
    deadline = None if max_minutes is None else started + 60 * max_minutes
    timed_out = False
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            pred = model(images[idx], mags[idx])
            loss = torch.nn.functional.huber_loss((pred - z[idx]) / (1 + z[idx]), torch.zeros_like(pred), delta=0.05)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            if step < steps - 1:
                schedule.step()
            step += 1
            loss_value = loss.item()
            timed_out = deadline is not None and time.perf_counter() > deadline
            if timed_out:
                break
        log.info("epoch %d: loss %.5f (%.0f s)", epoch + 1, loss_value, time.perf_counter() - started)
        if timed_out:  # the cap ends training, not just this epoch
            log.warning("training stopped at max_minutes=%s after %d of %d steps: the model is undertrained", max_minutes, step, steps)
            break
    save_checkpoint(model.eval(), output)
    return {
        "rows": n,
        "epochs": epochs,
        "steps": step,
        "final_loss": loss_value,
        "seconds": time.perf_counter() - started,
        "stopped_at_max_minutes": timed_out,
    }
