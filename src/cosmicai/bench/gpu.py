"""`make bench-gpu` (`cosmicai bench --gpu`): the GPU measurement in one command, on a CUDA machine.

1. The CAI method and this project's GPU engines (fp32, tf32, bf16, fp16, bf16 with torch.compile)
   on the same synthetic data and weights (`cosmicai bench`, one process per variant); the int8 row
   says "not supported": the int8 graph runs in the CPU runtimes only (OpenVINO, ONNX Runtime).
2. The whole local profile on a 12.6 GiB dataset (the paper's 659,178 rows) read from HDF5 on local
   disk, in 100 MiB partitions (row ranges of the one file), all in one inference job (one engine, batch 4096).
One JSON and one table: samples/s per engine, end-to-end seconds, max |dz| against fp32.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import yaml

from cosmicai.atomic import write_json
from cosmicai.bench.scaling import repository_root, run_local_profile
from cosmicai.config import load_config
from cosmicai.errors import CosmicaiError

ENGINE_VARIANTS = ("cai", "torch-fp32", "torch-tf32", "torch-bf16", "torch-fp16", "torch-bf16-compile", "torch-int8")
PAPER_ROWS = 659_178  # 12.6 GiB of model-ready rows
NO_GPU = "bench-gpu: not measured: no CUDA GPU on this machine"


def tile_dataset(src: Path, dst: Path, n_rows: int, block: int = 8192) -> None:
    """Write an n_rows dataset by repeating src's rows (fresh object ids): disk speed, not synthesis speed."""
    import h5py
    import numpy as np

    from cosmicai.atomic import atomic_path
    from cosmicai.data.dataset import DatasetWriter

    with h5py.File(src, "r") as f, atomic_path(dst) as tmp:
        n_src, _, h, w = f["images"].shape
        images, mags, z = f["images"][:], f["magnitudes"][:], f["redshift"][:]
        with DatasetWriter(tmp, n_rows, (h, w), has_redshift=True) as out:
            for start in range(0, n_rows, block):
                rows = np.arange(start, min(start + block, n_rows)) % n_src
                out.write(images[rows], mags[rows], np.arange(start, start + len(rows), dtype=np.int64), z[rows])


def end_to_end(checkpoint: str, data: Path, work: Path, partition_mb: float, batch_size: int, device: str) -> dict:
    """The local profile over the dataset, every partition in one inference job; wall time and the run summary."""
    repo = repository_root()
    config = load_config([repo / "config" / "config.yaml"])
    config.update(dataset=str(data), checkpoint=str(Path(checkpoint).resolve()), partition_mb=partition_mb)
    # One inference job over every partition (row ranges of the dataset: nothing copied), the engine loaded once.
    config.update(partition_copy=False)
    config["inference"].update(batch_size=batch_size, device=device, partitions_per_job=10**6)
    (work / "e2e").mkdir(exist_ok=True)
    configfile = work / "e2e" / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    proc, wall = run_local_profile(repo, work / "e2e", "--configfile", str(configfile))
    if proc.returncode != 0:
        raise CosmicaiError(work / "e2e", f"the local profile failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    summary = json.loads((work / "e2e" / "results" / "summary" / "run_summary.json").read_text())
    return {
        "rows": summary["rows"],
        "partitions": summary["partitions"],
        "data_bytes": data.stat().st_size,
        "pipeline_wall_s": wall,
        "inference_wall_s": summary["wall_s"],
        "samples_per_s": summary["samples_per_s"],
    }


def format_gpu_table(result: dict) -> str:
    """The engines table, then the end-to-end line."""
    from cosmicai.bench.engines import format_table

    e = result["end_to_end"]
    return "\n".join(
        [
            format_table(result["engines"]),
            (
                f"end to end, local profile, {e['rows']:,} rows ({e['data_bytes'] / 2**30:.1f} GiB HDF5 on local disk, "
                f"{e['partitions']} partitions, one engine): pipeline {e['pipeline_wall_s']:.1f} s, "
                f"inference {e['inference_wall_s']:.1f} s ({e['samples_per_s']:.0f} samples/s)"
            ),
        ]
    )


def run_gpu_bench(
    output: str | None,
    checkpoint: str | None = None,
    n: int = 100_000,
    rows: int = PAPER_ROWS,
    device: str = "cuda",
    variants: list[str] | None = None,
    partition_mb: float = 100,
    batch_size: int = 4096,
) -> dict | None:
    """Both measurements; None (after one line) on a machine without CUDA. device cpu: the same steps, for tests."""
    from cosmicai.bench.engines import run_bench
    from cosmicai.data.synth import synthesize
    from cosmicai.engines.base import cuda_available

    if device == "cuda" and not cuda_available():
        print(NO_GPU)
        return None
    work = Path(tempfile.mkdtemp(prefix="cosmicai-bench-gpu-"))
    engines = run_bench(n, checkpoint, batch_size, device, rounds=1, variants=list(variants or ENGINE_VARIANTS), memory=False, quiet=True)
    seed = work / "seed.h5"
    synthesize(seed, min(n, 16384), seed=7)
    data = work / "data.h5"
    tile_dataset(seed, data, rows)
    seed.unlink()
    result = {"engines": engines, "end_to_end": end_to_end(engines["checkpoint"], data, work, partition_mb, batch_size, device)}
    data.unlink()
    print(format_gpu_table(result))
    if output:
        write_json(output, result)
    return result
