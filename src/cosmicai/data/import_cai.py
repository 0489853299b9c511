"""Import the original CAI files without executing pickled code.

- CAI data files: a `torch.save`d `torch.utils.data.TensorDataset` of (images (N, 5, 32, 32),
  magnitudes (N, 5), redshifts (N,)) -> the project's HDF5 dataset, with object ids assigned.
- The fine-tuned AstroMAE checkpoint `Mixed_Inception_z_VITAE_Base_Img_Full_New_Full.pt`: a whole
  pickled `torch.nn.DataParallel` around `blocks.model_vit_inception.ViT_Astro` -> a .safetensors
  state_dict in the published layout.
Both are read with `cosmicai.model.safe_pickle`, never with torch.load(weights_only=False).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from cosmicai.atomic import atomic_path
from cosmicai.data.dataset import BANDS, IMAGE_SIZE, DatasetWriter, inspect
from cosmicai.errors import CosmicaiError
from cosmicai.model.astromae import build_model
from cosmicai.model.checkpoint import check_state_dict, checkpoint_filter_fn, save_checkpoint
from cosmicai.model.safe_pickle import Record, is_module, module_state_dict, safe_load

WRITE_ROWS = 4096


def _dataset_tensors(obj: object, path: Path) -> list[torch.Tensor]:
    """The tensors of a pickled TensorDataset (or a plain tuple/list of tensors)."""
    if isinstance(obj, Record) and obj.pickled_class.endswith("TensorDataset"):
        obj = obj.state.get("tensors")
    if not isinstance(obj, (tuple, list)) or not all(torch.is_tensor(t) for t in obj):
        kind = obj.pickled_class if isinstance(obj, Record) else type(obj).__name__
        raise CosmicaiError(path, f"expected a TensorDataset of (images, magnitudes, redshifts), found {kind}")
    if len(obj) != 3:
        raise CosmicaiError(path, f"expected 3 tensors (images, magnitudes, redshifts), found {len(obj)}")
    return list(obj)


def import_pt(source: str | os.PathLike, output: str | os.PathLike, id_start: int = 0) -> int:
    """Convert a CAI TensorDataset file into an HDF5 dataset (object ids id_start..id_start+N-1); return N."""
    source = Path(source)
    images, mags, z = _dataset_tensors(safe_load(source), source)
    if images.ndim != 4 or images.shape[1] != len(BANDS) or images.shape[0] == 0:
        raise CosmicaiError(source, f"images must have shape (N, 5, H, W) with N > 0, found {tuple(images.shape)}")
    n = images.shape[0]
    if min(images.shape[2:]) < IMAGE_SIZE:
        raise CosmicaiError(source, f"images are {images.shape[2]}x{images.shape[3]}, smaller than the model's {IMAGE_SIZE}x{IMAGE_SIZE}")
    if z.ndim == 2 and z.shape[1] == 1:
        z = z[:, 0]
    if tuple(mags.shape) != (n, len(BANDS)) or tuple(z.shape) != (n,):
        raise CosmicaiError(
            source, f"row counts disagree: images {tuple(images.shape)}, magnitudes {tuple(mags.shape)}, redshifts {tuple(z.shape)}"
        )
    for name, t in (("images", images), ("magnitudes", mags), ("redshifts", z)):
        if not t.is_floating_point():
            raise CosmicaiError(source, f"{name} must be floating point, found {t.dtype}")
    with atomic_path(output) as tmp:
        with DatasetWriter(tmp, n, (images.shape[2], images.shape[3]), has_redshift=True) as out:
            for a in range(0, n, WRITE_ROWS):
                b = min(a + WRITE_ROWS, n)
                out.write(
                    images[a:b].to(torch.float32).numpy(),
                    mags[a:b].to(torch.float32).numpy(),
                    np.arange(id_start + a, id_start + b, dtype=np.int64),
                    z[a:b].to(torch.float32).numpy(),
                )
            out.file.attrs["source"] = source.name
            out.file["object_id"].attrs["note"] = (
                f"assigned by cosmicai import-pt: row index + {id_start} (the source file has no object ids)"
            )
        inspect(tmp)  # validated like any dataset before it is renamed into place
    return n


def convert_checkpoint(source: str | os.PathLike, output: str | os.PathLike) -> int:
    """Collect the state_dict of a whole pickled AstroMAE model, check it, write .safetensors; return key count."""
    source = Path(source)
    obj = safe_load(source)
    model = build_model()
    if isinstance(obj, dict):
        obj = next((obj[k] for k in ("model", "state_dict", "model_state_dict") if is_module(obj.get(k))), obj)
    if is_module(obj):
        state_dict = module_state_dict(obj, source)
    elif isinstance(obj, dict):
        state_dict = checkpoint_filter_fn(obj, model)
        if not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state_dict.items()):
            raise CosmicaiError(source, "expected a pickled model or a state_dict of tensors, found a dict of other values")
    else:
        kind = obj.pickled_class if isinstance(obj, Record) else type(obj).__name__
        raise CosmicaiError(source, f"expected a pickled model or state_dict, found {kind}")
    state_dict = checkpoint_filter_fn(state_dict, model)
    check_state_dict(state_dict, model, source)
    model.load_state_dict(state_dict, strict=True)
    save_checkpoint(model, output)
    return len(model.state_dict())
