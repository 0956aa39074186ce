"""The table of registered backbones printed by ``geopeft models``.

Each backbone is built with its default bands on the ``meta`` device, so counting the parameters of even
the 600M model allocates no memory and draws no random numbers.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
from torch import nn

from geopeft.models.registry import backbone_names, get_backbone
from geopeft.text import aligned

__all__ = ["CATALOG_IMG_SIZE", "BackboneRow", "backbone_table", "format_backbone_table", "meta_backbone"]

#: Chip size the backbones are built for when counting (a multiple of every patch size: 8, 14, 16).
CATALOG_IMG_SIZE = 224


class BackboneRow(NamedTuple):
    """One registered backbone.

    Args:
        name: registry name.
        params: total parameter count with its default bands.
        embed_dim: block output width.
        depth: number of blocks.
        patch_size: token stride in pixels.
        bands: number of default (pre-training) bands.
    """

    name: str
    params: int
    embed_dim: int
    depth: int
    patch_size: int
    bands: int


@functools.cache
def meta_backbone(name: str) -> nn.Module:
    """The backbone ``name`` with its default bands on the ``meta`` device, built once per process.

    What a plan-time check inspects (module types and names) without memory or random numbers; never train it.
    """
    info = get_backbone(name)
    with torch.device("meta"):
        return info.builder(bands=info.default_bands, img_size=CATALOG_IMG_SIZE)


def backbone_table() -> list[BackboneRow]:
    """Every registered backbone, in registration order, with its parameter count (built on ``meta``)."""
    rows: list[BackboneRow] = []
    for name in backbone_names():
        info = get_backbone(name)
        with torch.device("meta"):
            model = info.builder(bands=info.default_bands, img_size=CATALOG_IMG_SIZE)
        params = sum(p.numel() for p in model.parameters())
        rows.append(BackboneRow(name, params, info.embed_dim, info.depth, info.patch_size, len(info.default_bands)))
    return rows


def format_backbone_table(rows: list[BackboneRow] | None = None) -> str:
    """The table as aligned text, one backbone a line, counts with thousands separators.

    Args:
        rows: the rows to print; :func:`backbone_table` when ``None``.
    """
    rows = backbone_table() if rows is None else rows
    header = ("backbone", "params", "width", "depth", "patch", "bands")
    cells = [header, *((r.name, f"{r.params:,}", *map(str, r[2:])) for r in rows)]
    return "\n".join(aligned(cells, right=range(1, len(header))))
