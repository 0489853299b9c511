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

CPU_VARIANTS = ("cai", "torch-fp32", "onnxruntime-fp32", "openvino-fp32", "torch-bf16", "openvino-bf16")
CUDA_VARIANTS = ("cai", "torch-fp32", "torch-tf32", "torch-bf16", "torch-fp16", "torch-bf16-compile")


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
        ready = time.perf_counter()
        preds = []
        with torch.no_grad():
            for images, mags in DataLoader(dataset, batch_size=512):
                preds.append(model(images.to(dev), mags.to(dev)).cpu())
        z = torch.cat(preds).numpy()
        elapsed = time.perf_counter() - ready
    else:
        from cosmicai.engines.loader import load_engine
        from cosmicai.infer import infer_partition

        runtime, precision, *rest = variant.split("-")
        engine = load_engine(checkpoint, device, precision, runtime, compile=bool(rest), onnx=onnx if runtime != "torch" else None)
        ready = time.perf_counter()
        if rest:  # compiled: the first batch pays the compilation, outside the timed pass
            import h5py

            with h5py.File(data, "r") as f:
                engine.predict(f["images"][:batch_size], f["magnitudes"][:batch_size])
            ready = time.perf_counter()
        pred = Path(out).with_suffix(".parquet")
        timings = infer_partition(data, engine, pred, None, batch_size, progress=False)
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


def _row(variant: str, r: dict, base: dict, z_spec: np.ndarray, ref_metrics: dict) -> dict:
    """A variant's line of the table: speed against the CAI method and the change in photo-z quality."""
    from cosmicai.reporting.metrics import point_metrics

    if "error" in r:
        return {"variant": variant, "error": r["error"]}
    m = point_metrics(r["z"], z_spec)
    return {
        "variant": variant,
        "samples_per_s": r["samples_per_s"],
        "ratio_vs_cai": r["samples_per_s"] / base["samples_per_s"],
        "max_abs_dz_vs_cai_fp32": float(np.abs(r["z"] - base["z"]).max()),
        "d_sigma_nmad": m["sigma_nmad"] - ref_metrics["sigma_nmad"],
        "d_outlier_frac": m["outlier_frac"] - ref_metrics["outlier_frac"],
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
    work = Path(tempfile.mkdtemp(prefix="cosmicai-bench-"))
    data = work / "bench.h5"
    synthesize(data, n, seed=2024)
    checkpoint = checkpoint or _default_checkpoint(work)
    onnx = work / "model.onnx"
    export_onnx(checkpoint, onnx)
    import h5py

    with h5py.File(data, "r") as f:
        z_spec = f["redshift"][:]

    best: dict[str, dict] = {}
    for rnd in range(rounds):
        for v in variants:
            r = _run_child(v, data, Path(checkpoint), onnx, batch_size, device, work, rnd)
            if r.get("samples_per_s", -1.0) > best.get(v, {}).get("samples_per_s", -1.0) or v not in best:
                best[v] = r
    ref_metrics = point_metrics(best["cai"]["z"], z_spec)
    table = [_row(v, best[v], best["cai"], z_spec, ref_metrics) for v in variants]
    result = {
        "device": device,
        "rows": n,
        "batch_size": batch_size,
        "rounds": rounds,
        "checkpoint": checkpoint,
        "threads": len(os.sched_getaffinity(0)),
        "sigma_nmad_cai": ref_metrics["sigma_nmad"],
        "table": table,
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
        "| variant | samples/s | × CAI | max abs dz vs CAI | d sigma_nmad | d outlier_frac | peak RSS MB | setup s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["table"]:
        if "error" in r:
            lines.append(f"| {r['variant']} | failed: {r['error']} |||||||")
            continue
        lines.append(
            f"| {r['variant']} | {r['samples_per_s']:.0f} | {r['ratio_vs_cai']:.2f} | {r['max_abs_dz_vs_cai_fp32']:.1e} |"
            f" {r['d_sigma_nmad']:+.4f} | {r['d_outlier_frac']:+.4f} | {r['peak_rss_mb']:.0f} | {r['setup_s']:.1f} |"
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
