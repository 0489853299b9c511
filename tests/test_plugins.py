"""The executor plugins as plugins: cosmicai-slurm's own behaviour, Snakemake's executor test base, and a
plain `cosmicai[workflow]` install (no boto3) in which `snakemake` starts.

The upstream Slurm plugin's own suite against cosmicai-slurm is tests/test_slurm_upstream_suite.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import snakemake.common.tests
import tomllib
import yaml
from helpers.cli import REPO, env_with_venv
from helpers.slurm import require_slurm
from helpers.workflow import tiny_config
from snakemake_executor_plugin_slurm import ExecutorSettings as UpstreamSettings
from snakemake_interface_executor_plugins.settings import ExecutorSettingsBase

from cosmicai.errors import group_error_line
from snakemake_executor_plugin_cosmicai_slurm import (
    SLURM_PLUGIN_MAX_INTERVAL_S,
    Executor,
    ExecutorSettings,
    cancelled_states,
    one_line,
)


def test_cancelled_array_tasks_are_found_by_their_task_id() -> None:
    out = "7_1|CANCELLED by 0\n7_2|RUNNING\n7_[4-6,9%2]|CANCELLED\n8|COMPLETED\n9|CANCELLED\n"
    assert cancelled_states(out) == {
        "7_1": "CANCELLED by 0",
        "7_4": "CANCELLED",
        "7_5": "CANCELLED",
        "7_6": "CANCELLED",
        "7_9": "CANCELLED",
        "9": "CANCELLED",
    }


def test_a_refusal_is_one_line_without_the_sbatch_call() -> None:
    upstream = (
        "SLURM sbatch failed. The error message was 'sbatch: error: invalid partition specified: nope\n"
        "sbatch: error: Batch job submission failed: Invalid partition name specified'.\n"
        "    sbatch call:\n        sbatch --parsable -p nope ...\n    sbatch script:\n#!/bin/sh\nsrun ...\n"
    )
    line = one_line(upstream)
    assert "\n" not in line and "sbatch call" not in line and "#!/bin/sh" not in line
    assert line.startswith("SLURM sbatch failed.") and "Invalid partition name specified'." in line
    assert one_line(None) is None


def test_group_error_line_names_the_group_its_jobs_and_the_reason() -> None:
    jobs = [SimpleNamespace(name="b", jobid=1), SimpleNamespace(name="a", jobid=2)]
    line = group_error_line(SimpleNamespace(groupid="g", jobs=jobs), "SLURM sbatch failed.\n  'bad partition'. ")
    assert line == "Error in group g (a jobid 2, b jobid 1): SLURM sbatch failed. 'bad partition'."
    assert group_error_line(SimpleNamespace(groupid="g", jobs=jobs[:1]), None) == "Error in group g (b jobid 1): no reason given"


def test_optional_settings_have_defaults_with_the_upstream_settings_object() -> None:
    ours = SimpleNamespace(workflow=SimpleNamespace(executor_settings=ExecutorSettings(status_interval_max=7)))
    theirs = SimpleNamespace(workflow=SimpleNamespace(executor_settings=UpstreamSettings()))
    assert Executor.setting(ours, "status_interval_max", SLURM_PLUGIN_MAX_INTERVAL_S) == 7
    assert Executor.setting(theirs, "status_interval_max", SLURM_PLUGIN_MAX_INTERVAL_S) == SLURM_PLUGIN_MAX_INTERVAL_S


REFUSED = """
rule all:
    input: "b.txt", "c.txt"
rule a:
    output: "a.txt"
    group: "g"
    resources: slurm_partition="no_such_partition", runtime=1, mem_mb=100
    shell: "touch {output}"
rule b:
    input: "a.txt"
    output: "b.txt"
    group: "g"
    resources: slurm_partition="no_such_partition", runtime=1, mem_mb=100
    shell: "touch {output}"
rule c:
    output: "c.txt"
    resources: slurm_partition="no_such_partition", runtime=1, mem_mb=100
    shell: "touch {output}"
"""


@pytest.mark.timeout(120)
def test_a_refused_job_and_a_refused_group_job_say_why_on_one_line(tmp_path: Path) -> None:
    require_slurm()
    (tmp_path / "Snakefile").write_text(REFUSED)
    cmd = ["snakemake", "--executor", "cosmicai-slurm", "--jobs", "2", "--retries", "0", "--keep-going",
           "--default-resources", "slurm_account=", "--cosmicai-slurm-init-seconds-before-status-checks", "1"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env_with_venv(), timeout=100, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    refusals = [line for line in out.splitlines() if "SLURM sbatch failed" in line]
    assert any("group" not in line and "partition" in line.lower() for line in refusals), out
    group_lines = [line for line in out.splitlines() if "group g" in line]
    assert len(group_lines) == 1, out  # the refused group job: one line, not Snakemake's group error
    assert group_lines[0].startswith("Error in group g (a jobid "), out
    assert ", b jobid " in group_lines[0] and "Invalid partition name specified" in group_lines[0], out  # its reason
    assert "message: None" not in out and "    jobs:" not in out, out
    assert "sbatch call:" not in out and "#!/bin/sh" not in out, out  # the call and script only with --verbose
    assert "'.For further" not in out and "'. For further error details" in out, out  # not run into Snakemake's text


FAILING_GROUP = """
rule all:
    input: "b.txt"
