"""Every bad input gets one line naming the file and the problem, a non-zero exit, and no output."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from helpers.cli import assert_clean_failure, run_cli
from safetensors.torch import save_file


def _write(path: Path, n: int = 20, shape: tuple = (5, 32, 32), **override: object) -> Path:
    rng = np.random.default_rng(0)
    data = {
        "images": rng.normal(size=(n, *shape)).astype(np.float32),
        "magnitudes": rng.normal(20, 1, (n, 5)).astype(np.float32),
        "object_id": np.arange(n, dtype=np.int64),
        "redshift": rng.uniform(0, 1, n).astype(np.float32),
    }
    data.update(override)
    with h5py.File(path, "w") as f:
        for k, v in data.items():
            if v is not None:
                f[k] = v
    return path


def _truncated(path: Path) -> Path:
    _write(path, n=200)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


BAD_DATASETS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing file": (lambda p: p, "no such file"),
    "truncated": (_truncated, "truncated or corrupt"),
    "not hdf5": (lambda p: (p.write_text("object_id,z\n1,0.1\n"), p)[1], "not a readable HDF5 file"),
    "missing dataset": (lambda p: _write(p, magnitudes=None), "missing dataset 'magnitudes'"),
    "wrong ndim": (lambda p: _write(p, shape=(5, 32)), "must have 4 dimensions"),
    "band count": (lambda p: _write(p, shape=(3, 32, 32)), "must have 5 bands"),
    "image too small": (lambda p: _write(p, shape=(5, 16, 16)), "smaller than the model's 32x32"),
    "row counts disagree": (
        lambda p: _write(p, magnitudes=np.zeros((19, 5), np.float32)),
        "'magnitudes' has shape (19, 5), expected (20, 5)",
    ),
    "duplicate ids": (lambda p: _write(p, object_id=np.array([1, 2, 3, 3] + list(range(10, 26)))), "duplicate object_id"),
    "integer images": (lambda p: _write(p, images=np.zeros((20, 5, 32, 32), np.int32)), "must be floating point"),
}


@pytest.mark.parametrize("case", list(BAD_DATASETS))
def test_bad_dataset_infer(case: str, tmp_path: Path, random_checkpoint: Path) -> None:
    make, message = BAD_DATASETS[case]
    path = make(tmp_path / "bad.h5")
    out = tmp_path / "out"
    out.mkdir()
    proc = run_cli("infer", path, "--checkpoint", random_checkpoint, "--output", out / "p.parquet")
    assert_clean_failure(proc, path, message, out)


@pytest.mark.parametrize("case", ["missing file", "truncated", "not hdf5", "missing dataset", "duplicate ids", "image too small"])
def test_bad_dataset_partition(case: str, tmp_path: Path) -> None:
    make, message = BAD_DATASETS[case]
    path = make(tmp_path / "bad.h5")
    out = tmp_path / "out"
    out.mkdir()
    proc = run_cli("partition", path, "--partition-mb", "1", "--outdir", out, "--manifest", out / "manifest.json")
    assert_clean_failure(proc, path, message, out)


@pytest.mark.parametrize("where", ["images", "magnitudes"])
def test_nan_fails_with_count_and_first_row(where: str, tmp_path: Path, random_checkpoint: Path) -> None:
    rng = np.random.default_rng(1)
    images = rng.normal(size=(600, 5, 32, 32)).astype(np.float32)
    mags = rng.normal(20, 1, (600, 5)).astype(np.float32)
    target = images if where == "images" else mags
    target[[7, 550]] = np.nan
    target[9] = np.inf
    path = _write(tmp_path / "nan.h5", n=600, images=images, magnitudes=mags)
    out = tmp_path / "out"
    out.mkdir()
    proc = run_cli("infer", path, "--checkpoint", random_checkpoint, "--output", out / "p.parquet", "--batch-size", "256")
    assert_clean_failure(proc, path, "3 row(s) with NaN or Inf", out)
    assert "first at row 7" in proc.stderr


def test_nan_flag_predicts_the_rest_and_metrics_exclude(tmp_path: Path, random_checkpoint: Path) -> None:
    images = np.random.default_rng(1).normal(size=(50, 5, 32, 32)).astype(np.float32)
    images[4, 0, 0, 0] = np.nan
    path = _write(tmp_path / "nan.h5", n=50, images=images)
    out = tmp_path / "p.parquet"
    run_cli("infer", path, "--checkpoint", random_checkpoint, "--output", out, "--on-invalid", "flag", check=True)
    t = pq.read_table(out)
    assert t.num_rows == 50
    valid, z = t.column("valid").to_numpy(zero_copy_only=False), t.column("z_pred").to_numpy()
    assert not valid[4] and valid.sum() == 49
    assert np.isnan(z[4]) and np.isfinite(np.delete(z, 4)).all()
    run_cli("metrics", out, "--output", tmp_path / "m.json", check=True)
    import json

    m = json.loads((tmp_path / "m.json").read_text())
    assert m["metrics"]["n"] == 49 and m["rows_excluded_invalid"] == 1


def test_missing_checkpoint(tmp_path: Path, tiny_dataset: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    ckpt = tmp_path / "nope.safetensors"
    proc = run_cli("infer", tiny_dataset, "--checkpoint", ckpt, "--output", out / "p.parquet")
    assert_clean_failure(proc, ckpt, "checkpoint not found", out)


def test_mismatched_checkpoint_lists_keys(tmp_path: Path, tiny_dataset: Path) -> None:
    ckpt = tmp_path / "wrong.safetensors"
    save_file({"head.weight": torch.zeros(10, 192), "extra.bias": torch.zeros(3)}, str(ckpt))
    out = tmp_path / "out"
    out.mkdir()
    proc = run_cli("infer", tiny_dataset, "--checkpoint", ckpt, "--output", out / "p.parquet")
    assert_clean_failure(proc, ckpt, "does not match the AstroMAE layout", out)
    assert "missing keys: cls_token" in proc.stderr
    assert "unexpected keys: extra.bias" in proc.stderr
    assert "mis-shaped keys: head.weight (10, 192) != (192, 192)" in proc.stderr


def test_corrupt_checkpoint(tmp_path: Path, tiny_dataset: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    for name in ("junk.safetensors", "junk.pt"):
        ckpt = tmp_path / name
        ckpt.write_bytes(b"\x00garbage" * 10)
        proc = run_cli("infer", tiny_dataset, "--checkpoint", ckpt, "--output", out / "p.parquet")
        assert_clean_failure(proc, ckpt, "not a", out)


@pytest.mark.parametrize("mb", ["0", "-1"])
def test_partition_mb_must_be_positive(mb: str, tmp_path: Path, tiny_dataset: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    proc = run_cli("partition", tiny_dataset, "--partition-mb", mb, "--outdir", out, "--manifest", out / "m.json")
    assert_clean_failure(proc, tiny_dataset, "partition_mb must be > 0", out)


@pytest.mark.parametrize(
    "args,message",
    [
        (("--manifest", "m.json", "--partitions", "part_00000"), "a job needs --manifest, --job, --partitions"),
        (
            (
                "data.h5",
                "--manifest",
                "m.json",
                "--job",
                "job_00000",
                "--partitions",
                "part_00000",
                "--predictions-dir",
                "p",
                "--record",
                "r",
            ),
            "no dataset file",
        ),
        (("data.h5",), "give a dataset file and --output, or a job"),
    ],
    ids=["job-incomplete", "job-and-file", "file-without-output"],
)
def test_infer_modes_are_refused_when_mixed_or_incomplete(args: tuple, message: str, tmp_path: Path, random_checkpoint: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    proc = run_cli("infer", *args, "--checkpoint", random_checkpoint, cwd=out)
    assert_clean_failure(proc, Path("cosmicai infer"), message, out)
