"""int8 for a run: calibrate the quantized graph on a sample of the run's rows and gate it against fp32.

The sample is blocks of 64 consecutive rows spread evenly over the run's partitions (a fifth of them
calibrate, the rest are the gate's held-out rows). The accuracy gate infers the gate rows with the fp32
and the int8 graph in the same runtime and compares photo-z quality against the spectroscopic
redshifts: Δsigma_NMAD ≤ 0.002 and Δoutlier_frac ≤ 0.005 (int8 minus fp32). A run with no
redshifts is gated on the stated default sample: DEFAULT_GATE_ROWS synthetic labelled galaxies
(`cosmicai synth`, seed DEFAULT_GATE_SEED). A graph that fails stops the run before its inference.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import numpy as np

from cosmicai.data.dataset import read_blocks
from cosmicai.data.integrity import PartitionRead
from cosmicai.errors import CosmicaiError

BLOCK = 64  # rows per sampled block: one contiguous read each
CALIBRATION_ROWS = 512
GATE_ROWS = 2048
DEFAULT_GATE_ROWS, DEFAULT_GATE_SEED = 2048, 20261201
BOUNDS = {"d_sigma_nmad": 0.002, "d_outlier_frac": 0.005}


@dataclasses.dataclass(frozen=True)
class Sample:
    """The calibration rows and the gate's labelled rows of a run."""

    calib_images: np.ndarray
    calib_magnitudes: np.ndarray
    gate_images: np.ndarray
    gate_magnitudes: np.ndarray
    gate_redshift: np.ndarray
    gate_source: str  # "run" (labelled rows of the run) or "default" (the synthetic sample)


