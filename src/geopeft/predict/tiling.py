"""The tile grid over a scene and the weights that blend the logits of overlapping tiles.

Tiles are squares of the cell's training size. Along each axis they start every ``tile - overlap`` pixels and the last
one lies flush with the scene's edge, so every tile is whole (a scene smaller than a tile has one, padded by the
caller). Where tiles overlap, their logits are averaged with per-pixel weights that fall from 1 in a tile's interior
to near 0 at its border over ``overlap`` pixels (cosine or linear ramps), so no tile's border, where a model sees
the least context, decides a pixel that another tile sees from its interior. Every weight is positive, so a pixel that
only one tile covers (the scene's own border) takes exactly that tile's logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from geopeft.errors import ConfigError, unknown_choice

#: ``--blend``: the shape of the weight ramp at a tile's border.
BLENDS = ("cosine", "linear")


def starts(length: int, tile: int, overlap: int) -> tuple[int, ...]:
    """Offsets of the tiles along an axis of ``length`` pixels; ``(0,)`` when one tile covers it.

    Tiles start every ``tile - overlap`` pixels; the last one ends at ``length`` (it overlaps its neighbour by at
    least ``overlap`` pixels).
    """
    if length <= tile:
        return (0,)
    stride = tile - overlap
    return (*range(0, length - tile, stride), length - tile)


@dataclass(frozen=True)
class TileGrid:
    """The tiles covering a ``height`` x ``width`` scene, in rows of tiles (top to bottom, left to right).

    Args:
        height: scene height in pixels.
        width: scene width in pixels.
        tile: tile side in pixels (the cell's training size).
        overlap: pixels shared by neighbouring tiles, in ``[0, tile)``.
    """

    height: int
    width: int
    tile: int
    overlap: int
    rows: tuple[int, ...] = field(init=False)
    cols: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        for name in ("height", "width", "tile"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"tile grid: {name} must be a positive integer, got {value!r}")
        if not 0 <= self.overlap < self.tile:
            raise ConfigError(
                f"--overlap must lie in [0, {self.tile}) pixels for {self.tile}-pixel tiles, got {self.overlap}"
            )
        object.__setattr__(self, "rows", starts(self.height, self.tile, self.overlap))
        object.__setattr__(self, "cols", starts(self.width, self.tile, self.overlap))

    @property
    def n_tiles(self) -> int:
        """Number of tiles."""
        return len(self.rows) * len(self.cols)

    @property
    def tile_height(self) -> int:
        """Rows of the scene inside one tile (less than :attr:`tile` only in a scene lower than a tile)."""
        return min(self.tile, self.height)

    @property
    def tile_width(self) -> int:
        """Columns of the scene inside one tile."""
        return min(self.tile, self.width)

    def finished_below(self, row: int) -> int:
        """The first scene row still open after the tiles of tile row ``row`` (all rows above it are final)."""
        return self.rows[row + 1] if row + 1 < len(self.rows) else self.height


def ramp(tile: int, overlap: int, kind: str) -> npt.NDArray[np.float32]:
    """One axis of the blending weights: 1 inside, falling over ``overlap`` pixels to a small positive value.

    The weight of pixel ``i`` at distance ``d = min(i, tile - 1 - i)`` from the nearer border is ``f((d + 0.5) /
    overlap)`` for ``d < overlap`` and 1 beyond, with ``f(t) = (1 - cos(pi t)) / 2`` (cosine) or ``f(t) = t`` (linear).

    Raises:
        ConfigError: ``kind`` is not one of :data:`BLENDS`.
    """
    if kind not in BLENDS:
        raise unknown_choice("--blend", kind, BLENDS)
    i = np.arange(tile, dtype=np.float64)
    d = np.minimum(i, tile - 1 - i)
    if overlap == 0:
        return np.ones(tile, dtype=np.float32)
    t = np.minimum((d + 0.5) / overlap, 1.0)
    f = (1.0 - np.cos(math.pi * t)) / 2.0 if kind == "cosine" else t
    return f.astype(np.float32)


def weights(tile: int, overlap: int, kind: str) -> npt.NDArray[np.float32]:
    """The ``[tile, tile]`` blending weights: the outer product of :func:`ramp` with itself (all positive)."""
    r = ramp(tile, overlap, kind)
    return np.outer(r, r).astype(np.float32)
