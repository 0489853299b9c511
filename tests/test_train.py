"""`cosmicai train` writes a checkpoint in the published layout that the engines load and run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from helpers.cli import run_cli

from cosmicai.model.train import train


def test_train_writes_loadable_checkpoint(tmp_path: Path, tiny_dataset: Path) -> None:
    ckpt = tmp_path / "trained.safetensors"
    proc = run_cli("train", tiny_dataset, "--output", ckpt, "--epochs", "1", "--batch-size", "100", check=True)
    stats = json.loads(proc.stdout)
    assert stats["rows"] == 300 and stats["steps"] == 3 and np.isfinite(stats["final_loss"]) and not stats["stopped_at_max_minutes"]
    out = tmp_path / "pred.parquet"
    run_cli(
        "infer", tiny_dataset, "--checkpoint", ckpt, "--output", out, "--runtime", "torch", check=True
    )  # no ONNX export: the layout is what is checked
    z = pq.read_table(out).column("z_pred").to_numpy()
    assert len(z) == 300 and np.isfinite(z).all()


def test_train_refuses_unlabelled_data(tmp_path: Path) -> None:
    data = tmp_path / "unlabelled.h5"
    run_cli("synth", data, "--n", "20", "--unlabelled", check=True)
    proc = run_cli("train", data, "--output", tmp_path / "m.safetensors")
    assert proc.returncode == 1 and "training needs a 'redshift' dataset" in proc.stderr
    assert not (tmp_path / "m.safetensors").exists()


def test_max_minutes_stops_all_epochs(tmp_path: Path, tiny_dataset: Path) -> None:
    # A cap already passed after the first step: training ends there, in every epoch (3 x 3 steps uncapped).
    stats = train(tiny_dataset, tmp_path / "capped.safetensors", epochs=3, batch_size=100, max_minutes=1e-9)
    assert stats["steps"] == 1 and stats["stopped_at_max_minutes"]
    assert (tmp_path / "capped.safetensors").exists()
