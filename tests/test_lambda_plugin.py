"""The cosmicai-lambda executor plugin without the lambda extra: importable (Snakemake imports every installed
plugin at start), and a run that selects it stops with one line naming the extra."""

from __future__ import annotations

import subprocess
import sys

# Makes boto3 and botocore unimportable in a child interpreter, as in an install without the lambda extra.
BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("boto3", "botocore", "s3transfer"):
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
sys.meta_path.insert(0, Block())
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + code], capture_output=True, text=True, timeout=120)


def test_plugin_imports_without_botocore() -> None:
    r = _run("import snakemake_executor_plugin_cosmicai_lambda as p; print(p.Executor.__name__, p.common_settings.non_local_exec)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["Executor", "True"]


def test_dispatcher_needs_botocore() -> None:
    """The guard above is real: what the plugin imports lazily does need botocore."""
    r = _run("import cosmicai.aws.dispatch")
    assert r.returncode != 0 and "botocore" in r.stderr
