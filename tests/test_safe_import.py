"""Import of the original CAI files (whole pickled model, TensorDataset data) without running pickled code."""

from __future__ import annotations

import functools
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from helpers.cli import REPO, assert_clean_failure, run_cli
from torch import nn
from torch.utils.data import TensorDataset

from cosmicai.data.dataset import inspect
from cosmicai.data.import_cai import import_pt
from cosmicai.errors import CosmicaiError
from cosmicai.model.checkpoint import load_model
from cosmicai.model.safe_pickle import UnsafePickleError, safe_load

TSV = REPO / "tests" / "data" / "astromae_state_dict.tsv"


class _Call:
    """Pickles as the call fn(*args): what a malicious __reduce__ does."""

    def __init__(self, fn: object, *args: object) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple:
        return (self.fn, self.args)


def _raw_torch_file(path: Path, pkl: bytes) -> Path:
    """A torch zip file around a hand-written data.pkl."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/version", "3\n")
    return path


def _touch(marker: Path) -> str:
    return f"touch '{marker}'"


# name -> (writer(path, marker), the global the error must name)
MALICIOUS = {
    "os.system": (lambda p, m: torch.save({"model": _Call(os.system, _touch(m))}, p), "posix.system"),
    "subprocess": (lambda p, m: torch.save(_Call(subprocess.Popen, ["touch", str(m)]), p), "subprocess.Popen"),
    "eval": (lambda p, m: torch.save(_Call(eval, f"__import__('os').system({_touch(m)!r})"), p), "builtins.eval"),
    "exec": (lambda p, m: torch.save(_Call(exec, f"import os; os.system({_touch(m)!r})"), p), "builtins.exec"),
    "functools.partial": (lambda p, m: torch.save(_Call(functools.partial(os.system, _touch(m))), p), "functools.partial"),
    "getattr chain": (
        lambda p, m: _raw_torch_file(
            p, b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(Vos\ntRVsystem\ntR(V" + _touch(m).encode() + b"\ntR."
        ),
        "builtins.getattr",
    ),
    "nested torch.load": (lambda p, m: torch.save(_Call(torch.load, str(p) + ".inner"), p), "torch.serialization.load"),
    "lower-case function of an unknown module": (
        lambda p, m: _raw_torch_file(p, b"cevilpkg.tools\nrun\n(V" + _touch(m).encode() + b"\ntR."),
        "evilpkg.tools.run",
    ),
    "hidden in a module attribute": (
        lambda p, m: torch.save(nn.DataParallel(_with_attr(nn.Linear(2, 2), _Call(os.system, _touch(m)))), p),
        "posix.system",
    ),
    "legacy format": (
        lambda p, m: torch.save(_Call(os.system, _touch(m)), p, _use_new_zipfile_serialization=False),
        "posix.system",
    ),
}


def _with_attr(module: nn.Module, value: object) -> nn.Module:
    module.trojan = value
    return module


@pytest.fixture(scope="module")
def lookalike(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The original-style whole pickled model (zip and legacy formats), made in a process of its own."""
    out = tmp_path_factory.mktemp("cai")
    subprocess.run([sys.executable, str(REPO / "tests" / "cai_lookalike.py"), str(out)], check=True, cwd=out)
    return out


def test_lookalike_modules_exist_only_in_their_process(lookalike: Path) -> None:
    assert not any(name == "blocks" or name.startswith("blocks.") for name in sys.modules)
    with pytest.raises(ModuleNotFoundError):
        __import__("blocks.model_vit_inception")
    data_pkl = zipfile.ZipFile(lookalike / "model.pt").read("model/data.pkl")
    for name in (b"blocks.model_vit_inception", b"ViT_Astro", b"blocks.photoz", b"timm.models.layers.patch_embed", b"DataParallel"):
        assert name in data_pkl


def test_convert_checkpoint_loads_strictly_and_predicts_the_same(lookalike: Path, tmp_path: Path) -> None:
    out = tmp_path / "astromae.safetensors"
    proc = run_cli("convert-checkpoint", lookalike / "model.pt", out)
    assert proc.returncode == 0, proc.stderr
    assert "wrote 388 tensors" in proc.stdout
    from safetensors import safe_open

    with safe_open(str(out), "pt") as f:
        keys = set(f.keys())
    published = {line.split("\t")[0] for line in TSV.read_text().splitlines() if line and not line.startswith(("#", "key\t"))}
    assert keys == published and len(keys) == 388
    model = load_model(out)  # strict
    expected = np.load(lookalike / "expected.npz")
    with torch.no_grad():
        z = model(torch.from_numpy(expected["images"]), torch.from_numpy(expected["magnitudes"])).numpy()
    np.testing.assert_allclose(z, expected["z"], atol=1e-5, rtol=0)
    assert not any(name.startswith("blocks") for name in sys.modules)


