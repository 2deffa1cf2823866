"""The trusted fast path builds the same envelope as pydantic's own constructors."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest
from pydantic import ValidationError

from core.events import EventEnvelope
from core.position import Position


def test_trusted_envelope_equals_a_validated_one() -> None:
    values = {
        "event_id": uuid4(),
        "stream_id": "order-1",
        "stream_version": 3,
        "event_type": "OrderCompleted",
        "schema_version": 1,
        "data": {"a": [1, 2]},
        "metadata": {},
        "recorded_at": datetime.now(UTC),
        "position": Position(10, 20),
    }
    trusted = EventEnvelope.trusted(dict(values))
    assert trusted == EventEnvelope.model_validate(values)
    assert trusted == EventEnvelope.model_construct(**values)
    assert trusted.model_dump() == values
    assert trusted.model_fields_set == set(values)
    with pytest.raises(ValidationError):
        trusted.stream_version = 4  # type: ignore[misc]
