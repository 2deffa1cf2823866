"""Generated order histories for the demo, the benchmarks and the tests: a catalog of
customers and products, and interleaved order streams (fixed seeds, so runs are comparable)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from decimal import Decimal

from core.events import NewEvent

__all__ = ("Catalog", "make_catalog", "order_history")

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
    orders: int, catalog: Catalog, seed: int = 11, active: int = 200
) -> list[tuple[str, list[NewEvent]]]:
    """``(stream_id, events)`` appends for ``orders`` orders, in append order.

    At most ``active`` orders are open at a time and their steps interleave at random, as in
    a shop where an order lives for minutes among a few hundred others (not for the whole
    history): a replay then meets each order in a few nearby batches.
    """
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
    waiting = iter(plans)
    open_plans = [plan for _, plan in zip(range(max(1, active)), waiting, strict=False)]
    while open_plans:
        i = rng.randrange(len(open_plans))
        out.append(open_plans[i].pop(0))
        if not open_plans[i]:
            following = next(waiting, None)
            if following is None:
                open_plans.pop(i)
            else:
                open_plans[i] = following
    return out
