"""The Postgres sink: read models as tables behind a view per projection, written in one
transaction with the lane's checkpoint. See docs/sinks/postgres.md."""

from sinks.postgres.config import PostgresSinkSettings
from sinks.postgres.schema import SQL_TYPES
from sinks.postgres.sink import PostgresSink

__all__ = ("SQL_TYPES", "PostgresSink", "PostgresSinkSettings")
