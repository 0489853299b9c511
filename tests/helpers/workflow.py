"""Running the Snakemake workflow from the repository on a test config, and reading what a run left."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from helpers.cli import REPO, env_with_venv

# The stand-in bucket and function every test config points at (helpers.stands serves them).
BUCKET, FUNCTION = "cosmicai-test", "cosmicai-infer"


def snakemake_cmd(workdir: Path, profile: str, config: dict[str, Any] | None, *args: str) -> list[str]:
    """The command line of the workflow with a profile and (written to workdir) the test config."""
    cmd = ["snakemake", "-s", str(REPO / "workflow" / "Snakefile"), "--profile", str(REPO / "profiles" / profile)]
    if profile == "local":
        cmd += ["--cores", "2"]
    if config is not None:
        (workdir / "test-config.yaml").write_text(yaml.safe_dump(config))
        cmd += ["--configfile", str(workdir / "test-config.yaml")]
        profile_config = REPO / "config" / f"{profile}.yaml"  # the profile's own configfile (config/lambda.yaml, config/slurm.yaml)
        if profile_config.exists():  # a command-line --configfile replaces the profile's, so name it too (last: it wins)
            cmd.append(str(profile_config))
    return cmd + list(args)


def snakemake(
    workdir: Path, profile: str, config: dict[str, Any] | None, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run the workflow in workdir; the process, with its wall time in seconds as `.wall_s`."""
    start = time.perf_counter()
    proc = subprocess.run(
        snakemake_cmd(workdir, profile, config, *args), cwd=workdir, capture_output=True, text=True, env=env or env_with_venv()
    )
    proc.wall_s = time.perf_counter() - start  # type: ignore[attr-defined]
    return proc


def tiny_config(dataset: Path, checkpoint: Path, prefix: str = "test", **override: Any) -> dict[str, Any]:
    """The default config on a tiny dataset (partition_mb 1.5: 4 partitions of the 300-row one), with the
    Lambda settings of the stand-ins (staging under `prefix`); `override` replaces top-level keys."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config.update(dataset=str(dataset), checkpoint=str(checkpoint), partition_mb=1.5)
    config["lambda"].update(bucket=BUCKET, prefix=prefix, function_name=FUNCTION, timeout_s=120)
    config.update(override)
    return config


def sidecars(workdir: Path) -> list[dict[str, Any]]:
    """The timing sidecars of a run, by partition name."""
    return [json.loads(p.read_text()) for p in sorted((workdir / "results" / "predictions").glob("part_*.json"))]
