"""pydantic's validation errors as one line per problem, naming the file, the dotted key and what was expected.

For an unknown key it suggests the closest valid one: in its own section, anywhere in the schema, or the new name
of an old flat key (`config_migrate.RENAMES`).
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ValidationError

from cloneus import config_migrate


def _section_of(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _dotted_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every key of the schema, sections and leaves, dotted (`training`, `training.chunk_size`, ...)."""
    keys = []
    for name, field in model.model_fields.items():
        keys.append(prefix + name)
        if (section := _section_of(field.annotation)) is not None:
            keys += _dotted_keys(section, f"{prefix}{name}.")
    return keys


def suggest_key(loc: tuple[Any, ...], schema: type[BaseModel]) -> str | None:
    """The full dotted key an unknown key most likely meant: the closest name among its section's keys, every
    other key of the schema (`training.model_id` -> `model.model_id`) and the old flat keys (`lora_rr` -> `lora.r`);
    a key of its own section wins a tie."""
    prefix = ".".join(str(p) for p in loc[:-1])
    wanted = str(loc[-1])
    candidates: dict[str, str] = {}
    for key in _dotted_keys(schema):
        candidates.setdefault(key.rpartition(".")[2], key)
    for old, new in config_migrate.RENAMES.items():
        candidates.setdefault(old, new)
    siblings = {k.rpartition(".")[2] for k in _dotted_keys(schema) if k.rpartition(".")[0] == prefix}
    scored = [
        (difflib.SequenceMatcher(None, wanted, name).ratio(), name in siblings, name)
        for name in [*siblings, *candidates]
    ]
    score, is_sibling, name = max(scored, default=(0.0, False, ""))
    if score < 0.6:
        return None
    return f"{prefix}.{name}" if is_sibling and prefix else name if is_sibling else candidates[name]


def _key_of(loc: tuple[Any, ...], schema: type[BaseModel]) -> str:
    """The dotted key of an error location, without pydantic's union-member tags (`float`, `list[float]`)."""
    model: type[BaseModel] | None = schema
    parts = []
    for part in loc:
        if isinstance(part, int):
            parts.append(str(part))
            continue
        if model is None:
            continue
        parts.append(str(part))
        model = _section_of(getattr(model.model_fields.get(str(part)), "annotation", None))
    return ".".join(parts)


def format_validation_error(err: ValidationError, source: str, schema: type[BaseModel]) -> str:
    """One line per problem: `SOURCE: dotted.key: what is wrong (got VALUE)`, with a 'did you mean' for typos."""
    # A union type (`float | list[float]`) reports one error per member; keep the most specific one per field.
    by_field: dict[str, dict[str, Any]] = {}
    for e in err.errors():
        field = _key_of(tuple(p for p in e["loc"] if not isinstance(p, int)), schema)
        if field not in by_field or len(e["loc"]) > len(by_field[field]["loc"]):
            by_field[field] = e
    lines = []
    for e in by_field.values():
        loc = tuple(e["loc"])
        key = _key_of(loc, schema)
        if e["type"] == "extra_forbidden":
            close = suggest_key(loc, schema)
            hint = f" (did you mean '{close}'?)" if close else ""
            lines.append(f"{source}: {key}: unknown key{hint}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            got = "" if isinstance(e.get("input"), dict) else f" (got {e.get('input')!r})"
            lines.append(f"{source}: {key}: {msg}{got}")
    return "\n".join(lines)
