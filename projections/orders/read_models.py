"""The orders read models: one fold, five shapes. Each sink stores the whole document (so the
next event folds on it) plus the fields its schema declares, as columns or mapped fields."""

from __future__ import annotations

from core.schema import ChildTable, DocumentSchema, Field, FieldType
from projections.orders.fold import OrderFold

__all__ = (
    "ORDER_FIELDS",
    "OrderAnalytics",
    "OrderCache",
    "OrderDetail",
    "OrderSearch",
    "OrderSummary",
)

T = FieldType

ORDER_FIELDS = (
    Field(name="id", type=T.KEYWORD, nullable=False),
    Field(name="customer_id", type=T.KEYWORD, nullable=False, indexed=True),
    Field(name="customer_name", type=T.TEXT),
    Field(name="customer_email", type=T.KEYWORD),
    Field(name="status", type=T.KEYWORD, nullable=False, indexed=True),
    Field(name="total_amount", type=T.DECIMAL, nullable=False),
    Field(name="item_count", type=T.INTEGER, nullable=False),
    Field(name="created_at", type=T.TIMESTAMP, nullable=False, indexed=True),
    Field(name="updated_at", type=T.TIMESTAMP, nullable=False),
    Field(name="completed_at", type=T.TIMESTAMP),
)

LINE_FIELDS = (
    Field(name="product_id", type=T.KEYWORD, nullable=False),
    Field(name="product_name", type=T.TEXT),
    Field(name="category", type=T.KEYWORD),
    Field(name="quantity", type=T.INTEGER, nullable=False),
    Field(name="unit_price", type=T.DECIMAL, nullable=False),
    Field(name="subtotal", type=T.DECIMAL, nullable=False),
)


class OrderSummary(OrderFold):
    """List views (Postgres, immediate): one row per order."""

    name = "order_summary"
    schema = DocumentSchema(
        fields=(*ORDER_FIELDS, Field(name="shipping_address", type=T.JSON)),
    )


class OrderDetail(OrderFold):
    """Single-order API reads (Postgres, immediate): the order with its items."""

    name = "order_detail"
    schema = DocumentSchema(
        fields=(
            *ORDER_FIELDS,
            Field(name="shipping_address", type=T.JSON),
            Field(name="items", type=T.JSON),
            Field(name="cancelled_at", type=T.TIMESTAMP),
            Field(name="cancel_reason", type=T.TEXT),
        ),
    )


class OrderCache(OrderDetail):
    """The order detail document in the Redis cache (immediate)."""

    name = "order_cache"


class OrderSearch(OrderFold):
    """Full-text order and product search (Elasticsearch, near real time)."""

    name = "order_search"
    schema = DocumentSchema(
        fields=ORDER_FIELDS,
        children=(
            ChildTable(
                name="items", source="items", fields=LINE_FIELDS, key_fields=("product_id",)
            ),
        ),
    )


class OrderAnalytics(OrderFold):
    """Dashboards (DuckDB, batch): orders and their lines as fact rows."""

    name = "order_analytics"
    schema = DocumentSchema(
        fields=ORDER_FIELDS,
        children=(
            ChildTable(
                name="order_lines", source="items", fields=LINE_FIELDS, key_fields=("product_id",)
            ),
        ),
    )
