"""`cosmicai bench --scaling`: the whole local pipeline on three dataset sizes, wall time against size."""

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
from cosmicai.errors import CosmicaiError


def repository_root() -> Path:
    """The checkout the workflow benchmarks run in: the working directory, which must hold workflow/Snakefile."""
    root = Path.cwd()
    if not (root / "workflow" / "Snakefile").is_file():
        raise CosmicaiError(root / "workflow" / "Snakefile", "not found: run the workflow benchmarks from the repository root")
    return root


def run_local_profile(repo: Path, workdir: Path, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    """`snakemake --profile profiles/local ARGS` in workdir, this interpreter's bin/ first on PATH; the process and its wall seconds."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = ["snakemake", "-s", str(repo / "workflow" / "Snakefile"), "--profile", str(repo / "profiles" / "local"), *args]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, check=False)
    return proc, time.perf_counter() - t


def run_scaling(checkpoint: str | None, output: str | None, sizes: list[int]) -> dict:
    """Run `snakemake --profile profiles/local` on synthetic datasets of the given sizes; fit time = a + b n."""
    from cosmicai.data.synth import synthesize

    repo = repository_root()
    checkpoint = checkpoint or "results/model/demo.safetensors"
    if not Path(checkpoint).is_file():
        raise CosmicaiError(checkpoint, "checkpoint not found (run `make demo` first, or pass --checkpoint)")
    work = Path(tempfile.mkdtemp(prefix="cosmicai-scaling-"))
    runs = []
    for n in sizes:
        data = work / f"scale-{n}.h5"
        synthesize(data, n, seed=n)
        workdir = work / f"run-{n}"
        workdir.mkdir()
        proc, wall = run_local_profile(repo, workdir, "--config", f"dataset={data}", f"checkpoint={Path(checkpoint).resolve()}")
        if proc.returncode != 0:
            raise CosmicaiError(workdir, f"pipeline failed for {n} rows: {proc.stderr.strip().splitlines()[-1]}")
        summary = json.loads((workdir / "results" / "summary" / "run_summary.json").read_text())
        runs.append({"rows": n, "partitions": summary["partitions"], "pipeline_wall_s": wall, "inference_wall_s": summary["wall_s"]})
        print(f"{n} rows, {summary['partitions']} partitions: pipeline {wall:.1f} s, inference {summary['wall_s']:.1f} s", flush=True)
    rows = np.array([r["rows"] for r in runs], float)
    wall = np.array([r["pipeline_wall_s"] for r in runs])
    slope, intercept = np.polyfit(rows, wall, 1)
    fit = intercept + slope * rows
    r2 = 1 - np.sum((wall - fit) ** 2) / np.sum((wall - wall.mean()) ** 2) if len(runs) > 2 else float("nan")
    result = {"runs": runs, "fit": {"fixed_s": intercept, "s_per_row": slope, "r2": r2}}
    print(f"time = {intercept:.1f} s + {slope * 1000:.2f} s per 1000 rows (R^2 {r2:.3f})")
    if output:
        write_json(output, result)
        _plot(result, Path(output).with_suffix(".png"))
    return result


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cosmicai.atomic import atomic_path

    rows = [r["rows"] for r in result["runs"]]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(rows, [r["pipeline_wall_s"] for r in result["runs"]], "o-", label="whole pipeline")
    ax.plot(rows, [r["inference_wall_s"] for r in result["runs"]], "s-", label="inference (first start to last end)")
    f = result["fit"]
    xs = np.linspace(0, max(rows) * 1.05, 50)
    ax.plot(xs, f["fixed_s"] + f["s_per_row"] * xs, "k--", lw=0.8, label=f"linear fit (R²={f['r2']:.3f})")
    ax.set_xlabel("galaxies")
    ax.set_ylabel("seconds")
    ax.set_title("local pipeline scaling")
    ax.legend()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)
