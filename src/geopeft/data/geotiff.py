"""GeoTIFF helpers shared by the native readers: opening with one clear error, and the centre position."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import rasterio
import rasterio.warp
from rasterio.errors import RasterioError

from geopeft.errors import DataError


@contextlib.contextmanager
def open_geotiff(path: Path, fix: str) -> Iterator[Any]:
    """Open a raster for a ``with`` block and close it on the way out.

    A missing file, one that does not open, and one that fails while it is read inside the block (a truncated
    download opens but fails at its first missing strip) are each a :class:`DataError` naming the file and ending
    with ``fix``.
    """
    if not path.is_file():
        raise DataError(f"{path}: file not found; {fix}")
    try:
        src = rasterio.open(path)
    except RasterioError as exc:
        raise DataError(f"{path}: cannot be read as a GeoTIFF ({exc}); {fix}") from None
    try:
        with src:
            yield src
    except RasterioError as exc:
        cause = f"{exc}: {exc.__cause__}" if exc.__cause__ else str(exc)
        raise DataError(f"{path}: reading failed, the file is truncated or corrupt ({cause}); {fix}") from None


def centre_lat_lon(src: Any) -> tuple[float | None, float | None]:
    """Latitude and longitude (EPSG:4326) of the centre of the centre pixel of an open raster.

    The pixel ``(height // 2, width // 2)``, as the study's loaders compute it; ``(None, None)`` without a CRS.
    """
    if src.crs is None:
        return None, None
    x, y = src.xy(src.height // 2, src.width // 2)
    if src.crs.is_geographic:
        return float(y), float(x)
    xs, ys = rasterio.warp.transform(src.crs, "EPSG:4326", [x], [y])
    return float(ys[0]), float(xs[0])
