"""No config value is ever shell syntax: the workflow runs on dataset, checkpoint and results paths made of it."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers.workflow import snakemake, tiny_config

# Each would run a command (or split an argument) if it reached a shell unquoted; the newline ends a command line.
HOSTILE = ["sp ace", "quo'te", 'dq"uote', "$(touch PWNED_subst)", "`touch PWNED_backtick`", ";touch PWNED_semicolon;",
           "&touch PWNED_amp&", "|touch PWNED_pipe|", "new\nline", "$HOME"]  # fmt: skip
NAME = " ".join(HOSTILE)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_hostile_paths_run_as_names(tmp_path: Path, tiny_dataset: Path, random_checkpoint: Path) -> None:
    folder = tmp_path / f"in {NAME}"
    folder.mkdir()
    dataset = shutil.copy(tiny_dataset, folder / f"data {NAME}.h5")
    checkpoint = shutil.copy(random_checkpoint, folder / f"model {NAME}.safetensors")
    work = tmp_path / "work"
    work.mkdir()
    results = f"results {NAME}"
    config = tiny_config(Path(dataset), Path(checkpoint), results=results)
    proc = snakemake(work, "local", config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ran = [p for p in tmp_path.rglob("PWNED*")] + [p for p in Path.cwd().glob("PWNED*")]
    assert not ran, ran  # nothing else ran
    merged = pq.read_table(work / results / "predictions.parquet")
    with h5py.File(tiny_dataset) as f:
        np.testing.assert_array_equal(merged.column("object_id").to_numpy(), f["object_id"][:])
    assert merged.num_rows == 300 and np.isfinite(merged.column("z_pred").to_numpy()).all()
    assert (work / results / "summary" / "run_summary.json").exists()
