"""Synthetic HLS Burn Scars in the native layout, for ``make demo`` and the tests.

:func:`write_burn_scars` writes real GeoTIFFs into one flat folder: 6-band float32 reflectance chips in the UTM CRS
of their MGRS tile at 30 m, placed inside the tile's 100 km square, and 1-band masks (0 / 1, -1 for no data), plus
trimmed split files. The ids are the first ones of the official splits, so tiles and dates are real. The task is
learnable: a burn scar (a blob near the centre, as in the real chips, which were centred on a scar) has a charred
spectrum (dark NIR, bright SWIR), the rest a mix of vegetation and dry grass, plus noise. As in the real data,
every chip has a few NaN pixels (their mask keeps the class; the reader ignores them) and some chips have a strip of
-9999 fill at a scene edge (mask -1 there; these masks are int16, the others uint8). The same seed gives the same
files.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
import rasterio
import rasterio.warp
from affine import Affine

from geopeft.data import burn_scars as bs
from geopeft.data.synthetic.fields import first_ids, sample_rng, smooth_field, write_split_files
from geopeft.data.synthetic.mgrs import SQUARE, mgrs_square
from geopeft.data.synthetic.registry import register_synthetic
from geopeft.errors import ConfigError

DEFAULT_COUNTS: Mapping[str, int] = {"train": 16, "val": 6, "test": 6}

# Surface reflectance per HLS band (BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2); rough library spectra.
VEGETATION = (0.03, 0.06, 0.04, 0.33, 0.19, 0.09)
DRY_GRASS = (0.07, 0.10, 0.13, 0.24, 0.32, 0.24)
BURN_SCAR = (0.04, 0.05, 0.06, 0.08, 0.19, 0.21)
FILL = -9999.0
MAX_VALUE = 0.6


def _chip(rng: np.random.Generator, size: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int16]]:
    """One image (``[6, size, size]`` reflectance, fill and NaN included) and its mask (-1 under the fill)."""
    coords = (np.arange(size) - size / 2) / (size / 6)
    centre_bump = np.exp(-0.5 * (coords[:, None] ** 2 + coords[None, :] ** 2))
    burn_field = smooth_field(rng, size, 6) + rng.uniform(0.5, 1.5) * centre_bump
    burned = burn_field > np.quantile(burn_field, 1.0 - rng.uniform(0.08, 0.35))
    vegetation = (1.0 / (1.0 + np.exp(-4.0 * smooth_field(rng, size, 6)))).astype(np.float32)
    veg, dry, scar = (np.asarray(s, dtype=np.float32)[:, None, None] for s in (VEGETATION, DRY_GRASS, BURN_SCAR))
    land = veg * vegetation + dry * (1.0 - vegetation)
    severity = np.float32(rng.uniform(0.75, 1.0))
    reflectance = np.where(burned, scar * severity + land * (1.0 - severity), land) * np.float32(rng.uniform(0.9, 1.1))
    reflectance += rng.normal(0.0, 0.008, reflectance.shape).astype(np.float32)
    image = np.clip(reflectance, 0.0, MAX_VALUE).astype(np.float32)
    mask = burned.astype(np.int16)
    if rng.random() < 0.5:  # a scene edge: fill in every band, no data in the mask
        width = int(rng.integers(1, size // 8 + 1))
        rows, cols, near, far = slice(None), slice(None), slice(0, width), slice(size - width, None)
        edge = ((near, cols), (far, cols), (rows, near), (rows, far))[int(rng.integers(4))]
        image[(slice(None), *edge)] = FILL
        mask[edge] = -1
    for _ in range(int(rng.integers(1, 5))):  # a few NaN values, in one band each
        band, y, x = (int(v) for v in rng.integers(0, (6, size, size)))
        image[band, y, x] = np.nan
    return image, mask


def _write_sample(raw: Path, sample_id: str, size: int, seed: int) -> None:
    found = bs.NAME_PATTERN.search(sample_id)
    if found is None:
        raise ConfigError(f"burn_scars synthetic: split id {sample_id!r} is not T<tile>.<YYYYDDD>.v1")
    rng = sample_rng(seed, sample_id)
    crs, easting, northing = mgrs_square(found.group("tile"))
    gsd = bs.INFO.gsd
    free = int((SQUARE - size * gsd) // gsd)
    west, top = (
        easting + gsd * int(rng.integers(0, free + 1)),
        northing + SQUARE - gsd * int(rng.integers(0, free + 1)),
    )
    image, mask = _chip(rng, size)
    common = {
        "driver": "GTiff",
        "height": size,
        "width": size,
        "crs": crs,
        "transform": Affine(gsd, 0, west, 0, -gsd, top),
    }
    with rasterio.open(bs.image_path(raw, sample_id), "w", count=6, dtype="float32", **common) as dst:
        dst.write(image)
    dtype = "int16" if (mask < 0).any() else "uint8"
    with rasterio.open(bs.mask_path(raw, sample_id), "w", count=1, dtype=dtype, **common) as dst:
        dst.write(mask[None].astype(dtype))


@register_synthetic("burn_scars")
def write_burn_scars(
    root: str | Path, *, counts: Mapping[str, int] | None = None, size: int = 128, seed: int = 0
) -> Path:
    """Write a small synthetic HLS Burn Scars in the native flat layout under ``root``.

    Args:
        root: the flat raw folder to write the GeoTIFFs into, and the parent of the trimmed split files.
        counts: samples per split (``train``, ``val``, ``test``); splits left out take the default.
        size: chip height and width in pixels (the real chips are 512).
        seed: random seed; the same seed writes the same pixels.

    Returns:
        The folder of the trimmed split files (``root/splits``), to pass to ``prepare`` as ``splits_dir``.

    Raises:
        ConfigError: an unknown split, a count below 1 or above the official split's size, or ``size`` outside
            16..2048.
    """
    root = Path(root)
    merged = {**DEFAULT_COUNTS, **(counts or {})}
    if not 16 <= size <= 2048:
        raise ConfigError(f"write_burn_scars: size must lie in 16..2048 pixels, got {size}")
    chosen = first_ids("write_burn_scars", bs.SPLIT_FILES, bs.BurnScarsSource.default_splits_dir, merged)
    root.mkdir(parents=True, exist_ok=True)
    for sample_id in dict.fromkeys(i for ids in chosen.values() for i in ids):
        _write_sample(root, sample_id, size, seed)
    return write_split_files(root / "splits", chosen)
