"""The independent oracle of the orders read models, written apart from the projections'
code: sink tests compare what a store holds with :func:`expected_orders`."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from core.events import EventEnvelope
from projections.orders.history import Catalog, make_catalog, order_history

__all__ = ("Catalog", "expected_orders", "make_catalog", "order_history", "renamed")


def _money(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01")))


def expected_orders(events: list[EventEnvelope], catalog: Catalog) -> dict[str, dict[str, Any]]:
    """The order documents a correct projection holds after ``events`` (committed, any order)."""
    out: dict[str, dict[str, Any]] = {}
    ordered = sorted(
        (e for e in events if e.stream_id.startswith("order-")),
        key=lambda e: (e.stream_id, e.stream_version),
    )
    for e in ordered:
        when = e.recorded_at.isoformat()
        d = e.data
        if e.event_type == "OrderCreated":
            cust = catalog.customers[d["customer_id"]]
            out[e.stream_id] = {
                "id": e.stream_id,
                "customer_id": d["customer_id"],
                "customer_name": cust["name"],
                "customer_email": cust["email"],
                "status": "pending",
                "items": [],
                "total_amount": "0.00",
                "item_count": 0,
                "shipping_address": d.get("shipping_address", {}),
                "created_at": when,
                "updated_at": when,
                "completed_at": None,
                "cancelled_at": None,
                "cancel_reason": None,
            }
            continue
        doc = out[e.stream_id]
        doc["updated_at"] = when
        if e.event_type == "OrderItemAdded":
            line = next((i for i in doc["items"] if i["product_id"] == d["product_id"]), None)
            charged = Decimal(d["quantity"]) * Decimal(d["unit_price"])
            if line is None:
                prod = catalog.products[d["product_id"]]
                doc["items"].append(
                    {
                        "product_id": d["product_id"],
                        "product_name": prod["name"],
                        "category": prod["category"],
                        "quantity": d["quantity"],
                        "unit_price": _money(Decimal(d["unit_price"])),
                        "subtotal": _money(charged),
                    }
                )
            else:
                line["quantity"] += d["quantity"]
                line["unit_price"] = _money(Decimal(d["unit_price"]))
                line["subtotal"] = _money(Decimal(line["subtotal"]) + charged)
        elif e.event_type == "OrderItemRemoved":
            doc["items"] = [i for i in doc["items"] if i["product_id"] != d["product_id"]]
        elif e.event_type == "OrderCompleted":
            doc["status"], doc["completed_at"] = "completed", when
        elif e.event_type == "OrderCancelled":
            doc["status"], doc["cancelled_at"] = "cancelled", when
            doc["cancel_reason"] = d.get("reason", "")
        if e.event_type in ("OrderItemAdded", "OrderItemRemoved"):
            doc["total_amount"] = _money(
                sum((Decimal(i["subtotal"]) for i in doc["items"]), Decimal(0))
            )
            doc["item_count"] = sum(i["quantity"] for i in doc["items"])
    return out


def renamed(catalog: Catalog) -> Catalog:
    """The same catalog with every customer and product renamed: a replay folded with it
    writes other documents, so a rewrite that got past a version guard shows in the store."""
    return Catalog(
        customers={k: {**v, "name": f"Renamed {v['name']}"} for k, v in catalog.customers.items()},
        products={k: {**v, "name": f"Renamed {v['name']}"} for k, v in catalog.products.items()},
    )
