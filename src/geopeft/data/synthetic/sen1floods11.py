"""Synthetic Sen1Floods11 in the native layout, for ``make demo`` and the tests.

:func:`write_sen1floods11` writes real GeoTIFFs (13-band int16 S2 DN in a UTM CRS at 10 m, int16 labels with
-1/0/1), the metadata GeoJSON and trimmed split files, so that every reader and the cache builder run their real
code paths on them. The task is learnable: water blobs carry a water spectrum (bright blue/green, dark NIR/SWIR),
land a mix of vegetation and soil spectra, plus noise. The same seed gives the same files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
import rasterio
import rasterio.warp
from affine import Affine

from geopeft.data import sen1floods11 as s1f
from geopeft.data.synthetic.fields import first_ids, sample_rng, smooth_field, utm_crs, write_split_files
from geopeft.data.synthetic.registry import register_synthetic
from geopeft.errors import ConfigError

DEFAULT_COUNTS: Mapping[str, int] = {"train": 16, "val": 6, "test": 6, "bolivia": 4}

# Surface reflectance per S2 band (file order); rough library spectra, good enough to make water separable.
WATER = (0.11, 0.095, 0.085, 0.065, 0.055, 0.045, 0.040, 0.035, 0.030, 0.012, 0.003, 0.015, 0.008)
VEGETATION = (0.12, 0.09, 0.08, 0.05, 0.10, 0.24, 0.30, 0.32, 0.34, 0.11, 0.004, 0.20, 0.10)
SOIL = (0.13, 0.11, 0.13, 0.16, 0.19, 0.22, 0.24, 0.26, 0.27, 0.09, 0.005, 0.32, 0.25)
CLOUD = 0.38

# Rough centre (lat, lon) and an S2 date of each Sen1Floods11 location (synthetic values, not the real events').
LOCATIONS: dict[str, tuple[float, float, str]] = {
    "Bolivia": (-14.8, -65.0, "2018-02-15"),
    "Cambodia": (11.5, 105.0, "2018-08-05"),
    "Ghana": (9.5, -1.0, "2018-09-18"),
    "India": (26.2, 91.7, "2016-08-12"),
    "Nigeria": (7.8, 6.7, "2018-09-21"),
    "Pakistan": (27.5, 68.5, "2017-06-28"),
    "Paraguay": (-25.3, -57.6, "2018-10-31"),
    "Somalia": (4.0, 45.5, "2018-05-07"),
    "Spain": (38.0, -1.0, "2019-09-17"),
    "Sri-Lanka": (7.0, 80.0, "2017-05-30"),
    "USA": (35.0, -77.5, "2019-05-22"),
}


def _chip(rng: np.random.Generator, size: int) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.int16]]:
    """One image (``[13, size, size]`` DN) and its label (``[size, size]``, -1 under a cloud)."""
    water_field = smooth_field(rng, size, 8)
    water = water_field > np.quantile(water_field, 1.0 - rng.uniform(0.1, 0.5))
    vegetation = 1.0 / (1.0 + np.exp(-4.0 * smooth_field(rng, size, 6)))
    spectra = [np.asarray(s, dtype=np.float32)[:, None, None] for s in (WATER, VEGETATION, SOIL)]
    land = spectra[1] * vegetation.astype(np.float32) + spectra[2] * (1.0 - vegetation.astype(np.float32))
    reflectance = np.where(water, spectra[0], land) * np.float32(rng.uniform(0.9, 1.1))
    label = water.astype(np.int16)
    h, w = (int(v) for v in rng.integers(size // 8, size // 4 + 1, 2))
    y, x = (int(v) for v in rng.integers(0, size - max(h, w) + 1, 2))
    reflectance[:, y : y + h, x : x + w] = CLOUD
    label[y : y + h, x : x + w] = -1
    reflectance += rng.normal(0.0, 0.008, reflectance.shape).astype(np.float32)
    image = np.clip(np.rint(reflectance * 10_000), 0, 10_000).astype(np.int16)
    return image, label


def _write_sample(raw: Path, sample_id: str, size: int, seed: int) -> None:
    rng = sample_rng(seed, sample_id)
    country = sample_id.rsplit("_", 1)[0]
    lat, lon, _ = LOCATIONS[s1f.LOCATION_ALIASES.get(country, country)]
    lat, lon = lat + rng.uniform(-0.3, 0.3), lon + rng.uniform(-0.3, 0.3)
    crs = utm_crs(lat, lon)
    xs, ys = rasterio.warp.transform("EPSG:4326", crs, [lon], [lat])
    half = size * s1f.INFO.gsd / 2
    transform = Affine(s1f.INFO.gsd, 0.0, xs[0] - half, 0.0, -s1f.INFO.gsd, ys[0] + half)
    image, label = _chip(rng, size)
    common = {"driver": "GTiff", "height": size, "width": size, "dtype": "int16", "crs": crs, "transform": transform}
    for path, data in ((s1f.image_path(raw, sample_id), image), (s1f.label_path(raw, sample_id), label[None])):
        path.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(path, "w", count=data.shape[0], **common) as dst:
            dst.write(data)


def _metadata(raw: Path) -> None:
    features = []
    for location, (lat, lon, date) in LOCATIONS.items():
        ring = [[lon - 1, lat - 1], [lon + 1, lat - 1], [lon + 1, lat + 1], [lon - 1, lat + 1], [lon - 1, lat - 1]]
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {"location": location, "s1_date": date, "s2_date": date},
            }
        )
    path = raw / s1f.METADATA_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}, indent=1) + "\n", encoding="utf-8")


@register_synthetic("sen1floods11")
def write_sen1floods11(
    root: str | Path, *, counts: Mapping[str, int] | None = None, size: int = 128, seed: int = 0
) -> Path:
    """Write a small synthetic Sen1Floods11 in the native layout under ``root``.

    The sample ids are the first ``counts[split]`` ids of each official split file, so the Bolivia region holds
    only Bolivian chips, as in the real data.

    Args:
        root: the raw root to write (``root/v1.1/...``) and the parent of the trimmed split files.
        counts: samples per split (``train``, ``val``, ``test``, ``bolivia``); splits left out take the default.
        size: chip height and width in pixels (the real chips are 512).
        seed: random seed; the same seed writes the same pixels.

    Returns:
        The folder of the trimmed split files (``root/splits``), to pass to ``prepare`` as ``splits_dir``.

    Raises:
        ConfigError: an unknown split, a count below 1 or above the official split's size, or ``size`` < 16.
    """
    root = Path(root)
    merged = {**DEFAULT_COUNTS, **(counts or {})}
    if size < 16:
        raise ConfigError(f"write_sen1floods11: size must be at least 16 pixels, got {size}")
    chosen = first_ids("write_sen1floods11", s1f.SPLIT_FILES, s1f.Sen1Floods11Source.default_splits_dir, merged)
    for sample_id in dict.fromkeys(i for ids in chosen.values() for i in ids):
        _write_sample(root, sample_id, size, seed)
    _metadata(root)
    return write_split_files(root / "splits", chosen)
