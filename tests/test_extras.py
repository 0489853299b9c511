"""The core install runs a CPU inference job from an exported ONNX graph without torch; a command that needs
an extra says which. The optional packages are hidden from a fresh interpreter (None in sys.modules)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

OPTIONAL = ("torch", "torchvision", "timm", "safetensors", "onnx", "onnxscript", "openvino", "matplotlib", "boto3", "botocore", "snakemake")


def core_cli(*args: object, cache: Path | None = None) -> subprocess.CompletedProcess:
    """`cosmicai ARGS` in an interpreter where no optional package can be imported (as in `pip install cosmicai`)."""
    code = (
        "import sys\n"
        f"for name in {OPTIONAL!r}:\n    sys.modules[name] = None\n"
        "from cosmicai.cli import main\n"
        "main_rc = main(sys.argv[1:])\n"
        "assert not {m.split('.')[0] for m in sys.modules if sys.modules[m] is not None} & set(" + repr(OPTIONAL) + ")\n"
        "sys.exit(main_rc)\n"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)} if cache else None  # another cache: no exported graph at hand
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env)


def test_core_infers_from_an_onnx_graph_without_torch(tmp_path: Path, tiny_dataset: Path, onnx_graph: Path) -> None:
    out = tmp_path / "pred.parquet"
    proc = core_cli("infer", tiny_dataset, "--checkpoint", onnx_graph, "--output", out)
    assert proc.returncode == 0, proc.stderr
    assert pq.read_table(out).num_rows == 300
    assert json.loads(out.with_suffix(".json").read_text())["runtime"] == "onnxruntime"  # OpenVINO absent: ONNX Runtime


@pytest.mark.parametrize(
    "args,extra",
    [
        (("infer", "{data}", "--checkpoint", "{ckpt}", "--output", "{out}"), "torch"),  # a checkpoint never exported: torch exports it
        (("infer", "{data}", "--checkpoint", "{graph}", "--output", "{out}", "--runtime", "openvino"), "cpu"),
    ],
)
def test_command_needing_an_extra_names_it(
    tmp_path: Path, tiny_dataset: Path, random_checkpoint: Path, onnx_graph: Path, args: tuple[str, ...], extra: str
) -> None:
    out = tmp_path / "pred.parquet"
    values = {"data": tiny_dataset, "ckpt": random_checkpoint, "graph": onnx_graph, "out": out}
    proc = core_cli(*(a.format(**values) for a in args), cache=tmp_path / "cache")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"(pip install 'cosmicai[{extra}]', or `make setup`)" in lines[0], proc.stderr
    assert not out.exists()
