"""The function image installs deploy/lambda/requirements.txt only: the handler must import nothing else.

No Docker engine here, so the image itself is not built; this checks its contents' premise instead:
importing the handler and the engines it loads (ONNX Runtime, OpenVINO) in a fresh interpreter pulls
in only the standard library, this package and the distributions the requirements file pins.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

from helpers.cli import REPO

REQUIREMENTS = REPO / "deploy" / "lambda" / "requirements.txt"
PROBE = """
import importlib.metadata, json, sys
start = set(sys.modules)  # what the interpreter itself loaded (site, .pth hooks) is not the handler's
import cosmicai.function.handler
from cosmicai.engines.onnx_engine import OnnxRuntimeEngine, OpenVinoEngine
import onnxruntime, openvino  # the engines import these when they load a graph
new = {m.split(".")[0] for m in set(sys.modules) - start} - set(sys.stdlib_module_names)
dists = importlib.metadata.packages_distributions()
print(json.dumps({m: dists.get(m) for m in sorted(new)}))
"""


def _pins() -> dict[str, str]:
    pins = {}
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"{REQUIREMENTS.name}: '{line}' is not pinned with =="
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_requirements_are_fully_pinned_and_lean() -> None:
    pins = _pins()
    assert not {"torch", "torchvision", "timm", "matplotlib", "pandas", "snakemake"} & set(pins)
    assert {"boto3", "numpy", "h5py", "pyarrow", "onnxruntime", "openvino"} <= set(pins)


def test_the_handler_imports_nothing_outside_the_requirements() -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    imported = json.loads(proc.stdout.strip().splitlines()[-1])
    pins = _pins()
    outside = {}
    for module, dists in imported.items():
        if module.startswith(("_cython", "__")) or module == "cython_runtime":  # Cython's runtime, aliases such as __mp_main__
            continue
        names = {re.sub(r"[-_.]+", "-", d).lower() for d in dists or []}
        if "cosmicai" in names or names & set(pins):
            continue
        outside[module] = dists
    assert not outside, f"imported by the handler but not in {REQUIREMENTS.name}: {outside}"
    assert "torch" not in imported and "matplotlib" not in imported
