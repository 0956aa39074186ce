"""A GeoTIFF scene to predict: which of its bands a cell reads, and windowed reads of them with their validity.

**What a scene must carry.** Its bands are found by name, in this order of precedence:

1. ``--bands`` (``bands=`` here): the scene's band names in file order, one per band;
2. the band descriptions of the GeoTIFF (``gdalinfo`` shows them as ``Description = RED``; rasterio writes them
   with ``dst.set_band_description(i, "RED")``), when every band has one;
3. else, when the scene has exactly as many bands as the cell's dataset files, the dataset's file order (a scene in
   the dataset's native layout, e.g. a 13-band Sentinel-2 L1C stack for Sen1Floods11, which carries no names).

Names are the dataset registry's (TerraTorch's ``HLSBands``: ``BLUE``, ``NIR_NARROW``, ``SWIR_1``, ...; ``geopeft
datasets`` lists them), compared without regard to case. The scene's values must be in the units of the dataset's
files (the cell applies the dataset's constant scale, e.g. 1e-4 for Sentinel-2 DN, then its normalisation).

**Nodata.** A pixel is nodata when any band the cell reads is masked there (the band's nodata value, an internal or
alpha mask: GDAL's band mask) or is NaN. Nodata pixels are fed to the model as 0, as the training data's NaN were,
and come out as nodata.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio.transform
import rasterio.warp
from rasterio.windows import Window

from geopeft.data.geotiff import open_geotiff
from geopeft.errors import DataError


@dataclass(frozen=True)
class SceneBands:
    """The scene's band names and the 1-based band indexes of the bands a cell reads.

    Args:
        names: the name of every band of the scene, in file order.
        source: where the names come from (``--bands``, the band descriptions, or a dataset's file order).
        indexes: rasterio band index of each band the cell reads, in the cell's channel order.
    """

    names: tuple[str, ...]
    source: str
    indexes: tuple[int, ...]


def scene_band_names(
    path: Path, descriptions: Sequence[str | None], given: Sequence[str], dataset: str, native: Sequence[str]
) -> tuple[tuple[str, ...], str]:
    """The name of every band of the scene at ``path``, and where the names come from (see the module docstring).

    Args:
        path: the scene, named in errors.
        descriptions: the GeoTIFF's band descriptions (``None`` or ``""`` where a band has none).
        given: the names the user gave (``--bands``), or empty.
        dataset: the cell's dataset, whose file order is the fallback.
        native: that dataset's band names in file order.

    Raises:
        DataError: the names cannot be told (no descriptions, a band count other than the dataset's, no
            ``--bands``), ``--bands`` names another number of bands than the file has, or a name repeats.
    """
    count = len(descriptions)
    if given:
        names, source = tuple(given), "--bands"
        if len(names) != count:
            raise DataError(
                f"{path}: --bands names {len(names)} band(s) but the file has {count}; name every band in file order"
            )
    elif all(descriptions):
        names, source = tuple(str(d) for d in descriptions), "its band descriptions"
    elif count == len(native):
        names, source = tuple(native), f"the {dataset} file order (the file has no band descriptions)"
    else:
        raise DataError(
            f"{path}: its {count} band(s) carry no descriptions and {dataset} files have {len(native)}, so the "
            f"bands cannot be told apart; pass --bands NAME,... in file order (names as in `geopeft datasets`, e.g. "
            f"{','.join(native[:3])},...) or write band descriptions into the file"
        )
    upper = [n.upper() for n in names]
    repeated = sorted({n for n in upper if upper.count(n) > 1})
    if repeated:
        raise DataError(f"{path}: band name(s) {', '.join(repeated)} given to more than one band ({source})")
    return names, source


def select_bands(path: Path, names: Sequence[str], source: str, wanted: Sequence[str], cell: str) -> SceneBands:
    """The scene's bands that cell ``cell`` reads, by name.

    Raises:
        DataError: a band the cell reads is not in the scene; the message names the file, the missing band(s), the
            scene's bands and the fix.
    """
    position = {name.upper(): i + 1 for i, name in enumerate(names)}
    missing = [b for b in wanted if b.upper() not in position]
    if missing:
        raise DataError(
            f"{path}: band(s) {', '.join(missing)} missing; cell {cell} reads {', '.join(wanted)} and the scene has "
            f"{', '.join(names)} (named by {source}); use a scene with these bands, or name its bands with --bands"
        )
    return SceneBands(tuple(names), source, tuple(position[b.upper()] for b in wanted))


class Scene:
    """An open scene: its grid, georeference, and windowed reads of a cell's bands (use as a context manager).

    Args:
        path: the GeoTIFF.
        wanted: the bands the cell reads, in channel order.
        given: the scene's band names in file order (``--bands``), or empty.
        dataset: the cell's dataset (its file order is the fallback for unnamed bands).
        native: that dataset's band names in file order.
        cell: the cell, named in errors.

    Raises:
        DataError: the file is missing or not a GeoTIFF, or a band is missing (see :func:`select_bands`).
    """

    FIX = "pass a readable GeoTIFF with --in"

    def __init__(
        self,
        path: Path,
        wanted: Sequence[str],
        *,
        given: Sequence[str],
        dataset: str,
        native: Sequence[str],
        cell: str,
    ) -> None:
        self.path = path
        self._stack = contextlib.ExitStack()
        self.src: Any = self._stack.enter_context(open_geotiff(path, self.FIX))
        try:
            names, source = scene_band_names(path, self.src.descriptions, given, dataset, native)
            self.bands = select_bands(path, names, source, wanted, cell)
        except BaseException:
            self._stack.close()
            raise

    def __enter__(self) -> Scene:
        return self

    def __exit__(self, *exc: Any) -> bool | None:
        # the exception of a failed read passes through open_geotiff, which names the file (a DataError)
        return self._stack.__exit__(*exc)

    @property
    def height(self) -> int:
        """Rows."""
        return int(self.src.height)

    @property
    def width(self) -> int:
        """Columns."""
        return int(self.src.width)

    @property
    def profile(self) -> dict[str, Any]:
        """The georeference outputs copy: CRS and transform."""
        return {"crs": self.src.crs, "transform": self.src.transform}

    def read(self, y: int, x: int, h: int, w: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        """The cell's bands in rows ``[y, y + h)``, columns ``[x, x + w)``, and where they hold data.

        Returns:
            ``[C, h, w]`` float32 values (the stored integers are exact in float32; nodata and NaN are 0) and the
            ``[h, w]`` validity (every band unmasked and not NaN).
        """
        window = Window(x, y, w, h)
        indexes = list(self.bands.indexes)
        values = self.src.read(indexes, window=window, out_dtype=np.float32)
        valid = np.all(self.src.read_masks(indexes, window=window) > 0, axis=0)
        nan = np.isnan(values)
        if nan.any():
            valid &= ~nan.any(axis=0)
        values[:, ~valid] = 0
        return values, valid

    def lat_lon(self, rows: Sequence[float], cols: Sequence[float]) -> tuple[list[float], list[float]]:
        """Latitude and longitude (EPSG:4326) of the pixel centres at ``rows``, ``cols``.

        Raises:
            DataError: the scene has no CRS.
        """
        if self.src.crs is None:
            raise DataError(
                f"{self.path}: no CRS, but the cell reads the chips' location; write the scene with its CRS"
            )
        xs, ys = rasterio.transform.xy(self.src.transform, list(rows), list(cols), offset="center")
        if self.src.crs.is_geographic:
            return [float(v) for v in ys], [float(v) for v in xs]
        lons, lats = rasterio.warp.transform(self.src.crs, "EPSG:4326", list(xs), list(ys))
        return [float(v) for v in lats], [float(v) for v in lons]
