"""`cosmicai bench`: the CAI method against this project's engines, side by side on the same data and weights.

Each variant runs in its own child process (so peak RSS is its own), in interleaved rounds (so
machine noise hits all variants alike); the table reports the best round. The CAI baseline is the
paper's worker: the whole partition loaded into a TensorDataset, a DataLoader at batch 512, the
plain eager model in fp32 under no_grad. Engines stream the partition from HDF5 as jobs do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cosmicai.atomic import write_json

CPU_VARIANTS = (
    "cai",
    "torch-fp32",
    "onnxruntime-fp32",
    "openvino-fp32",
    "torch-bf16",
    "openvino-bf16",
    "onnxruntime-int8",
    "openvino-int8",
)
CUDA_VARIANTS = ("cai", "torch-fp32", "torch-tf32", "torch-bf16", "torch-fp16", "torch-bf16-compile", "torch-int8")


def _child(variant: str, data: str, checkpoint: str, onnx: str, batch_size: int, device: str, out: str) -> None:
    """Run one variant once and write its timings and predictions (runs in a fresh process)."""
    t0 = time.perf_counter()
    from cosmicai.resources import peak_rss_mb

    if variant == "cai":
        import h5py
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        from cosmicai.model.checkpoint import load_model

        dev = torch.device("cuda" if device == "cuda" else "cpu")
        model = load_model(checkpoint).to(dev)
        with h5py.File(data, "r") as f:  # CAI loads the whole partition into memory
            dataset = TensorDataset(torch.from_numpy(f["images"][:]), torch.from_numpy(f["magnitudes"][:]))
        with torch.no_grad():  # one warm-up batch outside the timed pass, as for every variant
            model(dataset.tensors[0][:512].to(dev), dataset.tensors[1][:512].to(dev))
        ready = time.perf_counter()
        cpu0 = time.process_time()
        preds = []
        with torch.no_grad():
            for images, mags in DataLoader(dataset, batch_size=512):  # the CAI method's batch
                preds.append(model(images.to(dev), mags.to(dev)).cpu())
        z = torch.cat(preds).numpy()
        elapsed = time.perf_counter() - ready
        cpu_s = time.process_time() - cpu0
    else:
        from cosmicai.engines.loader import load_engine
        from cosmicai.infer import infer_partition

        runtime, precision, *rest = variant.split("-")
        engine = load_engine(checkpoint, device, precision, runtime, compile=bool(rest), onnx=onnx if runtime != "torch" else None)
        import h5py

        # One warm-up batch outside the timed pass, for every variant: a compiled graph's compilation, OpenVINO's
        # and ONNX Runtime's first-shape set-up; whole-process costs are measured apart (_fixed_cost).
        with h5py.File(data, "r") as f:
            engine.predict(f["images"][:batch_size], f["magnitudes"][:batch_size])
        ready = time.perf_counter()
        pred = Path(out).with_suffix(".parquet")
        cpu0 = time.process_time()
        timings = infer_partition(data, engine, pred, None, batch_size, progress=False)
        cpu_s = time.process_time() - cpu0
        elapsed = timings["read_s"] + timings["compute_s"]
        import pyarrow.parquet as pq

        z = pq.read_table(pred).column("z_pred").to_numpy()
    np.save(Path(out).with_suffix(".npy"), z)
    write_json(
        out,
        {
            "variant": variant,
            "rows": len(z),
            "seconds": elapsed,
            "samples_per_s": len(z) / elapsed,
            "samples_per_cpu_s": len(z) / cpu_s,  # the rate per vCPU-second (Lambda bills vCPU share), robust to a loaded machine
            "setup_s": ready - t0,
            "peak_rss_mb": peak_rss_mb(),
        },
    )


def _run_child(variant: str, data: Path, checkpoint: Path, onnx: Path, batch_size: int, device: str, work: Path, rnd: int) -> dict:
    out = work / f"{variant}.{rnd}.json"
    cmd = [
        sys.executable,
        "-m",
        "cosmicai.bench.engines",
        variant,
        str(data),
        str(checkpoint),
        str(onnx),
        str(batch_size),
        device,
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"variant": variant, "error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    result = json.loads(out.read_text())
    result["z"] = np.load(out.with_suffix(".npy"))
    return result


def _fixed_cost(checkpoint: Path, onnx: Path, work: Path, device: str) -> dict[str, float]:
    """Wall time of a whole `cosmicai infer` process on a 64-row partition: start, imports, model load."""
    from cosmicai.data.synth import synthesize

    tiny = work / "tiny.h5"
    synthesize(tiny, 64, seed=99)
    costs = {}
    for runtime in ("torch",) if device == "cuda" else ("torch", "onnxruntime"):  # the ONNX runtimes are CPU-only
        extra = ["--onnx", str(onnx)] if runtime != "torch" else []
        t = time.perf_counter()
        subprocess.run(
            [
                str(Path(sys.executable).parent / "cosmicai"),
                "infer",
                str(tiny),
                "--checkpoint",
                str(checkpoint),
                "--output",
                str(work / f"tiny-{runtime}.parquet"),
                "--runtime",
                runtime,
                "--device",
                device,
                *extra,
            ],
            check=True,
            capture_output=True,
        )
        costs[runtime] = time.perf_counter() - t
    return costs


def _memory(checkpoint: Path, onnx: Path, work: Path) -> list[dict]:
    """Peak RSS of a `cosmicai infer` job (default runtime) on 100 MiB and 200 MiB partitions."""
    from cosmicai.data.dataset import ROW_BYTES
    from cosmicai.data.synth import synthesize

    rows = []
    for mib in (100, 200):
        part = work / f"part-{mib}mib.h5"
        synthesize(part, int(mib * 2**20 / ROW_BYTES), seed=mib)
        side = work / f"mem-{mib}.json"
        subprocess.run(
            [
                str(Path(sys.executable).parent / "cosmicai"),
                "infer",
                str(part),
                "--checkpoint",
                str(checkpoint),
                "--onnx",
                str(onnx),
                "--output",
                str(work / f"mem-{mib}.parquet"),
                "--sidecar",
                str(side),
            ],
            check=True,
            capture_output=True,
        )
        t = json.loads(side.read_text())
        rows.append({"partition_mib": mib, "rows": t["rows"], "peak_rss_mb": t["peak_rss_mb"], "runtime": t["runtime"]})
        part.unlink()
    return rows


def _default_checkpoint(work: Path) -> str:
    """The demo model when it has been trained here, else a randomly initialised one (speed does not depend on weights)."""
    demo = Path("results/model/demo.safetensors")
    if demo.exists():
        return str(demo)
    import torch

    from cosmicai.model.astromae import build_model
    from cosmicai.model.checkpoint import save_checkpoint

    torch.manual_seed(0)
    checkpoint = str(work / "random.safetensors")
    save_checkpoint(build_model(), checkpoint)
    return checkpoint


def unsupported(variant: str, device: str) -> str | None:
    """Why a variant cannot run here (None when it can): bf16 on a CPU without bf16 units, int8 on CUDA."""
    from cosmicai.engines.base import cpu_bf16

    precision = variant.split("-")[1] if "-" in variant else "fp32"
    if device == "cpu" and precision == "bf16" and not cpu_bf16():
        return "not supported: this CPU has no AVX-512 BF16/AMX (or Arm BF16) units"
    if precision == "int8" and (device == "cuda" or variant.startswith("torch")):
        return "not supported: the int8 graph runs in the CPU runtimes only (OpenVINO, ONNX Runtime), not in PyTorch/CUDA"
    return None


def _int8_graph(onnx: Path, data: Path, n: int) -> tuple[Path, dict]:
    """The int8 graph of the bench's fp32 graph, calibrated on a sample of the bench data (as a run does)."""
    import time as _time

    from cosmicai.data.integrity import PartitionRead
    from cosmicai.engines.quantize import int8_for
    from cosmicai.int8_gate import CALIBRATION_ROWS, run_sample

    t = _time.perf_counter()
    # as many calibration rows as a run's (CALIBRATION_ROWS, when the bench has twice that): a 256-row
    # sample let one bright galaxy outside its ranges move a prediction by 0.86
    sample = run_sample(
        [PartitionRead("bench", str(data), 0, n)], calibration_rows=CALIBRATION_ROWS, gate_rows=max(CALIBRATION_ROWS, n - CALIBRATION_ROWS)
    )
    graph, _ = int8_for(onnx, sample.calib_images, sample.calib_magnitudes)
    return graph, {"calibration_rows": len(sample.calib_images), "quantize_s": _time.perf_counter() - t}


