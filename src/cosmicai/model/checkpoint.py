"""Load and save AstroMAE checkpoints (.safetensors, or torch state_dict files read with weights_only=True)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cosmicai.errors import CosmicaiError
from cosmicai.model.astromae import AstroMAERegressor, build_model


def checkpoint_filter_fn(state_dict: dict, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Unwrap common containers ({'model': ...}, {'state_dict': ...}) and DataParallel's 'module.' prefix."""
    for key in ("model", "state_dict", "model_state_dict"):
        if key in state_dict and isinstance(state_dict[key], dict):
            state_dict = state_dict[key]
    if state_dict and all(isinstance(k, str) and k.startswith("module.") for k in state_dict):
        state_dict = {k[len("module.") :]: v for k, v in state_dict.items()}
    return state_dict


def _read_state_dict(path: Path) -> dict:
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CosmicaiError(path, f"not a readable safetensors checkpoint: {exc}") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CosmicaiError(
            path,
            f"not a plain state_dict checkpoint ({first_line}); whole pickled models: use 'cosmicai convert-checkpoint'",
        ) from None
    if not isinstance(obj, dict):
        raise CosmicaiError(path, f"expected a state_dict, found {type(obj).__name__}")
    return obj


def _shape(value: object) -> str:
    """A value's shape as the error shows it: a tensor's dimensions, else what it is instead (a state_dict may hold anything)."""
    return str(tuple(value.shape)) if torch.is_tensor(value) else f"({type(value).__name__}, not a tensor)"


def check_state_dict(state_dict: dict, model: torch.nn.Module, path: object) -> None:
    """Raise CosmicaiError listing missing, unexpected and mis-shaped keys, if any."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [str(k) for k in state_dict if k not in expected]
    misshaped = [
        f"{k} {_shape(state_dict[k])} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and (not torch.is_tensor(state_dict[k]) or state_dict[k].shape != v.shape)
    ]
    if missing or unexpected or misshaped:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if keys:
                shown = ", ".join(keys[:5]) + (f", ... ({len(keys)} in all)" if len(keys) > 5 else "")
                parts.append(f"{label} keys: {shown}")
        raise CosmicaiError(path, "checkpoint does not match the AstroMAE layout; " + "; ".join(parts))


def load_model(path: str | os.PathLike) -> AstroMAERegressor:
    """Build the model and load a checkpoint strictly into it, in eval mode on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CosmicaiError(path, "checkpoint not found")
    model = build_model()
    state_dict = checkpoint_filter_fn(_read_state_dict(path), model)
    check_state_dict(state_dict, model, path)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def save_checkpoint(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Write every state_dict key (shared tensors cloned, so all 388 keys are present) as .safetensors."""
    from cosmicai.atomic import atomic_path

    state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "model": "astromae-redshift"})
