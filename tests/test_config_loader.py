"""The one config loader (cosmicai.config.load_config): files merged as Snakemake merges them, typed and validated by the schema."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from helpers.cli import REPO, run_cli

from cosmicai.config import load_config, merge_config
from cosmicai.errors import CosmicaiError

DEFAULTS = REPO / "config" / "config.yaml"


def _write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_merge_is_snakemakes_at_every_depth() -> None:
    from snakemake.utils import update_config

    base = {"a": {"b": {"c": 1, "d": 2}, "e": 3}, "f": "x", "g": {"h": 1}}
    over = {"a": {"b": {"c": 10, "new": {"deep": True}}}, "f": {"now": "a mapping"}, "g": 5}
    ours, theirs = copy.deepcopy(base), copy.deepcopy(base)
    update_config(theirs, copy.deepcopy(over))
    assert merge_config(ours, copy.deepcopy(over)) == theirs
    assert ours["a"] == {"b": {"c": 10, "d": 2, "new": {"deep": True}}, "e": 3}  # depth 2: d kept beside the new c


def test_a_profiles_partial_file_is_merged_over_the_defaults_then_validated(tmp_path: Path) -> None:
    profile = _write(tmp_path / "p.yaml", {"backend": "lambda", "lambda": {"prices": {"date": "2026-12-01"}, "memory_mb": 4096}})
    config = load_config([DEFAULTS, profile])
    defaults = yaml.safe_load(DEFAULTS.read_text())
    assert config["backend"] == "lambda" and config["lambda"]["memory_mb"] == 4096
    assert config["lambda"]["bucket"] == defaults["lambda"]["bucket"]  # a sibling at depth 2, kept
    assert config["lambda"]["prices"]["date"] == "2026-12-01"
    with pytest.raises(CosmicaiError, match=r"invalid config: \(top level\): 'dataset' is a required property"):
        load_config([profile])  # alone it is not a config


def test_values_take_the_schemas_types(tmp_path: Path) -> None:
    profile = _write(tmp_path / "p.yaml", {"partition_mb": "2.5", "inference": {"batch_size": "64", "compile": "false"}})
    config = load_config([DEFAULTS, profile])
    assert config["partition_mb"] == 2.5 and config["inference"]["batch_size"] == 64 and config["inference"]["compile"] is False


def test_a_bad_value_is_one_line_naming_its_file_and_key(tmp_path: Path) -> None:
    profile = _write(tmp_path / "p.yaml", {"inference": {"batch_size": "many"}})
    with pytest.raises(CosmicaiError) as exc:
        load_config([DEFAULTS, profile])
    assert str(exc.value).startswith(f"{profile}: invalid config: inference.batch_size: ") and "\n" not in str(exc.value)
    infinite = _write(tmp_path / "inf.yaml", {"partition_mb": "1e400"})
    with pytest.raises(CosmicaiError, match=rf"^{infinite}: invalid config: partition_mb: 1e400 is not a finite number$"):
        load_config([DEFAULTS, infinite])


@pytest.mark.parametrize(
    ("text", "why"),
    [("inference: [unclosed", "not a readable config file: "), ("- a list\n", "a mapping of keys is needed, not list")],
)
def test_a_bad_file_is_one_line_naming_it(tmp_path: Path, text: str, why: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(CosmicaiError) as exc:
        load_config([DEFAULTS, bad])
    assert str(exc.value).startswith(f"{bad}: ") and why in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(CosmicaiError, match=rf"^{tmp_path / 'missing.yaml'}: not a readable config file"):
        load_config([tmp_path / "missing.yaml"])


def test_deploy_lambda_refuses_a_bad_value_in_one_line(tmp_path: Path) -> None:
    bad = _write(tmp_path / "l.yaml", {"lambda": {"memory_mb": "lots"}})
    proc = run_cli("deploy-lambda", "--configfile", DEFAULTS, bad, "--print-policy", cwd=REPO)
    assert proc.returncode != 0 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and f"{bad}: invalid config: lambda.memory_mb" in proc.stderr