def _row(variant: str, r: dict, base: dict, z_spec: np.ndarray, ref_metrics: dict, fp32: dict | None = None) -> dict:
    """A variant's line of the table: speed against the CAI method (and its runtime at fp32), the change in photo-z quality."""
    from cosmicai.int8_gate import BOUNDS
    from cosmicai.reporting.metrics import point_metrics

    if "error" in r:
        return {"variant": variant, "error": r["error"]}
    m = point_metrics(r["z"], z_spec)
    d_sigma, d_out = m["sigma_nmad"] - ref_metrics["sigma_nmad"], m["outlier_frac"] - ref_metrics["outlier_frac"]
    return {
        "variant": variant,
        "samples_per_s": r["samples_per_s"],
        "samples_per_cpu_s": r.get("samples_per_cpu_s"),
        "ratio_vs_cai": r["samples_per_s"] / base["samples_per_s"],
        "ratio_vs_fp32": r["samples_per_s"] / fp32["samples_per_s"] if fp32 and "samples_per_s" in fp32 else None,
        "max_abs_dz_vs_cai_fp32": float(np.abs(r["z"] - base["z"]).max()),
        "d_sigma_nmad": d_sigma,
        "d_outlier_frac": d_out,
        "within_gate": d_sigma <= BOUNDS["d_sigma_nmad"] and d_out <= BOUNDS["d_outlier_frac"],
        "peak_rss_mb": r["peak_rss_mb"],
        "setup_s": r["setup_s"],
    }


