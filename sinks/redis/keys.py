"""The key layout of one lane in Redis. Every key carries the hash tag ``{<prefix>}``, so a
lane's keys live in one cluster slot and one script may touch all of them::

    {<prefix>}:live                 string: the generation readers use ("1")
    {<prefix>}:checkpoint           hash: "<lane>:g<generation>" -> "<txid>/<gpos>"
    {<prefix>}:owner:g<generation>  string: the lane that writes that generation
    {<prefix>}:g<generation>        hash: document key -> version (negative: tombstone)
    {<prefix>}:g<generation>:<key>  string: the document as JSON (optionally with a TTL)

The prefix is ``target.options["key_prefix"]``, else the projection name; it is a validated
name (lower-case letters, digits, ``_``), so it holds no glob or hash-tag character.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.errors import ConfigurationError
from core.naming import validate_name
from core.sink import Target

__all__ = ("KeyLayout", "checkpoint_field", "layout_for", "ttl_for")


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """Key names of one prefix at one generation."""

    prefix: str
    generation: int = 1

    def __post_init__(self) -> None:
        validate_name("key_prefix", self.prefix)
        if self.generation < 1:
            raise ConfigurationError("generation", self.generation, "generations start at 1")

    @property
    def tag(self) -> str:
        return "{" + self.prefix + "}"

    @property
    def live(self) -> str:
        return f"{self.tag}:live"

    @property
    def checkpoint(self) -> str:
        return f"{self.tag}:checkpoint"

    @property
    def owner(self) -> str:
        return f"{self.tag}:owner:g{self.generation}"

    @property
    def versions(self) -> str:
        return f"{self.tag}:g{self.generation}"

    @property
    def documents_prefix(self) -> str:
        """What every document key of this generation starts with."""
        return f"{self.tag}:g{self.generation}:"

    @property
    def documents_pattern(self) -> str:
        """A SCAN pattern matching exactly this generation's document keys."""
        return self.documents_prefix + "*"

    def document(self, key: str) -> str:
        return self.documents_prefix + key

    def at(self, generation: int) -> KeyLayout:
        return KeyLayout(self.prefix, generation)


def layout_for(target: Target) -> KeyLayout:
    prefix = target.options.get("key_prefix", target.projection)
    return KeyLayout(validate_name("key_prefix", prefix), target.generation)


def checkpoint_field(target: Target) -> str:
    return f"{target.lane}:g{target.generation}"


def ttl_for(target: Target) -> int:
    """``target.options["ttl_seconds"]`` (0: documents never expire)."""
    value: Any = target.options.get("ttl_seconds")
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10**9:
        raise ConfigurationError(
            "ttl_seconds", value, "use a whole number of seconds from 1 (or leave it unset)"
        )
    return value
