"""The workflow config: its schema, the one loader (files merged as Snakemake merges them, typed, validated), one-line errors."""

from __future__ import annotations

import collections.abc
import math
import os
import re
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from cosmicai.errors import CosmicaiError

INTEGER = re.compile(r"[+-]?\d+")
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
BOOLEANS = {"true": True, "True": True, "false": False, "False": False}
# Package data, so that an installed cosmicai (deploy-lambda, plan) validates as the workflow does.
SCHEMA_PATH = str(files("cosmicai") / "config.schema.yaml")
DEFAULT_CONFIG = Path("config", "config.yaml")


def load_schema(schema_path: str = SCHEMA_PATH) -> dict:
    """The workflow's config schema (YAML)."""
    with open(schema_path) as f:
        return yaml.safe_load(f)


def read_config_file(path: str | os.PathLike) -> dict:
    """One config file's mapping as written (not merged, not validated); an empty file is an empty mapping."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise CosmicaiError(path, f"not a readable config file: {' '.join(str(exc).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CosmicaiError(path, f"not a config file: a mapping of keys is needed, not {type(data).__name__}")
    return data


def merge_config(config: dict, new: collections.abc.Mapping) -> dict:
    """`config` updated in place by `new` at every depth, as snakemake.utils.update_config merges --configfile files."""
    for key, value in new.items():
        if isinstance(value, collections.abc.Mapping):
            sub = config.get(key)
            config[key] = merge_config(sub if isinstance(sub, dict) else {}, value)  # a mapping replaces a scalar
        else:
            config[key] = value
    return config


def load_config(paths: Sequence[str | os.PathLike] | None = None) -> dict:
    """The workflow config from `paths` (default ./config/config.yaml), merged in order as Snakemake merges
    --configfile files, then typed and validated by the schema as the workflow does; a bad file or value raises."""
    paths = list(paths or [DEFAULT_CONFIG])
    files_read = [(path, read_config_file(path)) for path in paths]
    config: dict = {}
    for _, data in files_read:
        merge_config(config, data)
    schema = load_schema()
    try:
        config = coerce_config(config, schema)
    except CosmicaiError as exc:
        raise CosmicaiError(_source(files_read, exc.problem.split(":")[0].split(".")), str(exc)) from None
    error = _best_error(config, schema)
    if error is not None:
        raise CosmicaiError(_source(files_read, error[0]), error[1])
    return config


def _source(files_read: list[tuple[str | os.PathLike, dict]], key: Sequence[Any]) -> str:
    """The last file that sets `key` (a path of keys): where a bad value came from; else every file, in order."""
    for path, data in reversed(files_read):
        node: Any = data
        for part in key:
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            if key:
                return str(path)
    return ", ".join(str(path) for path, _ in files_read)


def _types(schema: dict) -> list[str]:
    """The JSON types a schema allows, its oneOf/anyOf alternatives included."""
    kinds = schema.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    for alt in schema.get("oneOf", []) + schema.get("anyOf", []):
        kinds += _types(alt)
    return kinds


def _coerce(value: Any, schema: dict, key: str) -> Any:
    """`value` in the schema's type where it came as text (or as what Snakemake made of text)."""
    kinds = _types(schema)
    if isinstance(value, str) and ("object" in kinds or "properties" in schema):
        try:  # a mapping given as text: all text, as Snakemake reads nested values (`yes` stays 'yes', not true)
            parsed = yaml.load(value, Loader=yaml.BaseLoader)
        except yaml.YAMLError:
            return value
        value = parsed if isinstance(parsed, dict) else value
    if isinstance(value, dict):
        props = schema.get("properties", {})
        return {k: _coerce(v, props[k], f"{key}.{k}" if key else k) if k in props else v for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value) and ("number" in kinds or "integer" in kinds):
        raise CosmicaiError("invalid config", f"{key}: {value} is not a finite number")
    if isinstance(value, str):
        text = value.strip()
        if "integer" in kinds and INTEGER.fullmatch(text):
            return int(text)
        if "number" in kinds and NUMBER.fullmatch(text):
            number = int(text) if INTEGER.fullmatch(text) else float(text)
            if not math.isfinite(number):  # 1e400
                raise CosmicaiError("invalid config", f"{key}: {value} is not a finite number")
            return number
        if "boolean" in kinds and text in BOOLEANS:
            return BOOLEANS[text]
        return value
    if value is None and "string" in kinds:  # --config checkpoint= (Snakemake makes None of an empty value)
        return ""
    return value


def coerce_config(config: dict, schema: dict) -> dict:
    """The config with every value given as text (Snakemake's --config, at any depth) in its schema's type.

    Integers, numbers and booleans spelled true/false/True/False become those types, nested mappings given as
    text become mappings; anything else is left for validation to name. Non-finite numbers are refused here.
    """
    return _coerce(config, schema, "")


def _best_error(config: dict, schema: dict) -> tuple[list, str] | None:
    """The most relevant schema error's key path and `invalid config: KEY: problem`; None for a valid config."""
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(config))
    if error is None:
        return None
    key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    return list(error.absolute_path), f"invalid config: {key}: {error.message}"


def config_error(config: dict, schema_path: str = SCHEMA_PATH) -> str:
    """One line naming the offending config key and what is wrong with it (the most relevant error)."""
    error = _best_error(config, load_schema(schema_path))
    return error[1] if error else "config is invalid"
