"""The workflow's configuration checked against config/config.schema.yaml: one line per problem.

Snakemake's ``validate`` prints jsonschema's report (25-55 lines for one bad value); here each
problem is one line, ``config key '<key path>': <problem>; <what to do>``, and unknown keys at
every level name the nearest valid one.  The schema's defaults are filled into the config as
``snakemake.utils.validate(..., set_default=True)`` does.  Imports neither Snakemake nor pandas:
the workflow's parse stays lean.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError

from meshsr.errors import suggest

TYPE_WORDS = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
    "object": "a mapping (key: value)",
    "array": "a list",
    "null": "null (unset)",
}
BOUND_WORDS = {"minimum": "of at least", "exclusiveMinimum": "above", "maximum": "at most"}
PATTERN_WORDS = {"^[A-Za-z0-9-]+$": "letters, digits and '-' only (no '_': it separates the names in a cache file)"}
# Wording for checks that generic words would leave vague: (key path, schema keyword) -> (problem, what to do).
SPECIAL = {
    ("meshes", "minProperties"): ("needs at least two resolutions (coarsest first)", "add a finer mesh bundle"),
}


def load_schema(path: str | Path) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text())


def _fill_defaults(validator_class):
    """A validator that also sets each missing property's schema default (jsonschema's FAQ recipe, as Snakemake)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema:
                    instance.setdefault(name, subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": set_defaults})


FillingValidator = _fill_defaults(Draft202012Validator)


def check_config(config: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Fill in ``config``'s defaults; one line per problem, sorted by key path (empty: valid)."""
    lines = [line for error in FillingValidator(schema).iter_errors(config) for line in describe(error)]
    return sorted(lines)


def key_path(parts: Iterable[str | int]) -> str:
    """``train.pairs[0][1]`` from ['train', 'pairs', 0, 1]."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def show(value: Any) -> str:
    """A value as the config file writes it (JSON is YAML's flow style)."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def expected(schema: dict[str, Any]) -> str:
    """What a schema accepts, in words: 'an integer of at least 1', 'one of "mlp", "gnn"', 'a list or null'."""
    if "enum" in schema:
        return "one of " + ", ".join(show(v) for v in schema["enum"])
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else list(types)
    words = " or ".join(TYPE_WORDS.get(t, t) for t in types) or "a value as config/config.schema.yaml describes"
    if schema.get("minLength") == 1:
        words = "a non-empty string"
    bounds = [f"{words} {schema[key]}" for key, words in BOUND_WORDS.items() if key in schema]
    if bounds:
        words += " " + " and ".join(bounds)
    if "pattern" in schema:
        words += f" of {PATTERN_WORDS.get(schema['pattern'], 'the form ' + schema['pattern'])}"
    if schema.get("minItems") == schema.get("maxItems") == 2:
        words += " of two names, [source, target]"
    if "description" in schema and "object" not in types:
        words += f" ({schema['description']})"
    return words


def describe(error: ValidationError) -> list[str]:
    """The lines ``config key '<key>': <problem>; <what to do>`` of one jsonschema error."""
    where, kind, value, schema = list(error.absolute_path), error.validator, error.instance, error.schema
    key = key_path(where)
    if kind == "additionalProperties" and error.validator_value is False:
        valid = list(schema.get("properties", {}))
        unknown = [name for name in value if name not in valid]
        return [f"config key {key_path([*where, name])!r}: unknown; {suggest(str(name), valid)}" for name in unknown]
    if kind == "required":
        missing = [name for name in error.validator_value if name not in value]
        return [_missing(key_path([*where, name]), schema.get("properties", {}).get(name, {})) for name in missing]
    if (key, kind) in SPECIAL:
        problem, todo = SPECIAL[key, kind]
        has = f"has {len(value)}: {', '.join(value)}" if value else "has none"
        return [f"config key {key!r}: {problem}, {has}; {todo}"]
    if kind == "pattern" and "propertyNames" in error.relative_schema_path:
        return [f"config key {key_path([*where, value])!r}: bad name; use {PATTERN_WORDS.get(error.validator_value)}"]
    problem = _problem(kind, value, error.validator_value)
    if problem:
        return [f"config key {key!r}: {problem}; use {expected(schema)}"]
    message = " ".join(error.message.split())
    return [f"config key {key!r}: {message}; see config/config.schema.yaml"]


def _missing(key: str, schema: dict[str, Any]) -> str:
    what = schema.get("description") or expected(schema)
    return f"config key {key!r}: missing; add it ({what})"


def _problem(kind: str, value: Any, bound: Any) -> str | None:
    """What is wrong with ``value`` for the schema keyword ``kind`` (None: no words for it)."""
    if kind == "type":
        return "is unset (null)" if value is None else f"{show(value)} is {_type_words(value)}"
    if kind in ("minimum", "exclusiveMinimum"):
        return f"{show(value)} is too small"
    if kind == "maximum":
        return f"{show(value)} is too large"
    if kind == "minItems":
        return f"{show(value)} has too few entries" if value else "is empty"
    words = {"enum": "is not a choice", "maxItems": "has too many entries", "pattern": "is not a valid name"}
    if kind == "minLength":
        return "is empty"
    return f"{show(value)} {words[kind]}" if kind in words else None


def _type_words(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    for kind, words in (("integer", int), ("number", float), ("string", str), ("object", dict), ("array", list)):
        if isinstance(value, words):
            return TYPE_WORDS[kind]
    return type(value).__name__
