"""Strategies written as settings get their kind's defaults (projectionist.toml)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.settings import LaneSettings
from core.strategy import Strategy


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ({"kind": "batch"}, Strategy.batch()),
        ({"kind": "batch", "interval": 60}, Strategy.batch(interval=60)),
        ({"kind": "batch", "max_delay": 60}, Strategy.batch(interval=60)),
        ({"kind": "near_real_time"}, Strategy.near_real_time()),
        ({"kind": "near_real_time", "max_delay": 0.2}, Strategy.near_real_time(max_delay=0.2)),
        ({"kind": "immediate", "max_batch": 2000}, Strategy.immediate(max_batch=2000)),
        ({}, Strategy.immediate()),
    ],
)
def test_a_strategy_in_settings_is_the_constructors(
    written: dict[str, object], expected: Strategy
) -> None:
    lane = LaneSettings(projection="p:P", sink="postgres", strategy=written)  # type: ignore[arg-type]
    assert lane.strategy == expected


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ({"kind": "near_real_time", "interval": 5}, "takes max_delay"),
        ({"kind": "batch", "interval": 5, "max_delay": 5}, "not both"),
        ({"kind": "immediate", "max_delay": 1}, "max_delay must be 0"),
    ],
)
def test_contradictions_are_refused_with_the_fix(written: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        LaneSettings(projection="p:P", sink="postgres", strategy=written)  # type: ignore[arg-type]


def test_a_dumped_strategy_validates_to_itself() -> None:
    for strategy in (Strategy.batch(), Strategy.near_real_time(), Strategy.immediate(7)):
        assert Strategy.model_validate(strategy.model_dump()) == strategy
