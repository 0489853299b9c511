"""`--config` values take the schema's types at every depth (cosmicai.config.coerce_config), as a user types them on a shell."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from helpers.cli import REPO
from helpers.workflow import snakemake, tiny_config

from cosmicai.config import coerce_config, load_schema
from cosmicai.errors import CosmicaiError

SCHEMA = load_schema()
DEFAULTS = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
# Keys with no value in config/config.yaml (lambda.prices is empty there): a valid one of each.
EXTRA = {("lambda", "prices", "date"): "2026-11-28", ("lambda", "prices", "x86_64_gb_s"): 0.0000166667,
         ("lambda", "prices", "arm64_gb_s"): 0.0000133334, ("lambda", "prices", "requests_per_million"): 0.2,
         ("lambda", "prices", "ephemeral_gb_s"): 0.0000000309}  # fmt: skip


def _scalar_keys(schema: dict, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every key of the schema whose value is not a mapping, at any depth."""
    keys = []
    for name, sub in schema.get("properties", {}).items():
        keys += _scalar_keys(sub, path + (name,)) if "properties" in sub else [path + (name,)]
    return keys


def _get(config: dict, path: tuple[str, ...]) -> Any:
    for k in path:
        config = config[k]
    return config


def _set(config: dict, path: tuple[str, ...], value: Any) -> None:
    for k in path[:-1]:
        config = config.setdefault(k, {})
    config[path[-1]] = value


def _typed(path: tuple[str, ...]) -> Any:
    """A valid value of the key: the shipped default (a number for partitions_per_job, `auto` or a number), else EXTRA's."""
    if path in EXTRA:
        return EXTRA[path]
    value = _get(DEFAULTS, path)
    return 64 if path == ("inference", "partitions_per_job") else value


def _spelled(value: Any) -> str:
    """How a user types the value in `--config` (Snakemake hands nested values over as this text)."""
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


KEYS = _scalar_keys(SCHEMA)


def test_every_scalar_key_is_covered() -> None:
    assert len(KEYS) >= 45 and ("inference", "partitions_per_job") in KEYS and ("lambda", "prices", "x86_64_gb_s") in KEYS


@pytest.mark.parametrize("path", KEYS, ids=[".".join(p) for p in KEYS])
def test_typed_value_from_text(path: tuple[str, ...]) -> None:
    config = copy.deepcopy(DEFAULTS)
    _set(config, path, _spelled(_typed(path)))
    coerced = coerce_config(config, SCHEMA)
    jsonschema.validate(coerced, SCHEMA)
    assert _get(coerced, path) == _typed(path) and type(_get(coerced, path)) is type(_typed(path))


@pytest.mark.parametrize("text,value", [("true", True), ("True", True), ("false", False), ("False", False)])
def test_boolean_spellings(text: str, value: bool) -> None:
    config = copy.deepcopy(DEFAULTS)
    config["plan_recommend"], config["inference"]["compile"] = text, text
    coerced = coerce_config(config, SCHEMA)
    assert coerced["plan_recommend"] is value and coerced["inference"]["compile"] is value


@pytest.mark.parametrize(
    "path,given,expected",
    [
        (("dataset",), 5, 5),  # a number where a string goes stays one: validation names it
        (("checkpoint",), None, ""),  # checkpoint= (empty)
        (("inference", "partitions_per_job"), "auto", "auto"),
        (("inference", "compile"), "yes", "yes"),  # not a boolean spelling: validation names it
        (("lambda", "memory_mb"), "10240.5", "10240.5"),
        (("partition_mb",), "1e-3", 0.001),
    ],
)
def test_other_values(path: tuple[str, ...], given: Any, expected: Any) -> None:
    config = copy.deepcopy(DEFAULTS)
    _set(config, path, given)
    assert _get(coerce_config(config, SCHEMA), path) == expected


@pytest.mark.parametrize(
    "path,given", [(("partition_mb",), float("nan")), (("partition_mb",), float("inf")), (("cost", "cpu_hour_usd"), "1e400")]
)
def test_non_finite_refused(path: tuple[str, ...], given: Any) -> None:
    config = copy.deepcopy(DEFAULTS)
    _set(config, path, given)
    with pytest.raises(CosmicaiError, match=rf"^invalid config: {'.'.join(path)}: .* is not a finite number$"):
        coerce_config(config, SCHEMA)


def test_config_on_the_command_line(tmp_path: Path, tiny_dataset: Path, random_checkpoint: Path) -> None:
    """What the issue's user typed, in one dry-run: nested and top-level values as text, all accepted."""
    config = tiny_config(tiny_dataset, random_checkpoint)
    args = ["plan_recommend=true", "partition_copy=False", "inference={batch_size: 64, partitions_per_job: 2, compile: false}",
            "lambda={memory_mb: 10240, max_attempts: 1, prices: {arm64_gb_s: 0.00001}}", "cost={cpu_hour_usd: 0.05}"]  # fmt: skip
    proc = snakemake(tmp_path, "local", config, "-n", "--config", *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "infer_job" in proc.stdout


def test_wrong_value_named(tmp_path: Path, tiny_dataset: Path, random_checkpoint: Path) -> None:
    proc = snakemake(tmp_path, "local", tiny_config(tiny_dataset, random_checkpoint), "-n", "--config", "inference={batch_size: big}")
    assert proc.returncode != 0
    assert "invalid config: inference.batch_size: 'big' is not of type 'integer'" in proc.stdout + proc.stderr
