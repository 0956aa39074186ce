"""MGRS tiles to UTM: where a synthetic chip of a given tile (HLS, Sentinel-2 ids carry one) is placed."""

from __future__ import annotations

import math
import re

import rasterio.warp
from rasterio.crs import CRS

from geopeft.errors import ConfigError

# MGRS letters: latitude bands of 8° from 80°S (X spans 12°), 100 km column letters by UTM zone modulo 3, and the
# 20 row letters (cycled every 2000 km; even zones start 5 letters later).
LAT_BANDS = "CDEFGHJKLMNPQRSTUVWX"
COLUMN_SETS = ("STUVWXYZ", "ABCDEFGH", "JKLMNPQR")
ROW_LETTERS = "ABCDEFGHJKLMNPQRSTUV"
SQUARE = 100_000.0
ROW_CYCLE = 2_000_000.0
TILE_PATTERN = re.compile(r"^(?P<zone>\d{2})(?P<band>[A-Z])(?P<column>[A-Z])(?P<row>[A-Z])$")


def mgrs_square(tile: str) -> tuple[CRS, float, float]:
    """The UTM CRS and the lower-left corner (easting, northing) of the 100 km square of an MGRS tile.

    Args:
        tile: an MGRS tile such as ``10SDH`` (zone, latitude band, column and row letters).

    Raises:
        ConfigError: the text is not a valid MGRS tile.
    """
    found = TILE_PATTERN.match(tile)
    zone = int(found.group("zone")) if found else 0
    if found is None or not 1 <= zone <= 60 or found.group("band") not in LAT_BANDS:
        raise ConfigError(f"synthetic data: {tile!r} is not an MGRS tile (e.g. 10SDH)")
    columns, band = COLUMN_SETS[zone % 3], LAT_BANDS.index(found.group("band"))
    if found.group("column") not in columns or found.group("row") not in ROW_LETTERS:
        raise ConfigError(f"synthetic data: {tile!r} has no 100 km square {found.group(3, 4)} in zone {zone}")
    easting = (columns.index(found.group("column")) + 1) * SQUARE
    row_northing = ((ROW_LETTERS.index(found.group("row")) - (5 if zone % 2 == 0 else 0)) % 20) * SQUARE
    lat0 = -80.0 + 8.0 * band
    lat1 = 84.0 if found.group("band") == "X" else lat0 + 8.0
    crs = CRS.from_epsg((32600 if lat0 >= 0 else 32700) + zone)
    centre_lon = -183.0 + 6.0 * zone
    _, (north0, north1) = rasterio.warp.transform("EPSG:4326", crs, [centre_lon, centre_lon], [lat0, lat1])
    # The one square of this row letter that overlaps the band (a band spans < 2000 km).
    northing = row_northing + ROW_CYCLE * math.ceil((north0 - SQUARE - row_northing) / ROW_CYCLE)
    if northing >= north1:
        raise ConfigError(f"synthetic data: {tile!r}: row {found.group('row')} lies outside band {lat0:g}°")
    return crs, easting, northing
