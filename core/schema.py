"""Store-neutral declaration of a read model's shape, from which each sink derives its tables,
mappings or key layout. A projection declares it; sinks translate it."""

from __future__ import annotations

import re
from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, field_validator

from core.naming import validate_name

__all__ = (
    "ChildTable",
    "DocumentSchema",
    "Field",
    "FieldType",
    "decimal_from_text",
    "integer_from_text",
)

_DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")


def decimal_from_text(text: str) -> Decimal:
    """A decimal field's value written as text, as sinks read it: ASCII digits with an
    optional sign, point and exponent, nothing else. Raises :class:`ValueError` otherwise
    (Python's ``Decimal`` alone would take ``"1_000"``, ``" 1 "`` or full-width digits, and
    store a number the document does not spell)."""
    if _DECIMAL_TEXT.fullmatch(text) is None:
        raise ValueError(f"{text!r} is not a decimal number (ASCII digits, sign, point, exponent)")
    return Decimal(text)


def integer_from_text(text: str) -> int:
    """An integer field's value written as text: ASCII digits with an optional sign."""
    if _INTEGER_TEXT.fullmatch(text) is None:
        raise ValueError(f"{text!r} is not an integer (ASCII digits and an optional sign)")
    return int(text)


class FieldType(StrEnum):
    """Neutral field types. ``text`` is full-text searchable; ``keyword`` is exact-match."""

    TEXT = "text"
    KEYWORD = "keyword"
    INTEGER = "integer"
    DECIMAL = "decimal"
    TIMESTAMP = "timestamp"
    DATE = "date"
    BOOLEAN = "boolean"
    JSON = "json"


class Field(BaseModel):
    """One field of a document or child row."""

    model_config = ConfigDict(frozen=True)

    name: str
    type: FieldType
    nullable: bool = True
    indexed: bool = False
    """Whether sinks with secondary indexes should index it (for list queries)."""

    @field_validator("name")
    @classmethod
    def _valid(cls, value: str) -> str:
        return validate_name("field.name", value)


class ChildTable(BaseModel):
    """A list inside the document stored as its own rows (order lines), replaced per key."""

    model_config = ConfigDict(frozen=True)

    name: str
    source: str
    """The document's field that holds the list of child dicts."""
    fields: tuple[Field, ...]
    key_fields: tuple[str, ...]
    """Fields that, with the parent key, identify a child row."""

    @field_validator("name")
    @classmethod
    def _valid(cls, value: str) -> str:
        return validate_name("child_table.name", value)


class DocumentSchema(BaseModel):
    """The top-level fields of a document (its key field first) and its child tables."""

    model_config = ConfigDict(frozen=True)

    key_field: str = "id"
    fields: tuple[Field, ...]
    children: tuple[ChildTable, ...] = ()

    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)
