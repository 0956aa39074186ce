"""Synthetic reBEN 7k in the BigEarthNet v2.0 layout, for ``make demo`` and the tests.

:func:`write_reben_7k` writes, for the first ids of each official split file, the 12 single-band uint16 L2A GeoTIFFs
of a patch at their native resolution (10 m: 120x120, 20 m: 60x60, 60 m: 20x20 pixels, sharing their upper-left
corner) and a uint16 reference map of CORINE Land Cover codes at 10 m, in the UTM zone of the patch's tile, plus
trimmed split files. Patches lie in their tile's 1.2 km grid (``_<h>_<v>`` read as column and row of the 109.8 km
Sentinel-2 tile, an assumption that only moves a patch within its tile). The ids are real, so dates, tiles and the
Austria / Ireland regions are too; the first ids of ``ood.txt`` are Austrian, as in the official files.

The task is learnable: every BEN-19 class has its own spectrum (a fixed mix of vegetation, conifer, grass, soil,
dry vegetation, built-up, water and sand spectra), every CLC code the spectrum of its class, and codes without a
class (roads, bare rock, 999 ...) spectra of their own. A patch holds three to six smooth land-cover regions, and
about half of the patches also a smaller region whose code maps to -1. The 20 m and 60 m bands are block means of
the 10 m field, as a coarser sensor would see it. The same seed gives the same files.

Two options write the variants of the layout that circulate, with the same digital numbers: ``band_dtype="int16"``
(signed band files, as torchgeo's BigEarthNet v2 fixtures) and ``bands_at_10m=True`` (every band already on the 10 m
grid, 120x120 pixels, each coarse pixel repeated over the 10 m pixels it covers). The reader turns either into the
samples of the standard layout.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
import rasterio
from affine import Affine
from rasterio.crs import CRS

from geopeft.data import reben as rb
from geopeft.data.clc import CLC_TO_BEN19, UNLABELLED_CODES
from geopeft.data.synthetic.fields import first_ids, sample_rng, smooth_field, write_split_files
from geopeft.data.synthetic.mgrs import SQUARE, mgrs_square
from geopeft.data.synthetic.registry import register_synthetic
from geopeft.errors import ConfigError, unknown_choice

DEFAULT_COUNTS: Mapping[str, int] = {"train": 16, "val": 6, "test": 6, "ood": 4, "austria": 4, "ireland": 4}
PATCH_METRES = rb.PATCH_SIZE * 10.0
TILE_PATTERN = re.compile(r"_T(?P<tile>\d{2}[A-Z]{3})_(?P<h>\d{2})_(?P<v>\d{2})$")

# Surface reflectance of the 12 L2A bands (B01 ... B08, B8A, B09, B11, B12); rough library spectra ("endmembers").
ENDMEMBERS: dict[str, tuple[float, ...]] = {
    "vegetation": (0.020, 0.030, 0.060, 0.030, 0.090, 0.270, 0.340, 0.370, 0.390, 0.390, 0.190, 0.090),
    "conifer": (0.015, 0.020, 0.040, 0.020, 0.060, 0.160, 0.200, 0.220, 0.230, 0.230, 0.110, 0.050),
    "grass": (0.030, 0.040, 0.080, 0.050, 0.120, 0.290, 0.350, 0.380, 0.400, 0.400, 0.250, 0.130),
    "soil": (0.070, 0.090, 0.130, 0.170, 0.200, 0.230, 0.250, 0.270, 0.280, 0.280, 0.340, 0.270),
    "dry": (0.050, 0.060, 0.090, 0.110, 0.150, 0.210, 0.240, 0.260, 0.270, 0.270, 0.310, 0.210),
    "built": (0.110, 0.120, 0.130, 0.140, 0.150, 0.170, 0.180, 0.190, 0.200, 0.200, 0.220, 0.200),
    "water": (0.050, 0.060, 0.060, 0.040, 0.030, 0.020, 0.018, 0.015, 0.012, 0.010, 0.005, 0.003),
    "sand": (0.180, 0.220, 0.260, 0.300, 0.320, 0.340, 0.350, 0.360, 0.370, 0.370, 0.400, 0.340),
}
# Endmember fractions of each BEN-19 class, in class-index order (alphabetical, as geopeft.data.clc lists them);
# the closest two classes are 0.036 apart in reflectance, nine times the pixel noise.
CLASS_MIXES: tuple[dict[str, float], ...] = (
    {"vegetation": 0.5, "grass": 0.2, "dry": 0.3},  # agro-forestry areas
    {"soil": 0.7, "grass": 0.3},  # arable land
    {"sand": 0.9, "water": 0.1},  # beaches, dunes, sands
    {"vegetation": 1.0},  # broad-leaved forest
    {"water": 0.5, "sand": 0.3, "grass": 0.2},  # coastal wetlands
    {"soil": 0.4, "grass": 0.3, "vegetation": 0.3},  # complex cultivation patterns
    {"conifer": 1.0},  # coniferous forest
    {"built": 0.8, "sand": 0.2},  # industrial or commercial units
    {"water": 0.85, "vegetation": 0.15},  # inland waters
    {"water": 0.45, "grass": 0.55},  # inland wetlands
    {"soil": 0.2, "vegetation": 0.2, "conifer": 0.3, "grass": 0.3},  # land principally occupied by agriculture ...
    {"water": 1.0},  # marine waters
    {"vegetation": 0.5, "conifer": 0.5},  # mixed forest
    {"dry": 0.6, "conifer": 0.4},  # moors, heathland and sclerophyllous vegetation
    {"grass": 0.5, "dry": 0.5},  # natural grassland and sparsely vegetated areas
    {"grass": 1.0},  # pastures
    {"vegetation": 0.4, "soil": 0.6},  # permanent crops
    {"vegetation": 0.3, "dry": 0.3, "conifer": 0.4},  # transitional woodland, shrub
    {"built": 0.6, "vegetation": 0.4},  # urban fabric
)
# Endmember fractions of the CLC codes without a BEN-19 class (their pixels are ignored, their spectra are not).
UNLABELLED_MIXES: dict[int, dict[str, float]] = {
    122: {"built": 0.7, "soil": 0.3},  # road and rail networks
    123: {"built": 0.7, "water": 0.3},  # port areas
    124: {"built": 0.5, "grass": 0.5},  # airports
    131: {"soil": 0.5, "sand": 0.5},  # mineral extraction sites
    132: {"soil": 0.6, "built": 0.4},  # dump sites
    133: {"soil": 0.8, "built": 0.2},  # construction sites
    141: {"grass": 0.6, "built": 0.4},  # green urban areas
    142: {"grass": 0.8, "built": 0.2},  # sport and leisure facilities
    332: {"sand": 0.6, "built": 0.4},  # bare rocks
    334: {"water": 0.6, "soil": 0.4},  # burnt areas (dark)
    335: {"sand": 1.0},  # glaciers and perpetual snow
    423: {"water": 0.6, "sand": 0.4},  # intertidal flats
    999: {"soil": 0.5, "vegetation": 0.5},  # unlabelled
}
NOISE = 0.004
BRIGHTNESS = 0.02
DN_PER_REFLECTANCE = 10_000  # L2A DN of reflectance 1 (0 is no data in L2A, so values start at 1)
#: Dtypes the band files can be written in (``band_dtype``); every value written fits both.
BAND_DTYPES = ("uint16", "int16")


def _spectrum(mix: Mapping[str, float]) -> npt.NDArray[np.float64]:
    total = np.zeros(len(rb.BAND_FILES))
    for name, fraction in mix.items():
        total += fraction * np.asarray(ENDMEMBERS[name])
    return total


def class_spectra() -> npt.NDArray[np.float64]:
    """``[19, 12]`` reflectance of each BEN-19 class in the stored band order."""
    return np.stack([_spectrum(mix) for mix in CLASS_MIXES])


def code_spectrum(code: int) -> npt.NDArray[np.float64]:
    """Reflectance of CLC ``code``: its class's spectrum, or its own when the code has no class."""
    index = CLC_TO_BEN19[code]
    return _spectrum(UNLABELLED_MIXES[code] if index < 0 else CLASS_MIXES[index])


