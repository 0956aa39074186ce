"""A small decorator registry shared by datasets, backbones, decoders and tuning methods.

Unlike timm's, registering a name twice raises, and looking up an unknown name raises a
:class:`~geopeft.errors.ConfigError` that lists the allowed names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from geopeft.errors import unknown_choice

T = TypeVar("T")


class Registry(Generic[T]):
    """Name → object mapping filled by the :meth:`register` decorator."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; a duplicate name raises ``ValueError``."""

        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        """Register ``obj`` under ``name`` without the decorator syntax."""
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = obj

    def get(self, name: str, where: str = "") -> T:
        """Return the entry for ``name`` or raise an error listing the known names."""
        try:
            return self._items[name]
        except KeyError:
            raise unknown_choice(self.kind, name, self._items, where) from None

    def names(self) -> list[str]:
        """Registered names in registration order."""
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)
