"""The Postgres sink's settings, names and public API, without a service."""

from __future__ import annotations

from typing import Any

import pytest

import sinks.postgres
from core.errors import ConfigurationError
from core.schema import Field, FieldType
from core.sink import Target
from sinks.postgres import PostgresSinkSettings

T = FieldType


def test_public_api_is_pinned() -> None:
    assert sinks.postgres.__all__ == ("SQL_TYPES", "PostgresSink", "PostgresSinkSettings")


def test_settings_defaults_and_address_hide_the_password() -> None:
    settings = PostgresSinkSettings(dsn="postgresql://app:pw-123@db.example:6543/reads")
    assert settings.schema_name == "read_models"
    assert settings.address() == "postgresql://db.example:6543/reads"
    assert "pw-123" not in repr(settings) and settings.secrets() == ("pw-123",)


@pytest.mark.parametrize(
    "schema", ["Read_Models", "read-models", 'x"; DROP SCHEMA public; --', "", "1abc", "a" * 49]
)
def test_bad_schema_names_are_refused(schema: str) -> None:
    with pytest.raises(ConfigurationError, match=r"postgres\.schema"):
        PostgresSinkSettings(dsn="postgresql://u@localhost/db", schema=schema)


def test_a_dsn_that_is_not_a_postgres_url_is_refused_without_its_password() -> None:
    with pytest.raises(ConfigurationError, match=r"postgres\.dsn") as caught:
        PostgresSinkSettings(dsn="mysql://u:hunter2@localhost/db")
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Target(lane="l", projection="Things"), "projection"),
        (lambda: Target(lane="l", projection='t"; drop'), "projection"),
        (lambda: Field(name="Bad Name", type=T.TEXT), "field.name"),
        (lambda: Field(name="x;drop", type=T.TEXT), "field.name"),
    ],
)
def test_bad_names_in_declarations_are_refused(make: Any, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        make()