def codes_of_class(index: int) -> list[int]:
    """The CLC codes that map to BEN-19 class ``index``."""
    return [code for code, k in CLC_TO_BEN19.items() if k == index]


def _patch(rng: np.random.Generator) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.uint16]]:
    """10 m reflectance ``[12, 120, 120]`` and CLC codes ``[120, 120]`` of one patch."""
    size, classes = rb.PATCH_SIZE, len(CLASS_MIXES)
    picked = rng.choice(classes, size=int(rng.integers(3, 7)), replace=False)
    codes = [int(rng.choice(codes_of_class(int(k)))) for k in picked]
    offsets = list(rng.uniform(0.0, 0.3, len(codes)))
    if rng.random() < 0.8:  # a smaller region without a class
        codes.append(int(rng.choice(UNLABELLED_CODES)))
        offsets.append(-0.15)
    region = np.argmax(np.stack([smooth_field(rng, size, 6) + offset for offset in offsets]), axis=0)
    code_map = np.asarray(codes, dtype=np.uint16)[region]
    spectra = np.stack([code_spectrum(c) for c in codes])
    reflectance = spectra[region].transpose(2, 0, 1) * rng.uniform(1 - BRIGHTNESS, 1 + BRIGHTNESS)
    reflectance += rng.normal(0.0, NOISE, reflectance.shape)
    return reflectance, code_map


