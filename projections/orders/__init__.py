"""The reference orders domain: events, the shared fold, five read models, the catalog."""

from projections.orders.catalog import CATALOG_DDL, PostgresCatalog, catalog_lookups
from projections.orders.events import (
    OrderCancelled,
    OrderCompleted,
    OrderCreated,
    OrderItemAdded,
    OrderItemRemoved,
    registry,
)
from projections.orders.fold import OrderFold, money
from projections.orders.read_models import (
    OrderAnalytics,
    OrderCache,
    OrderDetail,
    OrderSearch,
    OrderSummary,
)

__all__ = (
    "CATALOG_DDL",
    "OrderAnalytics",
    "OrderCache",
    "OrderCancelled",
    "OrderCompleted",
    "OrderCreated",
    "OrderDetail",
    "OrderFold",
    "OrderItemAdded",
    "OrderItemRemoved",
    "OrderSearch",
    "OrderSummary",
    "PostgresCatalog",
    "catalog_lookups",
    "money",
    "registry",
)
