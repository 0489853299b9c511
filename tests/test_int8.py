"""precision int8: the quantized graph, its cache, the accuracy gate (pass, forced failure), and int8 runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers.cli import run_cli

from cosmicai.data.integrity import PartitionRead
from cosmicai.data.synth import synthesize
from cosmicai.errors import CosmicaiError


@pytest.fixture(scope="module")
def calib_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,200 labelled galaxies: a 512-row calibration sample and a held-out gate sample."""
    path = tmp_path_factory.mktemp("int8") / "calib.h5"
    synthesize(path, 1200, seed=11)
    return path


@pytest.fixture(scope="module")
def int8_graph(onnx_graph: Path, calib_data: Path) -> Path:
    from cosmicai.engines.quantize import int8_for
    from cosmicai.int8_gate import run_sample

    sample = run_sample([PartitionRead("calib", str(calib_data), 0, 1200)])
    graph, made = int8_for(onnx_graph, sample.calib_images, sample.calib_magnitudes)
    assert made
    assert int8_for(onnx_graph, sample.calib_images, sample.calib_magnitudes) == (graph, False)  # cached: runs once
    return graph


def test_sample_spread_and_default_when_unlabelled(tmp_path: Path, calib_data: Path) -> None:
    from cosmicai.int8_gate import DEFAULT_GATE_ROWS, run_sample

    s = run_sample([PartitionRead("a", str(calib_data), 0, 600), PartitionRead("b", str(calib_data), 600, 1200)])
    assert s.gate_source == "run" and len(s.calib_images) >= 192 and len(s.gate_redshift) >= 700
    assert s.calib_images.shape[1:] == (5, 32, 32) and s.calib_images.dtype == np.float32
    unlabelled = tmp_path / "unlabelled.h5"
    synthesize(unlabelled, 400, seed=2, labelled=False)
    u = run_sample([PartitionRead("u", str(unlabelled), 0, 400)])
    assert u.gate_source == "default" and len(u.gate_redshift) == DEFAULT_GATE_ROWS


@pytest.mark.slow  # quantizing the model: ~20 s and more on a loaded machine
@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_int8_graph_tracks_fp32(int8_graph: Path, onnx_graph: Path, calib_data: Path, runtime: str) -> None:
    from cosmicai.engines.loader import load_engine
    from cosmicai.engines.quantize import graph_precision

    assert graph_precision(int8_graph) == "int8" and graph_precision(onnx_graph) == "fp32"
    from cosmicai.data.dataset import read_blocks

    (b,) = read_blocks(calib_data, [slice(600, 856)])
    z32 = load_engine(onnx_graph, "cpu", "fp32", runtime).predict(b.images, b.magnitudes)
    engine = load_engine(int8_graph, "cpu", "int8", runtime)
    assert (engine.runtime, engine.precision) == (runtime, "int8")
    z8 = engine.predict(b.images, b.magnitudes)
    assert np.isfinite(z8).all() and np.abs(z8 - z32).max() < 0.1 * max(1.0, np.abs(z32).max())
    with pytest.raises(CosmicaiError, match="this one is fp32"):
        load_engine(onnx_graph, "cpu", "int8", runtime)


