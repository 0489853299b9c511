"""`make bench-gpu` (cosmicai bench --gpu): one clear line without a GPU; the same steps run end to end on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.cli import run_cli

from cosmicai.bench.gpu import NO_GPU, format_gpu_table, run_gpu_bench, tile_dataset
from cosmicai.data.dataset import inspect
from cosmicai.engines.base import cuda_available


@pytest.mark.skipif(cuda_available(), reason="this machine has a GPU: bench-gpu would measure")
def test_without_a_gpu_one_line_and_nothing_written(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    proc = run_cli("bench", "--gpu", "--output", out)
    assert proc.returncode == 0 and proc.stdout.strip() == NO_GPU and not proc.stderr.strip()
    assert not out.exists()


def test_tiled_dataset_has_fresh_ids(tmp_path: Path, tiny_dataset: Path) -> None:
    tile_dataset(tiny_dataset, tmp_path / "big.h5", 1000)
    info = inspect(tmp_path / "big.h5")  # checks the ids are unique
    assert info.n_rows == 1000 and info.has_redshift


@pytest.mark.slow
@pytest.mark.timeout(900)  # the engines bench and the whole local profile on CPU
def test_same_steps_on_cpu(tmp_path: Path, random_checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "gpu.json"
    result = run_gpu_bench(
        str(out),
        str(random_checkpoint),
        n=256,
        rows=600,
        device="cpu",
        variants=["cai", "torch-fp32", "torch-bf16"],
        partition_mb=3,
        batch_size=128,
    )
    saved = json.loads(out.read_text())
    assert saved["end_to_end"] == result["end_to_end"]
    rows = {r["variant"]: r for r in saved["engines"]["table"]}
    assert set(rows) == {"cai", "torch-fp32", "torch-bf16"} and all(r["samples_per_s"] > 0 for r in rows.values())
    assert rows["torch-fp32"]["max_abs_dz_vs_cai_fp32"] < 1e-4
    e2e = saved["end_to_end"]
    assert e2e["rows"] == 600 and e2e["partitions"] == 4 and e2e["pipeline_wall_s"] > e2e["inference_wall_s"] > 0
    printed = capsys.readouterr().out
    assert format_gpu_table(saved) in printed and "end to end, local profile, 600 rows" in printed
