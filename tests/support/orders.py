"""Generated order histories and an oracle for them, written independently of the projections'
code: sink tests compare what a store holds with :func:`expected_orders`."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from core.events import EventEnvelope, NewEvent

CATEGORIES = ("books", "games", "garden", "kitchen", "music", "tools", "toys")
ADJECTIVES = ("red", "quiet", "solid", "tiny", "grand", "swift", "plain", "bright")
NOUNS = ("kettle", "lamp", "chair", "novel", "drill", "puzzle", "record", "spade")


@dataclass
class Catalog:
    customers: dict[str, dict[str, str]] = field(default_factory=dict)
    products: dict[str, dict[str, str]] = field(default_factory=dict)

    def lookups(self) -> dict[str, dict[str, dict[str, str]]]:
        return {"customer": self.customers, "product": self.products}


def make_catalog(customers: int = 50, products: int = 40, seed: int = 7) -> Catalog:
    rng = random.Random(seed)
    cat = Catalog()
    for i in range(customers):
        cat.customers[f"c{i}"] = {"name": f"Customer {i}", "email": f"c{i}@example.com"}
    for i in range(products):
        name = f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {i}"
        cat.products[f"p{i}"] = {"name": name, "category": CATEGORIES[i % len(CATEGORIES)]}
    return cat


def order_history(
    orders: int, catalog: Catalog, seed: int = 11
) -> list[tuple[str, list[NewEvent]]]:
    """``(stream_id, events)`` appends for ``orders`` orders, interleaved, in append order."""
    rng = random.Random(seed)
    plans: list[list[tuple[str, list[NewEvent]]]] = []
    customers = sorted(catalog.customers)
    products = sorted(catalog.products)
    for n in range(orders):
        stream = f"order-{seed}-{n:07d}"
        steps: list[tuple[str, list[NewEvent]]] = []
        created = NewEvent(
            event_type="OrderCreated",
            data={
                "customer_id": rng.choice(customers),
                "shipping_address": {"city": rng.choice(["Oslo", "Lyon", "Porto"]), "zip": str(n)},
            },
        )
        steps.append((stream, [created]))
        on_order: list[str] = []
        for _ in range(rng.randint(1, 5)):
            product = rng.choice(products)
            price = Decimal(rng.randint(100, 9999)) / 100
            event = NewEvent(
                event_type="OrderItemAdded",
                data={
                    "product_id": product,
                    "quantity": rng.randint(1, 4),
                    "unit_price": str(price),
                },
            )
            steps.append((stream, [event]))
            on_order.append(product)
        if rng.random() < 0.2 and on_order:
            removed = NewEvent(event_type="OrderItemRemoved", data={"product_id": on_order[0]})
            steps.append((stream, [removed]))
        ending = rng.random()
        if ending < 0.6:
            steps.append((stream, [NewEvent(event_type="OrderCompleted")]))
        elif ending < 0.75:
            steps.append(
                (stream, [NewEvent(event_type="OrderCancelled", data={"reason": "changed mind"})])
            )
        plans.append(steps)
    out: list[tuple[str, list[NewEvent]]] = []
    while plans:
        i = rng.randrange(len(plans))
        out.append(plans[i].pop(0))
        if not plans[i]:
            plans.pop(i)
    return out


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
