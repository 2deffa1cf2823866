"""Update strategies and error policies of a lane, as frozen settings."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ("CATCH_UP_BATCH", "ErrorPolicy", "LaneState", "Strategy")

CATCH_UP_BATCH = 5_000
"""Events per flush of a lane behind the head, by default (see ``Strategy.catch_up_batch``)."""


class ErrorPolicy(StrEnum):
    """What a lane does with a permanent error on one event."""

    HALT = "halt"
    """Stop this lane exactly before the event; other lanes go on."""
    PARK = "park"
    """Record a dead letter, hold the key's later events behind it, and go on."""


class LaneState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    IDLE = "idle"
    RETRYING = "retrying"
    HALTED = "halted"
    REBUILDING = "rebuilding"
    STOPPED = "stopped"


_KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "near_real_time": {"max_delay": 0.5, "max_batch": 5_000},
    "batch": {"max_delay": 3600.0, "max_batch": 200_000, "read_size": 5_000},
}
"""Defaults that differ by kind, for settings and the constructors of :class:`Strategy` alike."""


class Strategy(BaseModel):
    """When a lane flushes what it has folded.

    * ``immediate``: after every read that returned events (``max_delay = 0``).
    * ``near_real_time``: when ``max_batch`` events are pending or the oldest is
      ``max_delay`` seconds old.
    * ``batch``: every ``max_delay`` seconds (default hourly), early when ``max_batch`` events
      are pending (the memory bound), or when asked (``projectionist flush``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["immediate", "near_real_time", "batch"] = "immediate"

    @model_validator(mode="before")
    @classmethod
    def _defaults_of_its_kind(cls, data: Any) -> Any:
        """A strategy written as settings (``{kind = "batch"}`` in projectionist.toml) gets
        its kind's defaults, as the constructors below give them: without this, a batch lane
        took ``max_delay = 0`` and flushed after every read. ``interval`` is the batch
        strategy's name for ``max_delay``."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        kind = data.get("kind", "immediate")
        if "interval" in data:
            if kind != "batch":
                raise ValueError(f"interval is the batch strategy's period; {kind} takes max_delay")
            if "max_delay" in data:
                raise ValueError("set interval or max_delay, not both")
            data["max_delay"] = data.pop("interval")
        for name, value in _KIND_DEFAULTS.get(kind, {}).items():
            data.setdefault(name, value)
        if kind == "immediate":
            if data.get("max_delay", 0) != 0:
                raise ValueError(
                    "an immediate lane flushes after every read: max_delay must be 0 "
                    "(near_real_time waits up to max_delay)"
                )
            data.setdefault("read_size", data.get("max_batch", 1_000))
        return data

    max_batch: int = Field(default=1_000, ge=1, le=1_000_000)
    max_delay: float = Field(default=0.0, ge=0.0, le=7 * 24 * 3600)
    read_size: int = Field(default=1_000, ge=1, le=100_000)
    catch_up_batch: int = Field(default=CATCH_UP_BATCH, ge=1, le=1_000_000)
    """Events per flush while the lane is behind the head (a rebuild, a restart after a long
    stop): bounded memory, few writes per document. At the head ``max_batch`` applies. The
    default trades a little replay speed for memory: 20,000 replays the benchmark's history
    about 10% faster with every lane in one runner and holds about 80 MB more at its peak."""

    @classmethod
    def immediate(cls, max_batch: int = 1_000, catch_up_batch: int = CATCH_UP_BATCH) -> Strategy:
        return cls(kind="immediate", max_batch=max_batch, catch_up_batch=catch_up_batch)

    @classmethod
    def near_real_time(
        cls,
        max_delay: float | None = None,
        max_batch: int | None = None,
        catch_up_batch: int = CATCH_UP_BATCH,
    ) -> Strategy:
        """Flush after ``max_delay`` seconds (0.5) or ``max_batch`` events (5,000)."""
        given = _given(max_delay=max_delay, max_batch=max_batch)
        return cls(kind="near_real_time", catch_up_batch=catch_up_batch, **given)

    @classmethod
    def batch(
        cls,
        interval: float | None = None,
        max_batch: int | None = None,
        catch_up_batch: int = CATCH_UP_BATCH,
    ) -> Strategy:
        """Flush every ``interval`` seconds (3,600), early at ``max_batch`` events (200,000)."""
        given = _given(max_delay=interval, max_batch=max_batch)
        return cls(kind="batch", catch_up_batch=catch_up_batch, **given)


def _given(**values: Any) -> dict[str, Any]:
    """The arguments that were given (the kind's defaults, :data:`_KIND_DEFAULTS`, fill the
    others)."""
    return {name: value for name, value in values.items() if value is not None}
