"""Workflow configuration helpers that do not need Snakemake."""

from __future__ import annotations

import jsonschema
import yaml


def config_error(config: dict, schema_path: str) -> str:
    """One line naming the offending config key and what is wrong with it (the most relevant error)."""
    with open(schema_path) as f:
        schema = yaml.safe_load(f)
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(config))
    if error is None:
        return "config is invalid"
    key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    return f"invalid config: {key}: {error.message}"
