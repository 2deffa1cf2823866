"""The one fold of an order that every orders read model shares.

The document is JSON-ready: money as decimal strings with two places, times as ISO-8601 UTC
strings, so every store holds the same text and a reload folds on exactly what was stored.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from core.events import DomainEvent
from core.projection import Context, DocumentProjection, LookupKey, handles
from projections.orders.events import (
    OrderCancelled,
    OrderCompleted,
    OrderCreated,
    OrderItemAdded,
    OrderItemRemoved,
    registry,
)

__all__ = ("OrderFold", "money")

CENT = Decimal("0.01")


def money(value: Decimal | str | int) -> str:
    """A decimal amount as text with two places (``"12.50"``)."""
    return str(Decimal(value).quantize(CENT))


def _when(ctx: Context) -> str:
    return ctx.envelope.recorded_at.isoformat()


def _totals(doc: dict[str, Any], items: list[dict[str, Any]], ctx: Context) -> dict[str, Any]:
    total = sum((Decimal(i["subtotal"]) for i in items), Decimal(0))
    return {
        **doc,
        "items": items,
        "total_amount": money(total),
        "item_count": sum(i["quantity"] for i in items),
        "updated_at": _when(ctx),
    }


class OrderFold(DocumentProjection):
    """Folds an ``order-<id>`` stream into the order document (see docs/orders-domain.md)."""

    registry = registry
    stream_prefix = "order-"
    fold_family = "orders.OrderFold"

    def lookups(self, event: DomainEvent) -> list[LookupKey]:
        if isinstance(event, OrderCreated):
            return [("customer", event.customer_id)]
        if isinstance(event, OrderItemAdded):
            return [("product", event.product_id)]
        return []

    @handles(OrderCreated)
    def created(
        self, doc: dict[str, Any] | None, event: OrderCreated, ctx: Context
    ) -> dict[str, Any]:
        customer = ctx.lookup("customer", event.customer_id)
        return {
            "id": ctx.envelope.stream_id,
            "customer_id": event.customer_id,
            "customer_name": customer["name"],
            "customer_email": customer["email"],
            "status": "pending",
            "items": [],
            "total_amount": money(0),
            "item_count": 0,
            "shipping_address": event.shipping_address,
            "created_at": _when(ctx),
            "updated_at": _when(ctx),
            "completed_at": None,
            "cancelled_at": None,
            "cancel_reason": None,
        }

    @handles(OrderItemAdded)
    def item_added(
        self, doc: dict[str, Any] | None, event: OrderItemAdded, ctx: Context
    ) -> dict[str, Any]:
        assert doc is not None, "OrderItemAdded before OrderCreated"
        product = ctx.lookup("product", event.product_id)
        charged = Decimal(event.quantity) * event.unit_price
        items = [dict(i) for i in doc["items"]]
        for line in items:
            if line["product_id"] == event.product_id:
                line["quantity"] += event.quantity
                line["unit_price"] = money(event.unit_price)
                line["subtotal"] = money(Decimal(line["subtotal"]) + charged)
                break
        else:
            items.append(
                {
                    "product_id": event.product_id,
                    "product_name": product["name"],
                    "category": product["category"],
                    "quantity": event.quantity,
                    "unit_price": money(event.unit_price),
                    "subtotal": money(charged),
                }
            )
        return _totals(doc, items, ctx)

    @handles(OrderItemRemoved)
    def item_removed(
        self, doc: dict[str, Any] | None, event: OrderItemRemoved, ctx: Context
    ) -> dict[str, Any]:
        assert doc is not None, "OrderItemRemoved before OrderCreated"
        items = [dict(i) for i in doc["items"] if i["product_id"] != event.product_id]
        return _totals(doc, items, ctx)

    @handles(OrderCompleted)
    def completed(
        self, doc: dict[str, Any] | None, event: OrderCompleted, ctx: Context
    ) -> dict[str, Any]:
        assert doc is not None, "OrderCompleted before OrderCreated"
        return {**doc, "status": "completed", "completed_at": _when(ctx), "updated_at": _when(ctx)}

    @handles(OrderCancelled)
    def cancelled(
        self, doc: dict[str, Any] | None, event: OrderCancelled, ctx: Context
    ) -> dict[str, Any]:
        assert doc is not None, "OrderCancelled before OrderCreated"
        return {
            **doc,
            "status": "cancelled",
            "cancelled_at": _when(ctx),
            "cancel_reason": event.reason,
            "updated_at": _when(ctx),
        }
