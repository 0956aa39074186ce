"""The strip of scene rows whose tiles are still being blended: weighted logit sums, weights and validity.

A scene is predicted one row of tiles at a time. A scene row is final once every tile row that covers it is done,
that is, once the next tile row starts below it; :meth:`Strip.take` then hands the finished rows over as blended
logits and drops them. The strip never holds more than one tile's height of rows, so its memory is
``(classes + 2) x tile x width`` numbers whatever the scene's height.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Rows:
    """Finished scene rows ``[top, top + n)``, every column.

    Args:
        top: the first scene row.
        logits: ``[classes, n, width]`` blended logits (weighted mean over the tiles that cover each pixel; 0 where
            no tile was run: a pixel only all-nodata tiles cover).
        valid: ``[n, width]``: the pixel holds data in every band the cell reads.
    """

    top: int
    logits: Array
    valid: npt.NDArray[np.bool_]

    @property
    def n(self) -> int:
        """Number of rows."""
        return int(self.valid.shape[0])


class Strip:
    """Weighted logit sums over scene rows ``[top, top + rows)`` (all columns), for tiles added in row order.

    Args:
        classes: number of logit channels.
        rows: rows the strip holds (the tile height).
        width: scene width.
    """

    def __init__(self, classes: int, rows: int, width: int) -> None:
        self.top = 0
        self.rows = rows
        self._logits = np.zeros((classes, rows, width), dtype=np.float32)
        self._weight = np.zeros((rows, width), dtype=np.float32)
        self._valid = np.zeros((rows, width), dtype=np.bool_)

    def _span(self, y: int, h: int) -> slice:
        if y < self.top or y + h > self.top + self.rows:
            raise ValueError(f"rows {y}..{y + h} lie outside the strip {self.top}..{self.top + self.rows}")
        return slice(y - self.top, y - self.top + h)

    def mark(self, y: int, x: int, valid: npt.NDArray[np.bool_]) -> None:
        """Record the validity of the ``[h, w]`` pixels at scene row ``y``, column ``x``."""
        h, w = valid.shape
        self._valid[self._span(y, h), x : x + w] = valid

    def add(self, y: int, x: int, logits: Array, weight: Array) -> None:
        """Add one tile's ``[classes, h, w]`` logits at scene row ``y``, column ``x``, weighted by ``[h, w]``."""
        h, w = weight.shape
        span = self._span(y, h)
        self._logits[:, span, x : x + w] += logits * weight
        self._weight[span, x : x + w] += weight

    def take(self, stop: int) -> Rows:
        """Hand over rows ``[top, stop)`` blended, and move the strip down to start at ``stop``."""
        n = stop - self.top
        if not 0 <= n <= self.rows:
            raise ValueError(f"cannot take rows {self.top}..{stop} of the strip {self.top}..{self.top + self.rows}")
        weight = self._weight[:n]
        covered = weight > 0
        logits = np.divide(self._logits[:, :n], weight, out=np.zeros_like(self._logits[:, :n]), where=covered)
        out = Rows(self.top, logits, self._valid[:n] & covered)
        for buffer in (self._logits[:], self._weight, self._valid):
            rest = buffer.shape[-2] - n
            buffer[..., :rest, :] = buffer[..., n:, :]
            buffer[..., rest:, :] = 0
        self.top = stop
        return out
