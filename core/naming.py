"""Names that become parts of table, index, key and schema names, validated once, here."""

from __future__ import annotations

import re

from core.errors import ConfigurationError

__all__ = ("NAME_PATTERN", "quote_ident", "validate_name")

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
"""Lower-case letter first, then lower-case letters, digits or ``_``; at most 48 characters.

Every store accepts such a name unquoted: Postgres and DuckDB identifiers, Elasticsearch index
names (lower case, no leading ``_``), Redis key parts without glob characters.
"""


def validate_name(field: str, value: object) -> str:
    """Return ``value`` if it is a valid name, else raise :class:`ConfigurationError`."""
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise ConfigurationError(
            field,
            value,
            "use 1-48 characters: a lower-case letter first, then lower-case letters, digits "
            "or '_' (it becomes part of table, index and key names)",
        )
    return value


def quote_ident(name: str) -> str:
    """Quote a validated SQL identifier (defence in depth: names are validated first)."""
    return '"' + name.replace('"', '""') + '"'