def _tile_corner(patch_id: str) -> tuple[CRS, float, float]:
    """The UTM CRS and the upper-left corner of ``patch_id`` in its Sentinel-2 tile."""
    found = TILE_PATTERN.search(patch_id)
    if found is None:
        raise ConfigError(f"reben_7k synthetic: split id {patch_id!r} is not a BigEarthNet v2.0 S2 patch id")
    crs, easting, northing = mgrs_square(found.group("tile"))
    west = easting + PATCH_METRES * int(found.group("h"))
    top = northing + SQUARE - PATCH_METRES * int(found.group("v"))
    return crs, west, top


def _write(path: Path, data: npt.NDArray[np.integer], crs: CRS, west: float, top: float, resolution: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    transform = Affine(resolution, 0.0, west, 0.0, -resolution, top)
    side = data.shape[0]
    with rasterio.open(
        path, "w", driver="GTiff", height=side, width=side, count=1, dtype=data.dtype, crs=crs, transform=transform
    ) as dst:
        dst.write(data[None])


def write_patch(
    raw: Path, patch_id: str, seed: int, *, band_dtype: str = "uint16", bands_at_10m: bool = False
) -> None:
    """Write the 12 band files and the reference map of one patch under the raw root ``raw``.

    Args:
        raw: the raw root.
        patch_id: the BigEarthNet v2.0 S2 patch id.
        seed: random seed.
        band_dtype: dtype of the band files (:data:`BAND_DTYPES`); the digital numbers are the same in both.
        bands_at_10m: write every band on the 10 m grid (coarse pixels repeated) instead of at its own resolution.
    """
    rng = sample_rng(seed, patch_id)
    crs, west, top = _tile_corner(patch_id)
    reflectance, code_map = _patch(rng)
    size = rb.PATCH_SIZE
    for band, (suffix, _, resolution) in zip(reflectance, rb.BAND_FILES, strict=True):
        f = resolution // 10
        coarse = band.reshape(size // f, f, size // f, f).mean(axis=(1, 3))
        dn = np.clip(np.rint(coarse * DN_PER_REFLECTANCE), 1, DN_PER_REFLECTANCE).astype(band_dtype)
        if bands_at_10m:
            dn, resolution = dn.repeat(f, axis=0).repeat(f, axis=1), 10
        _write(rb.band_path(raw, patch_id, suffix), dn, crs, west, top, float(resolution))
    _write(rb.reference_map_path(raw, patch_id), code_map, crs, west, top, 10.0)


@register_synthetic("reben_7k")
def write_reben_7k(
    root: str | Path,
    *,
    counts: Mapping[str, int] | None = None,
    size: int = rb.PATCH_SIZE,
    seed: int = 0,
    band_dtype: str = "uint16",
    bands_at_10m: bool = False,
) -> Path:
    """Write a small synthetic reBEN 7k in the BigEarthNet v2.0 layout under ``root``.

    Each split takes the first ``counts[split]`` ids of its official file; an id listed by two trimmed files (an
    ``ood`` patch that is also among the first Austrian ones) is written once.

    Args:
        root: the raw root to write (``root/BigEarthNet-S2``, ``root/Reference_Maps``) and the parent of the
            trimmed split files.
        counts: patches per split (``train``, ``val``, ``test``, ``ood``, ``austria``, ``ireland``); splits left out
            take the default.
        size: patch height and width in pixels; BigEarthNet patches are always 120, the only accepted value.
        seed: random seed; the same seed writes the same pixels.
        band_dtype: ``uint16`` (BigEarthNet v2.0 as released) or ``int16`` (the same values in signed files).
        bands_at_10m: write the 20 m and 60 m bands already on the 10 m grid (120x120), as torchgeo's fixtures.

    Returns:
        The folder of the trimmed split files (``root/splits``), to pass to ``prepare`` as ``splits_dir``.

    Raises:
        ConfigError: an unknown split, a count below 1 or above the official split's size, ``size`` other
            than 120, or a ``band_dtype`` outside :data:`BAND_DTYPES`.
    """
    root = Path(root)
    merged = {**DEFAULT_COUNTS, **(counts or {})}
    if size != rb.PATCH_SIZE:
        raise ConfigError(
            f"write_reben_7k: size must be {rb.PATCH_SIZE}, got {size}; BigEarthNet patches are {rb.PATCH_SIZE}x"
            f"{rb.PATCH_SIZE} pixels at 10 m, and the reader checks that size and pads it to {rb.INFO.pad_to}"
        )
    if band_dtype not in BAND_DTYPES:
        raise unknown_choice("write_reben_7k band_dtype", band_dtype, BAND_DTYPES)
    chosen = first_ids("write_reben_7k", rb.SPLIT_FILES, rb.ReBEN7kSource.default_splits_dir, merged)
    for patch_id in dict.fromkeys(i for ids in chosen.values() for i in ids):
        write_patch(root, patch_id, seed, band_dtype=band_dtype, bands_at_10m=bands_at_10m)
    return write_split_files(root / "splits", chosen)
