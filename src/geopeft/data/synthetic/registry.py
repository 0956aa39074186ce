"""Registry of synthetic-data writers: one per dataset, each writing the dataset's native layout.

A writer is called as ``writer(root, *, counts=None, size=..., seed=0)`` and returns the folder of the
trimmed split files it wrote (to pass to ``geopeft prepare --splits``). ``counts`` maps split -> samples.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol, TypeVar

from geopeft.registry import Registry

#: Modules that register the built-in writers; imported on first lookup.
BUILTIN_MODULES = (
    "geopeft.data.synthetic.sen1floods11",
    "geopeft.data.synthetic.burn_scars",
    "geopeft.data.synthetic.reben",
    "geopeft.data.synthetic.geobench",
)


class SyntheticWriter(Protocol):
    """Writes a small synthetic dataset in the native layout; returns the split-file folder."""

    def __call__(
        self, root: str | Path, *, counts: Mapping[str, int] | None = None, size: int = ..., seed: int = 0
    ) -> Path:
        """Write under ``root``; return the folder of the trimmed split files."""
        ...


_WRITERS: Registry[SyntheticWriter] = Registry("synthetic dataset")
W = TypeVar("W", bound=SyntheticWriter)


def register_synthetic(name: str) -> Callable[[W], W]:
    """Decorator registering a writer under the dataset's registry name."""

    def deco(writer: W) -> W:
        _WRITERS.add(name, writer)
        return writer

    return deco


def get_writer(name: str, where: str = "") -> SyntheticWriter:
    """The writer of dataset ``name`` (an unknown name lists the available ones)."""
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    return _WRITERS.get(name, where)


def synthetic_names() -> list[str]:
    """Datasets with a synthetic writer."""
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    return _WRITERS.names()
