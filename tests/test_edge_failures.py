"""Edge failures that once gave tracebacks or nameless errors: one line naming the file."""

from __future__ import annotations

import errno
import re
from pathlib import Path

import pytest
import torch
from helpers.cli import assert_clean_failure, run_cli

from cosmicai.atomic import atomic_path
from cosmicai.errors import CosmicaiError
from cosmicai.model.astromae import build_model
from cosmicai.model.checkpoint import load_model


def test_write_failure_names_the_file(tmp_path: Path) -> None:
    """A write that fails for lack of space (the OSError names no file) is reported with the output's path."""
    target = tmp_path / "out.parquet"
    with pytest.raises(OSError) as info:
        with atomic_path(target):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert info.value.filename == str(target) and info.value.strerror == "cannot write it: No space left on device"
    assert list(tmp_path.iterdir()) == []


def test_state_dict_with_a_non_tensor_value(tmp_path: Path, tiny_dataset: Path) -> None:
    """`cosmicai infer` on it: one line naming the key and what it holds (before: a 20-line AttributeError)."""
    state = build_model().state_dict()
    key = next(iter(state))
    state[key] = 5
    checkpoint = tmp_path / "model.pt"
    torch.save(state, checkpoint)
    out = tmp_path / "out"
    out.mkdir()
    proc = run_cli("infer", tiny_dataset, "--checkpoint", checkpoint, "--runtime", "torch", "--output", out / "p.parquet")
    assert_clean_failure(proc, checkpoint, f"mis-shaped keys: {key} (int, not a tensor)", out)


@pytest.mark.parametrize("value", ["text", [1.0, 2.0], None], ids=["str", "list", "None"])
def test_other_non_tensor_values(value: object, tmp_path: Path) -> None:
    state = build_model().state_dict()
    key = list(state)[3]
    state[key] = value
    torch.save(state, tmp_path / "model.pt")
    with pytest.raises(CosmicaiError, match=rf"mis-shaped keys: {re.escape(key)} \({type(value).__name__}, not a tensor\)"):
        load_model(tmp_path / "model.pt")
