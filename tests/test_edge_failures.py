"""Edge failures that once gave tracebacks or nameless errors: one line naming the file."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch
from helpers.cli import assert_clean_failure, run_cli

from cosmicai.atomic import atomic_path
from cosmicai.model.astromae import build_model


def test_write_failure_names_the_file(tmp_path: Path) -> None:
    """A write that fails for lack of space (the OSError names no file) is reported with the output's path."""
    target = tmp_path / "out.parquet"
    with pytest.raises(OSError) as info:
        with atomic_path(target):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert info.value.filename == str(target) and info.value.strerror == "cannot write it: No space left on device"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", [5, "text", [1.0, 2.0]], ids=["int", "str", "list"])
def test_state_dict_with_a_non_tensor_value(value: object, tmp_path: Path, tiny_dataset: Path) -> None:
    state = build_model().state_dict()
    key = next(iter(state))
    state[key] = value
    checkpoint = tmp_path / "model.pt"
    torch.save(state, checkpoint)
    out = tmp_path / "out"
    out.mkdir()
    proc = run_cli("infer", tiny_dataset, "--checkpoint", checkpoint, "--runtime", "torch", "--output", out / "p.parquet")
    assert_clean_failure(proc, checkpoint, f"mis-shaped keys: {key} ({type(value).__name__}, not a tensor)", out)