def run_bench(
    n: int = 4096,
    checkpoint: str | None = None,
    batch_size: int = 512,
    device: str = "auto",
    rounds: int = 2,
    variants: list[str] | None = None,
    output: str | None = None,
    memory: bool = True,
    quiet: bool = False,
) -> dict:
    """Benchmark the variants; print a table (unless quiet); write JSON."""
    from cosmicai.data.synth import synthesize
    from cosmicai.engines.base import cuda_available
    from cosmicai.engines.onnx_engine import export_onnx
    from cosmicai.reporting.metrics import point_metrics

    device = ("cuda" if cuda_available() else "cpu") if device == "auto" else device
    variants = list(variants or (CUDA_VARIANTS if device == "cuda" else CPU_VARIANTS))
    variants = variants if "cai" in variants else ["cai", *variants]  # the baseline every row is compared with
    work = Path(tempfile.mkdtemp(prefix="cosmicai-bench-"))
    data = work / "bench.h5"
    synthesize(data, n, seed=2024)
    checkpoint = checkpoint or _default_checkpoint(work)
    onnx = work / "model.onnx"
    export_onnx(checkpoint, onnx)
    import h5py

    with h5py.File(data, "r") as f:
        z_spec = f["redshift"][:]

    graphs = {"fp32": onnx}
    skipped = {v: why for v in variants if (why := unsupported(v, device))}
    int8 = {}
    if any(v.endswith("-int8") and v not in skipped for v in variants):
        graphs["int8"], int8 = _int8_graph(onnx, data, n)
    best: dict[str, dict] = {v: {"variant": v, "error": why} for v, why in skipped.items()}
    for rnd in range(rounds):
        for v in variants:
            if v in skipped:
                continue
            graph = graphs["int8" if v.endswith("-int8") else "fp32"]
            r = _run_child(v, data, Path(checkpoint), graph, batch_size, device, work, rnd)
            if r.get("samples_per_s", -1.0) > best.get(v, {}).get("samples_per_s", -1.0) or v not in best:
                best[v] = r
    ref_metrics = point_metrics(best["cai"]["z"], z_spec)
    table = [_row(v, best[v], best["cai"], z_spec, ref_metrics, best.get(f"{v.split('-')[0]}-fp32")) for v in variants]
    result = {
        "device": device,
        "rows": n,
        "batch_size": batch_size,
        "rounds": rounds,
        "checkpoint": checkpoint,
        "threads": len(os.sched_getaffinity(0)),
        "sigma_nmad_cai": ref_metrics["sigma_nmad"],
        "table": table,
        "int8_quantize": int8,
        "fixed_cost_s": _fixed_cost(Path(checkpoint), onnx, work, device),
    }
    if memory:
        result["memory"] = _memory(Path(checkpoint), onnx, work)
    if not quiet:
        print(format_table(result))
    if output:
        write_json(output, result)
    return result


def format_table(result: dict) -> str:
    """The benchmark as a Markdown table."""
    lines = [
        f"device {result['device']}, {result['rows']} rows, batch {result['batch_size']}, best of {result['rounds']} interleaved rounds",
        "| variant | samples/s | samples/CPU-s | × CAI | × own fp32 | max abs dz vs CAI | d sigma_nmad | d outlier_frac | in gate |"
        " peak RSS MB | setup s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|:-:|---:|---:|",
    ]
    for r in result["table"]:
        if "error" in r:
            lines.append(f"| {r['variant']} | {r['error']} ||||||||||")
            continue
        vs_fp32 = f"{r['ratio_vs_fp32']:.2f}" if r.get("ratio_vs_fp32") else "-"
        per_cpu = f"{r['samples_per_cpu_s']:.0f}" if r.get("samples_per_cpu_s") else "-"
        lines.append(
            f"| {r['variant']} | {r['samples_per_s']:.0f} | {per_cpu} | {r['ratio_vs_cai']:.2f} | {vs_fp32} | {r['max_abs_dz_vs_cai_fp32']:.1e} |"
            f" {r['d_sigma_nmad']:+.4f} | {r['d_outlier_frac']:+.4f} | {'yes' if r.get('within_gate') else 'no'} |"
            f" {r['peak_rss_mb']:.0f} | {r['setup_s']:.1f} |"
        )
    fc = result["fixed_cost_s"]
    lines.append(
        "fixed cost of one `cosmicai infer` process (start, imports, model load, 64 rows): "
        + ", ".join(f"{k} {v:.1f} s" for k, v in fc.items())
    )
    for m in result.get("memory", []):
        lines.append(
            f"peak RSS of an inference job on a {m['partition_mib']} MiB partition ({m['rows']} rows, {m['runtime']}): {m['peak_rss_mb']:.0f} MB"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    variant, data_path, ckpt, onnx_path, bs, dev, out_path = sys.argv[1:8]
    _child(variant, data_path, ckpt, onnx_path, int(bs), dev, out_path)
