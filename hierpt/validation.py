"""Pydantic validation errors as one line a user can act on: the field path, then what is wrong with it."""

from __future__ import annotations

from pydantic import ValidationError


def field_name(key) -> str:
    """A field path component as it reads on one line (a key with odd characters quoted)."""
    text = str(key)
    return text if text.isprintable() and text.strip() == text and text else repr(text)


def first_error(error: ValidationError, union_tag: str | None = None) -> str:
    """`field.path: message` of the first error; `union_tag` (a discriminated union's tag) is left out of the path."""
    first = error.errors()[0]
    loc = first["loc"][1:] if union_tag is not None and first["loc"][:1] == (union_tag,) else first["loc"]
    where = ".".join(field_name(part) for part in loc) or "(top level)"
    return f"{where}: {first['msg'].removeprefix('Value error, ')}"
