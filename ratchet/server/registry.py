"""The functions this node knows, kept in memory for trigger matching and reloaded after each sync."""

from __future__ import annotations

from ratchet.server.engine import triggers
from ratchet.server.store import base


class Registry:
    def __init__(self, store: base.Store) -> None:
        self._store = store
        self._functions: list[base.FunctionRecord] = []
        self._by_slug: dict[str, base.FunctionRecord] = {}

    async def reload(self) -> None:
        self._functions = await self._store.list_functions()
        self._by_slug = {fn.slug: fn for fn in self._functions}

    @property
    def functions(self) -> list[base.FunctionRecord]:
        return self._functions

    def get(self, slug: str) -> base.FunctionRecord | None:
        return self._by_slug.get(slug)

    def for_event(self, name: str) -> list[base.FunctionRecord]:
        return triggers.functions_for_event(name, self._functions)