def test_legacy_format_checkpoint_gives_the_same_tensors(lookalike: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from cosmicai.data.import_cai import convert_checkpoint

    legacy = lookalike / "model_legacy.pt"
    assert not zipfile.is_zipfile(legacy)
    convert_checkpoint(lookalike / "model.pt", tmp_path / "a.safetensors")
    convert_checkpoint(legacy, tmp_path / "b.safetensors")
    a, b = load_file(str(tmp_path / "a.safetensors")), load_file(str(tmp_path / "b.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("case", list(MALICIOUS))
def test_malicious_pickle_is_refused_and_never_runs(case: str, tmp_path: Path) -> None:
    write, global_name = MALICIOUS[case]
    path, marker = tmp_path / "evil.pt", tmp_path / "marker"
    write(path, marker)
    with pytest.raises(UnsafePickleError) as err:
        safe_load(path)
    message = str(err.value)
    assert str(path) in message and f"calls {global_name}," in message and "\n" not in message
    assert not marker.exists()


def test_the_payload_is_live(tmp_path: Path) -> None:
    """Control: the hand-written payload does run under a plain unpickler (so refusing it matters)."""
    marker = tmp_path / "marker"
    path = MALICIOUS["getattr chain"][0](tmp_path / "evil.pt", marker)
    pickle.loads(zipfile.ZipFile(path).read("archive/data.pkl"))
    assert marker.exists()


def test_unknown_classes_stay_inert(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = _raw_torch_file(tmp_path / "x.pt", b"cevilpkg\nRunner\n(V" + _touch(marker).encode() + b"\ntR.")
    obj = safe_load(path)
    assert type(obj).__name__ == "Runner" and obj.args == (_touch(marker),)
    assert not marker.exists()


@pytest.mark.parametrize("command", ["convert-checkpoint", "import-pt"])
def test_malicious_pickle_cli_clean_failure(command: str, tmp_path: Path) -> None:
    marker, path = tmp_path / "marker", tmp_path / "evil.pt"
    payload = _Call(os.system, _touch(marker))
    if command == "convert-checkpoint":
        torch.save(nn.DataParallel(_with_attr(nn.Linear(2, 2), payload)), path)
    else:
        torch.save((torch.zeros(2, 5, 32, 32), payload, torch.zeros(2)), path)
    out = tmp_path / "out"
    out.mkdir()
    proc = run_cli(command, path, out / ("m.safetensors" if command == "convert-checkpoint" else "d.h5"))
    assert_clean_failure(proc, path, "refused to unpickle: it calls posix.system", out)
    assert not marker.exists()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_import_pt_round_trip(legacy: bool, tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    images, mags, z = torch.randn(70, 5, 32, 32, generator=g), torch.randn(70, 5, generator=g) + 20, torch.rand(70, generator=g)
    src = tmp_path / "cai.pt"
    torch.save(TensorDataset(images, mags, z if legacy else z[:, None]), src, _use_new_zipfile_serialization=not legacy)
    out = tmp_path / "cai.h5"
    proc = run_cli("import-pt", src, out, "--id-start", "1000")
    assert proc.returncode == 0, proc.stderr
    info = inspect(out)
    assert info.n_rows == 70 and info.has_redshift
    with h5py.File(out) as f:
        np.testing.assert_array_equal(f["images"][:], images.numpy())
        np.testing.assert_array_equal(f["magnitudes"][:], mags.numpy())
        np.testing.assert_array_equal(f["redshift"][:], z.numpy())
        np.testing.assert_array_equal(f["object_id"][:], np.arange(1000, 1070))
        assert "assigned" in f["object_id"].attrs["note"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


BAD_PT = {
    "not a pickle": (lambda p: p.write_bytes(b"\x00garbage" * 50), "not a PyTorch file"),
    "a dict, not a TensorDataset": (lambda p: torch.save({"x": torch.zeros(3)}, p), "expected a TensorDataset"),
    "two tensors": (lambda p: torch.save(TensorDataset(torch.zeros(2, 5, 32, 32), torch.zeros(2, 5)), p), "expected 3 tensors"),
    "band count": (
        lambda p: torch.save(TensorDataset(torch.zeros(2, 3, 32, 32), torch.zeros(2, 5), torch.zeros(2)), p),
        "shape (N, 5, H, W)",
    ),
    "row counts disagree": (lambda p: torch.save((torch.zeros(2, 5, 32, 32), torch.zeros(2, 5), torch.zeros(3)), p), "row counts disagree"),
    "integer images": (
        lambda p: torch.save((torch.zeros(2, 5, 32, 32, dtype=torch.int32), torch.zeros(2, 5), torch.zeros(2)), p),
        "must be floating point",
    ),
    "image too small": (
        lambda p: torch.save((torch.zeros(2, 5, 16, 16), torch.zeros(2, 5), torch.zeros(2)), p),
        "smaller than the model's",
    ),
    "truncated": (
        lambda p: p.write_bytes(_saved_bytes(TensorDataset(torch.zeros(9, 5, 32, 32), torch.zeros(9, 5), torch.zeros(9)))[:30000]),
        "not a",
    ),
}


def _saved_bytes(obj: object) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.mark.parametrize("case", list(BAD_PT))
def test_import_pt_bad_input(case: str, tmp_path: Path) -> None:
    make, message = BAD_PT[case]
    src, out = tmp_path / "bad.pt", tmp_path / "out"
    make(src)
    out.mkdir()
    with pytest.raises(CosmicaiError) as err:
        import_pt(src, out / "d.h5")
    assert message in str(err.value) and str(err.value).startswith(f"{src}: ")
    assert not any(out.iterdir())


def test_convert_checkpoint_wrong_layout_lists_keys(tmp_path: Path) -> None:
    src = tmp_path / "other.pt"
    torch.save(nn.DataParallel(nn.Sequential(nn.Linear(5, 3))), src)
    out = tmp_path / "out"
    out.mkdir()
    proc = run_cli("convert-checkpoint", src, out / "m.safetensors")
    assert_clean_failure(proc, src, "does not match the AstroMAE layout", out)
    assert "unexpected keys: 0.weight" in proc.stderr and "missing keys: cls_token" in proc.stderr
