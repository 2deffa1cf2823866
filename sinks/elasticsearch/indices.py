"""Managed indices: one physical index per generation (``<projection>-g<generation>``) behind
the read alias ``<projection>`` that searchers use, with atomic alias swaps.

When the alias is set:

* an index created while no index holds the alias gets it in the same request that creates
  it (generation 1 at the first start, or the live generation reset in place: there is no
  other generation to keep serving, so searchers see it fill up from the first flush);
* any other generation is created without it, with refresh off and no replicas, and is
  given the alias only by :func:`promote`, after its lane has caught up: one ``_aliases``
  request removes the alias from the old generation and adds it to the new one, so a search
  sees one or the other, never both and never a half-built index.
"""

from __future__ import annotations

import re
from typing import Any

from core.errors import ConfigurationError, PermanentError
from sinks.elasticsearch.client import MISSING, Cluster
from sinks.elasticsearch.mapping import LIVE_FILTER, IndexLayout

__all__ = (
    "BULK_LOAD_SETTINGS",
    "alias_indices",
    "ensure_checkpoint_index",
    "ensure_index",
    "promote",
    "set_settings",
)

BULK_LOAD_SETTINGS: dict[str, Any] = {"refresh_interval": "-1", "number_of_replicas": 0}
"""Index settings while a rebuild fills a generation nobody searches yet."""

CHECKPOINT_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "lane": {"type": "keyword"},
        "projection": {"type": "keyword"},
        "generation": {"type": "integer"},
        "position": {"type": "keyword"},
        "transaction_id": {"type": "long"},
        "global_position": {"type": "long"},
        "updated_at": {"type": "date"},
    },
}


def _already_exists(exc: PermanentError) -> bool:
    return "resource_already_exists_exception" in str(exc)


async def alias_indices(cluster: Cluster, alias: str) -> list[str]:
    """The indices the alias points at (none: ``[]``)."""
    found = await cluster.body(
        f"reading alias {alias}",
        lambda c: c.indices.get_alias(name=alias),
        missing_ok=True,
    )
    if found is MISSING:
        return []
    return sorted(found)


async def ensure_checkpoint_index(cluster: Cluster, index: str) -> None:
    exists = await cluster.call(
        f"checking checkpoint index {index}", lambda c: c.indices.exists(index=index)
    )
    if exists:
        return
    try:
        await cluster.call(
            f"creating checkpoint index {index}",
            lambda c: c.indices.create(
                index=index,
                settings={"number_of_shards": 1, "auto_expand_replicas": "0-1"},
                mappings=CHECKPOINT_MAPPING,
            ),
        )
    except PermanentError as exc:
        if not _already_exists(exc):
            raise


async def ensure_index(
    cluster: Cluster, index: str, alias: str, generation: int, layout: IndexLayout
) -> None:
    """Create the generation's index if missing, else apply the mapping: added fields are
    accepted, changed ones refused.

    An index created while no index holds the alias gets it at once, with its serving
    settings: generation 1 at the first start, or a live generation ``N`` reset (deleted and
    refilled in place), which would otherwise stay unserved and unrefreshed for good. Any other
    index is created without it, in bulk-load mode (refresh off, no replicas) since nobody
    searches it until :func:`promote`, which the sink precedes with restoring the settings."""
    holders = await alias_indices(cluster, alias)
    if not holders:
        concrete = await cluster.call(f"checking {alias}", lambda c: c.indices.exists(index=alias))
        if concrete:
            raise ConfigurationError(
                "index", alias, "a concrete index has the read alias's name: delete or rename it"
            )
    exists = await cluster.call(f"checking index {index}", lambda c: c.indices.exists(index=index))
    if not exists:
        serve = not holders
        aliases = {alias: {"filter": LIVE_FILTER}} if serve else None
        settings = layout.settings() if serve else {**layout.settings(), **BULK_LOAD_SETTINGS}
        try:
            await cluster.call(
                f"creating index {index}",
                lambda c: c.indices.create(
                    index=index,
                    settings=settings,
                    mappings=layout.mapping(),
                    aliases=aliases,
                ),
            )
            return
        except PermanentError as exc:
            if not _already_exists(exc):
                raise ConfigurationError("index", index, f"{exc}; fix the options") from None
    try:
        await cluster.call(
            f"updating the mapping of {index}",
            lambda c: c.indices.put_mapping(index=index, **layout.mapping()),
        )
    except PermanentError as exc:
        raise ConfigurationError(
            "schema",
            index,
            f"{exc}; a changed field needs a new generation: rebuild into generation "
            f"{generation + 1} and promote it",
        ) from None


async def set_settings(cluster: Cluster, index: str, settings: dict[str, Any]) -> None:
    await cluster.call(
        f"changing the settings of {index}",
        lambda c: c.indices.put_settings(index=index, settings=settings),
    )


async def promote(cluster: Cluster, index: str, alias: str) -> list[str]:
    """Point ``alias`` at ``index`` alone in one atomic ``_aliases`` request; returns the
    indices it pointed at before."""
    before = await alias_indices(cluster, alias)
    actions: list[dict[str, Any]] = [
        {"remove": {"index": old, "alias": alias}} for old in before if old != index
    ]
    actions.append({"add": {"index": index, "alias": alias, "filter": LIVE_FILTER}})
    await cluster.call(
        f"pointing {alias} at {index}", lambda c: c.indices.update_aliases(actions=actions)
    )
    return before


def generation_of(index: str, alias: str) -> int | None:
    """``7`` for ``<alias>-g7``; ``None`` for another name."""
    found = re.fullmatch(re.escape(alias) + r"-g(\d+)", index)
    return int(found.group(1)) if found else None