rule a:
    output: "a.txt"
    group: "g"
    log: "a.log"
    resources: runtime=1, mem_mb=100
    shell: "echo the cause > {log}; exit 3"
rule b:
    input: "a.txt"
    output: "b.txt"
    group: "g"
    resources: runtime=1, mem_mb=100
    shell: "touch {output}"
"""


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_failed_group_job_says_why_before_its_logs(tmp_path: Path) -> None:
    """A group job that ran and failed: the one line with Slurm's state, then Snakemake's group error with the logs."""
    require_slurm()
    (tmp_path / "Snakefile").write_text(FAILING_GROUP)
    cmd = ["snakemake", "--executor", "cosmicai-slurm", "--jobs", "1", "--retries", "0", "--show-failed-logs",
           "--default-resources", "slurm_account=", "--cosmicai-slurm-init-seconds-before-status-checks", "1"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env_with_venv(), timeout=150, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    lines = out.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("Error in group g (a jobid "))
    assert re.search(r"\): SLURM-job '\d+' failed, SLURM status is: 'FAILED'", lines[first]), lines[first]
    assert any("Logfile a.log:" in line for line in lines[first:]) and "the cause" in "\n".join(lines[first:]), out


@pytest.mark.slow
class TestCosmicaiSlurmWorkflows(snakemake.common.tests.TestWorkflowsLocalStorageBase):
    """Snakemake's executor test base (a simple and a group workflow) on cosmicai-slurm and the local Slurm."""

    __test__ = True

    @pytest.fixture(autouse=True)
    def _slurm(self) -> None:
        require_slurm()

    def get_executor(self) -> str:
        return "cosmicai-slurm"

    def get_executor_settings(self) -> ExecutorSettingsBase | None:
        return ExecutorSettings(init_seconds_before_status_checks=2, status_interval_max=5)


def workflow_requirements() -> list[str]:
    """The core's and the workflow extra's requirements, from pyproject.toml."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["workflow"]]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_snakemake_starts_in_a_workflow_install_without_boto3(tmp_path: Path) -> None:
    """`pip install 'cosmicai[workflow]'`, no [lambda]: every executor plugin imports, `snakemake --version` works."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    pip = [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, *workflow_requirements()], check=True, timeout=700)  # wheels from pip's cache
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONPATH"] = str(REPO / "src")  # this checkout's package and plugins (Snakemake finds plugins on sys.path)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(args, capture_output=True, text=True, env=env, timeout=120, check=False)

    assert run(str(py), "-c", "import boto3").returncode != 0, "boto3 is importable: the venv is not a plain install"
    slurm = run(str(py), "-c", "import snakemake_executor_plugin_cosmicai_slurm")
    assert slurm.returncode == 0, slurm.stderr
    version = run(str(venv / "bin" / "snakemake"), "--version")
    assert version.returncode == 0 and version.stdout.strip()[:1].isdigit(), version.stdout + version.stderr


@pytest.mark.slow
@pytest.mark.timeout(600)
class TestCosmicaiLambdaWorkflows(snakemake.common.tests.TestWorkflowsLocalStorageBase):
    """Snakemake's executor test base on cosmicai-lambda and the stand-ins. The plugin runs only the workflow's
    Lambda inference jobs (every other rule is local), so its test case is this workflow on the tiny dataset, not
    the base's shell-rule cases; Snakemake's group jobs do not apply to it."""

    __test__ = True

    @pytest.fixture(autouse=True)
    def _stand_ins(self, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
        stand = request.getfixturevalue("stand")
        for key, value in stand.env.items():  # the plugin's boto3 clients live in this process
            if key.startswith("AWS_") or key == "PATH":
                monkeypatch.setenv(key, value)
        for key in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
            monkeypatch.delenv(key, raising=False)
        self.config = tiny_config(request.getfixturevalue("tiny_dataset"), request.getfixturevalue("random_checkpoint"), "base")
        self.config.update(backend="lambda")
        self.config["inference"]["partitions_per_job"] = 2

    def get_executor(self) -> str:
        return "cosmicai-lambda"

    def get_executor_settings(self) -> ExecutorSettingsBase | None:
        return None

    def _copy_test_files(self, test_path: Path, tmp_path: Path) -> None:
        """This workflow at tmp_path (the base runs tmp_path/Snakefile), its config beside it."""
        shutil.copytree(REPO / "workflow", tmp_path)
        shutil.copytree(REPO / "config", tmp_path.parent / "config", dirs_exist_ok=True)
        (tmp_path.parent / "config" / "config.yaml").write_text(yaml.safe_dump(self.config))

    def test_simple_workflow(self, tmp_path: Path) -> None:
        self.run_workflow("simple", tmp_path)
        assert (tmp_path / "simple" / "results" / "predictions.parquet").exists()

    def test_group_workflow(self, tmp_path: Path) -> None:
        pytest.skip("cosmicai-lambda runs one kind of job, the Lambda inference job; it does not run group jobs")