def _blocks(reads: list[PartitionRead], n_blocks: int) -> list[tuple[PartitionRead, slice]]:
    """n_blocks blocks of BLOCK rows at evenly spaced offsets over the partitions' rows, taken in order."""
    sizes = np.array([r.rows for r in reads])
    total = int(sizes.sum())
    if total == 0:
        return []
    n_blocks = min(n_blocks, max(1, total // BLOCK))
    ends = np.cumsum(sizes)
    out = []
    for offset in np.linspace(0, total, n_blocks, endpoint=False).astype(int):
        i = int(np.searchsorted(ends, offset, side="right"))
        r = reads[i]
        local = r.start + offset - (ends[i] - sizes[i])
        out.append((r, slice(int(local), int(min(local + BLOCK, r.stop)))))
    return out


def _default_gate_rows() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from cosmicai.data.synth import synthesize

    with tempfile.TemporaryDirectory(prefix="cosmicai-gate-") as work:
        path = Path(work) / "gate.h5"
        synthesize(path, DEFAULT_GATE_ROWS, seed=DEFAULT_GATE_SEED)
        (b,) = read_blocks(path, [slice(0, DEFAULT_GATE_ROWS)])
    return b.images, b.magnitudes, b.redshift  # type: ignore[return-value]


def run_sample(reads: list[PartitionRead], calibration_rows: int = CALIBRATION_ROWS, gate_rows: int = GATE_ROWS) -> Sample:
    """Calibration and gate rows of the run's partitions (each source opened once)."""
    every = max(2, round((calibration_rows + gate_rows) / calibration_rows))  # every n-th block calibrates
    chosen = _blocks(reads, -(-(calibration_rows + gate_rows) // BLOCK))
    by_file: dict[tuple[str, str | None], list[int]] = {}
    for k, (r, _) in enumerate(chosen):
        by_file.setdefault((r.uri, r.version_id), []).append(k)
    batches: list = [None] * len(chosen)
    for (uri, version), ks in by_file.items():
        for k, b in zip(ks, read_blocks(uri, [chosen[k][1] for k in ks], version)):
            batches[k] = b
    calib = [b for k, b in enumerate(batches) if k % every == 0 or len(batches) == 1]
    gate = [b for k, b in enumerate(batches) if k % every != 0] or calib
    if not calib:
        raise CosmicaiError(reads[0].uri if reads else "run", "no rows to calibrate the int8 graph on")
    ci, cm = np.concatenate([b.images for b in calib]), np.concatenate([b.magnitudes for b in calib])
    if all(b.redshift is not None for b in gate):
        gi, gm = np.concatenate([b.images for b in gate]), np.concatenate([b.magnitudes for b in gate])
        gz, source = np.concatenate([b.redshift for b in gate]), "run"
    else:
        (gi, gm, gz), source = _default_gate_rows(), "default"
    ok = np.isfinite(gi).all(axis=(1, 2, 3)) & np.isfinite(gm).all(axis=1) & np.isfinite(gz)
    cok = np.isfinite(ci).all(axis=(1, 2, 3)) & np.isfinite(cm).all(axis=1)
    return Sample(ci[cok], cm[cok], gi[ok], gm[ok], gz[ok], source)


def run_reads(manifest_path: str | os.PathLike | None, data: str | os.PathLike | None) -> list[PartitionRead]:
    """The rows of a run: every partition of a manifest, or a whole dataset file."""
    from cosmicai.data.dataset import inspect
    from cosmicai.data.integrity import load_manifest, partition_reads

    if bool(manifest_path) == bool(data):
        raise CosmicaiError("cosmicai quantize", "give either a dataset file or --manifest")
    if manifest_path:
        manifest = load_manifest(manifest_path)
        return partition_reads(manifest_path, [e["name"] for e in manifest["partitions"]], manifest)
    return [PartitionRead(Path(str(data)).name, str(data), 0, inspect(data, check_ids=False).n_rows)]


def int8_graph_for_run(
    checkpoint: str | os.PathLike, onnx: str | os.PathLike | None, reads: list[PartitionRead], runtime: str, threads: int | None
) -> Path:
    """The graph an int8 run infers with: the given graph if already int8, else one quantized (and gated) for these rows."""
    import sys

    from cosmicai.engines.onnx_engine import onnx_for
    from cosmicai.engines.quantize import graph_precision

    graph = onnx_for(checkpoint, onnx)
    if graph_precision(graph) == "int8":
        return graph
    path, report = prepare_int8(graph, reads, runtime=runtime, threads=threads)
    print(gate_line(report), file=sys.stderr)
    return path


def _predict(
    graph: str | os.PathLike, precision: str, runtime: str, threads: int | None, images: np.ndarray, mags: np.ndarray
) -> np.ndarray:
    from cosmicai.engines.loader import load_engine

    engine = load_engine(graph, "cpu", precision, runtime, threads=threads)
    return np.concatenate([engine.predict(images[i : i + 512], mags[i : i + 512]) for i in range(0, len(images), 512)])


def check_gate(
    fp32_graph: str | os.PathLike,
    int8_graph: str | os.PathLike,
    sample: Sample,
    runtime: str = "auto",
    threads: int | None = None,
    bounds: dict[str, float] = BOUNDS,
) -> dict:
    """The gate's report (metrics at fp32 and int8, the deltas, the bounds, passed); raise CosmicaiError when it fails."""
    from cosmicai.reporting.metrics import point_metrics

    z32 = _predict(fp32_graph, "fp32", runtime, threads, sample.gate_images, sample.gate_magnitudes)
    z8 = _predict(int8_graph, "int8", runtime, threads, sample.gate_images, sample.gate_magnitudes)
    m32, m8 = point_metrics(z32, sample.gate_redshift), point_metrics(z8, sample.gate_redshift)
    deltas = {
        "d_sigma_nmad": m8["sigma_nmad"] - m32["sigma_nmad"],
        "d_outlier_frac": m8["outlier_frac"] - m32["outlier_frac"],
    }
    over = {k: deltas[k] - bounds[k] for k in deltas}  # only a worse int8 fails: int8 minus fp32 above the bound
    report = {
        "rows": int(len(sample.gate_redshift)),
        "sample": sample.gate_source,
        "calibration_rows": int(len(sample.calib_images)),
        "fp32": {k: m32[k] for k in ("sigma_nmad", "outlier_frac", "bias")},
        "int8": {k: m8[k] for k in ("sigma_nmad", "outlier_frac", "bias")},
        **deltas,
        "max_abs_dz": float(np.abs(z8 - z32).max()) if len(z8) else 0.0,
        "bounds": dict(bounds),
        "passed": all(v <= 0 for v in over.values()),
    }
    if not report["passed"]:
        failed = "; ".join(f"Δ{k[2:]} {deltas[k]:+.4f} exceeds {bounds[k]} by {over[k]:.4f}" for k in over if over[k] > 0)
        raise CosmicaiError(int8_graph, f"int8 graph fails the accuracy gate on {report['rows']} {sample.gate_source} rows: {failed}")
    return report


def prepare_int8(
    fp32_graph: str | os.PathLike,
    reads: list[PartitionRead],
    output: str | os.PathLike | None = None,
    gate_report: str | os.PathLike | None = None,
    runtime: str = "auto",
    threads: int | None = None,
    bounds: dict[str, float] = BOUNDS,
) -> tuple[Path, dict]:
    """The run's int8 graph (cached by the fp32 graph's and the sample's sha256) and its gate report; raise when it fails the gate.

    `output`: also copy the graph there; `gate_report`: write the report there (a failed gate writes neither).
    """
    import time

    from cosmicai.atomic import write_json
    from cosmicai.engines.quantize import copy_graph, int8_for, sample_digest

    t = time.perf_counter()
    sample = run_sample(reads)
    graph, made = int8_for(fp32_graph, sample.calib_images, sample.calib_magnitudes)
    quantize_s = time.perf_counter() - t
    try:
        report = check_gate(fp32_graph, graph, sample, runtime, threads, bounds)
    except CosmicaiError:
        if made:  # a graph that fails is not kept for the next run to find
            graph.unlink(missing_ok=True)
        raise
    report.update(
        graph=graph.name,
        calibration_sha256=sample_digest(sample.calib_images, sample.calib_magnitudes),
        quantized_now=made,
        quantize_s=quantize_s,
        gate_s=time.perf_counter() - t - quantize_s,
    )
    if output is not None:
        copy_graph(graph, output)
    if gate_report is not None:
        write_json(gate_report, report)
    return Path(output) if output is not None else graph, report


def gate_line(report: dict) -> str:
    """One line for logs and the run summary."""
    return (
        f"int8 accuracy gate passed on {report['rows']} {report['sample']} rows: Δsigma_NMAD {report['d_sigma_nmad']:+.4f}"
        f" (bound {report['bounds']['d_sigma_nmad']}), Δoutlier_frac {report['d_outlier_frac']:+.4f}"
        f" (bound {report['bounds']['d_outlier_frac']}), max |Δz| {report['max_abs_dz']:.4f}"
    )
