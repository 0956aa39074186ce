"""The GeoTIFFs ``geopeft predict`` writes, row strip by row strip, each under a temporary name renamed at the end.

* classes: one uint8 band, the class index of the highest blended logit; nodata 255 where the scene has no data;
* probabilities (optional): one band per class, the softmax of the blended logits, stored as 16-bit floats (TIFF
  ``SampleFormat`` IEEE float with 16 bits per sample; GDAL >= 3.11 reads them as Float16, older GDAL as Float32);
  nodata NaN.

Both copy the scene's CRS and transform, are tiled (256 x 256) and deflate-compressed, name their bands after the
classes, and record the cell in their tags (``geopeft_cell``, ``geopeft_slug``, ``geopeft_classes``).
"""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from rasterio.windows import Window

from geopeft.errors import DataError
from geopeft.io import temporary_save_path
from geopeft.predict.blend import Rows

#: The class value of nodata pixels in the classes GeoTIFF (so at most 255 classes).
NODATA_CLASS = 255
BLOCK = 256


@dataclass(frozen=True)
class OutputSpec:
    """What the outputs describe.

    Args:
        height: scene rows.
        width: scene columns.
        georef: ``crs`` and ``transform`` of the scene.
        classes: class names, in class order.
        cell: the cell id.
        slug: the cell's readable name.
    """

    height: int
    width: int
    georef: dict[str, Any]
    classes: tuple[str, ...]
    cell: str
    slug: str

    def profile(self, count: int, dtype: str) -> dict[str, Any]:
        """The rasterio creation profile of a ``count``-band output."""
        tiled = self.height >= BLOCK and self.width >= BLOCK
        blocks = {"tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK} if tiled else {}
        return {
            "driver": "GTiff",
            "height": self.height,
            "width": self.width,
            "count": count,
            "dtype": dtype,
            "compress": "deflate",
            "BIGTIFF": "IF_SAFER",
            **blocks,
            **self.georef,
        }

    @property
    def tags(self) -> dict[str, str]:
        """Tags naming the cell and the classes."""
        return {"geopeft_cell": self.cell, "geopeft_slug": self.slug, "geopeft_classes": json.dumps(self.classes)}


class Outputs:
    """The open output files (use as a context manager); :meth:`write` adds finished rows to each.

    On a clean exit each file is renamed from its temporary name to its final one; on an error the temporary files
    are deleted and no final file is touched.

    Args:
        spec: what the outputs describe.
        classes_path: the class GeoTIFF.
        probabilities_path: the probabilities GeoTIFF, or ``None``.

    Raises:
        DataError: more than 255 classes, or an output cannot be created (the message names it).
    """

    def __init__(self, spec: OutputSpec, classes_path: Path, probabilities_path: Path | None) -> None:
        if len(spec.classes) > NODATA_CLASS:
            raise DataError(f"{classes_path}: {len(spec.classes)} classes do not fit uint8 beside nodata 255")
        self.spec = spec
        self._stack = contextlib.ExitStack()
        try:
            self._classes = self._open(classes_path, spec.profile(1, "uint8") | {"nodata": NODATA_CLASS})
            self._classes.set_band_description(1, "class")
            self._probabilities = None
            if probabilities_path is not None:
                profile = spec.profile(len(spec.classes), "float32") | {"nodata": float("nan"), "nbits": 16}
                self._probabilities = self._open(probabilities_path, profile)
                for i, name in enumerate(spec.classes, start=1):
                    self._probabilities.set_band_description(i, name)
        except BaseException:
            self._stack.__exit__(*sys.exc_info())
            raise

    def _open(self, path: Path, profile: dict[str, Any]) -> Any:
        tmp = self._stack.enter_context(temporary_save_path(path))
        try:
            dst = self._stack.enter_context(rasterio.open(tmp, "w", **profile))
        except RasterioError as exc:
            raise DataError(f"{path}: cannot be written ({exc}); choose a writable path ending in .tif") from None
        dst.update_tags(**self.spec.tags)
        return dst

    def __enter__(self) -> Outputs:
        return self

    def __exit__(self, *exc: Any) -> bool | None:
        return self._stack.__exit__(*exc)

    def write(self, rows: Rows) -> None:
        """Write finished rows: classes (255 where invalid) and, when asked, float16 probabilities (NaN there)."""
        window = Window(0, rows.top, self.spec.width, rows.n)
        classes = np.argmax(rows.logits, axis=0).astype(np.uint8)
        classes[~rows.valid] = NODATA_CLASS
        self._classes.write(classes, 1, window=window)
        if self._probabilities is not None:
            self._probabilities.write(probabilities(rows.logits, rows.valid), window=window)


def probabilities(logits: np.ndarray[Any, Any], valid: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The softmax over the class axis of ``[classes, h, w]`` logits, rounded to float16, NaN where not ``valid``.

    The values stay float32 arrays holding float16 numbers exactly, which GDAL writes to 16-bit floats unchanged
    (it truncates other float32 values instead of rounding them).
    """
    shifted = logits - logits.max(axis=0, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=0, keepdims=True)
    out: np.ndarray[Any, Any] = shifted.astype(np.float16).astype(np.float32)
    out[:, ~valid] = np.nan
    return out
