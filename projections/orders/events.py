"""The reference orders domain: its events. Semantics in docs/orders-domain.md."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import Field

from core.events import DomainEvent, EventRegistry

__all__ = (
    "OrderCancelled",
    "OrderCompleted",
    "OrderCreated",
    "OrderItemAdded",
    "OrderItemRemoved",
    "registry",
)

registry = EventRegistry()


@registry.register
class OrderCreated(DomainEvent):
    event_type = "OrderCreated"
    customer_id: str = Field(min_length=1)
    shipping_address: dict[str, Any] = Field(default_factory=dict)


@registry.register
class OrderItemAdded(DomainEvent):
    event_type = "OrderItemAdded"
    product_id: str = Field(min_length=1)
    quantity: int = Field(gt=0)
    unit_price: Decimal = Field(ge=0, decimal_places=2)


@registry.register
class OrderItemRemoved(DomainEvent):
    event_type = "OrderItemRemoved"
    product_id: str = Field(min_length=1)


@registry.register
class OrderCompleted(DomainEvent):
    event_type = "OrderCompleted"


@registry.register
class OrderCancelled(DomainEvent):
    event_type = "OrderCancelled"
    reason: str = ""
