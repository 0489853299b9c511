"""Workflow configuration helpers that do not need Snakemake: values typed by the schema, one-line errors."""

from __future__ import annotations

import math
import re
from typing import Any

import jsonschema
import yaml

from cosmicai.errors import CosmicaiError

INTEGER = re.compile(r"[+-]?\d+")
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
BOOLEANS = {"true": True, "True": True, "false": False, "False": False}


def load_schema(schema_path: str) -> dict:
    """The workflow's config schema (YAML)."""
    with open(schema_path) as f:
        return yaml.safe_load(f)


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


def config_error(config: dict, schema_path: str) -> str:
    """One line naming the offending config key and what is wrong with it (the most relevant error)."""
    schema = load_schema(schema_path)
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(config))
    if error is None:
        return "config is invalid"
    key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    return f"invalid config: {key}: {error.message}"
