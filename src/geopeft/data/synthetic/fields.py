"""Building blocks of the synthetic generators: smooth random fields, per-sample RNGs, UTM zones."""

from __future__ import annotations

import zlib

import numpy as np
import numpy.typing as npt
from rasterio.crs import CRS


def sample_rng(seed: int, sample_id: str) -> np.random.Generator:
    """A generator that depends only on ``seed`` and the sample id (not on the order samples are written)."""
    return np.random.default_rng([seed, zlib.crc32(sample_id.encode())])


def smooth_field(rng: np.random.Generator, size: int, blobs: int) -> npt.NDArray[np.float64]:
    """A smooth random field: a sum of separable Gaussian bumps with random centres, widths and signs."""
    coords = np.arange(size, dtype=np.float64)
    centres = rng.uniform(0, size, (2, blobs, 1))
    sigma = rng.uniform(size / 16, size / 5, (blobs, 1))
    amplitude = rng.uniform(-1.0, 1.0, (blobs, 1))
    gy = np.exp(-0.5 * ((coords - centres[0]) / sigma) ** 2) * amplitude
    gx = np.exp(-0.5 * ((coords - centres[1]) / sigma) ** 2)
    field: npt.NDArray[np.float64] = gy.T @ gx
    return field


def utm_crs(lat: float, lon: float) -> CRS:
    """The UTM CRS (WGS 84) of the zone holding (lat, lon)."""
    zone = int((lon + 180.0) // 6.0) % 60 + 1
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)