@pytest.mark.slow
def test_int8_graph_is_symmetric_and_keeps_the_first_layers_and_inception_fp32(int8_graph: Path, onnx_graph: Path) -> None:
    import onnx
    from onnx import numpy_helper

    from cosmicai.engines.quantize import fp32_nodes

    kept = fp32_nodes(onnx.load(str(onnx_graph)))
    assert "/patch_embed/proj/Conv" in kept and "/magnitude_block/magnitude_block.0/Gemm" in kept
    assert any(k.startswith("/vis_inception/") and k.endswith("/Conv") for k in kept) and "/vis_inception/vis_inception.12/Gemm" in kept
    graph = onnx.load(str(int8_graph)).graph
    made_by = {o: n for n in graph.node for o in n.output}
    quantized = {
        n.name
        for n in graph.node
        if n.op_type in ("MatMul", "Gemm", "Conv")
        and any(made_by.get(i) is not None and made_by[i].op_type == "DequantizeLinear" for i in n.input)
    }
    assert quantized and not quantized & set(kept) and any(q.startswith("/blocks.") or "/blocks/" in q for q in quantized)
    inits = {t.name: t for t in graph.initializer}
    zero_points = [numpy_helper.to_array(inits[n.input[2]]) for n in graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    assert zero_points and all((z == 0).all() for z in zero_points)  # symmetric: no zero-point Subtract in OpenVINO


@pytest.mark.slow
def test_quantize_gate_passes_then_a_tightened_bound_stops(tmp_path: Path, int8_graph: Path, onnx_graph: Path, calib_data: Path) -> None:
    out, report = tmp_path / "int8.onnx", tmp_path / "gate.json"
    proc = run_cli("quantize", onnx_graph, calib_data, "--output", out, "--gate-report", report, "--threads", "2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("int8 accuracy gate passed on ")
    gate = json.loads(report.read_text())
    assert gate["passed"] and gate["sample"] == "run" and gate["quantized_now"] is False  # the fixture's graph, from the cache
    assert gate["d_sigma_nmad"] <= 0.002 and gate["d_outlier_frac"] <= 0.005 and out.read_bytes() == int8_graph.read_bytes()

    failed, failed_report = tmp_path / "failed.onnx", tmp_path / "failed.json"
    proc = run_cli("quantize", onnx_graph, calib_data, "--output", failed, "--gate-report", failed_report, "--max-d-sigma-nmad", "-1")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "fails the accuracy gate" in lines[0] and "exceeds -1.0 by" in lines[0], proc.stderr
    assert not failed.exists() and not failed_report.exists()


@pytest.mark.slow
def test_infer_int8_gates_before_inferring(
    tmp_path: Path, int8_graph: Path, onnx_graph: Path, random_checkpoint: Path, calib_data: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from cosmicai.cli import main
    from cosmicai.int8_gate import BOUNDS

    args = ["infer", str(calib_data), "--checkpoint", str(random_checkpoint), "--onnx", str(onnx_graph), "--precision", "int8"]
    monkeypatch.setitem(BOUNDS, "d_outlier_frac", -1.0)  # a forced failure: no int8 graph can pass
    broken = tmp_path / "broken.parquet"
    assert main([*args, "--output", str(broken)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fails the accuracy gate" in err[0] and "Δoutlier_frac" in err[0]
    assert not broken.exists() and not broken.with_suffix(".json").exists()

    monkeypatch.setitem(BOUNDS, "d_outlier_frac", 0.005)
    good = tmp_path / "good.parquet"
    assert main([*args, "--output", str(good)]) == 0
    timings = json.loads(good.with_suffix(".json").read_text())
    assert timings["precision"] == "int8" and timings["rows"] == 1200
    assert "int8 accuracy gate passed" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_local_profile_int8(tmp_path: Path, tiny_dataset: Path, random_checkpoint: Path) -> None:
    from helpers.workflow import sidecars, snakemake, tiny_config

    config = tiny_config(tiny_dataset, random_checkpoint)
    config["inference"]["precision"] = "int8"
    proc = snakemake(tmp_path, "local", config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads((tmp_path / "results" / "summary" / "run_summary.json").read_text())
    gate = run["int8_gate"]
    assert gate["passed"] and gate["sample"] == "run" and gate["d_sigma_nmad"] <= 0.002 and gate["d_outlier_frac"] <= 0.005
    assert {(s["precision"], s["runtime"]) for s in sidecars(tmp_path)} == {("int8", "openvino")}
    assert "int8 accuracy gate passed" in (tmp_path / "logs" / "quantize_int8.log").read_text()


def test_bench_says_what_is_not_supported(monkeypatch: pytest.MonkeyPatch) -> None:
    from cosmicai.bench import engines
    from cosmicai.engines import base

    assert "CPU runtimes only" in engines.unsupported("torch-int8", "cuda")
    assert engines.unsupported("openvino-int8", "cpu") is None
    monkeypatch.setattr(base, "cpu_bf16", lambda: False)
    assert "no AVX-512 BF16/AMX" in engines.unsupported("openvino-bf16", "cpu")
    table = engines.format_table(
        {
            "device": "cpu",
            "rows": 1,
            "batch_size": 1,
            "rounds": 1,
            "fixed_cost_s": {},
            "table": [{"variant": "openvino-bf16", "error": "not supported: x"}],
        }
    )
    assert "| openvino-bf16 | not supported: x |" in table
