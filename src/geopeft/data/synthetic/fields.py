"""Building blocks of the synthetic generators: smooth fields, per-sample RNGs, UTM zones, trimmed split files."""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
from rasterio.crs import CRS

from geopeft.data.registry import read_split_ids
from geopeft.errors import ConfigError


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


def first_ids(
    writer: str, split_files: Mapping[str, str], official_dir: Path, counts: Mapping[str, int]
) -> dict[str, list[str]]:
    """Split file name -> the first ``counts[split]`` ids of the official split file.

    Args:
        writer: the writer's name, for error messages.
        split_files: split -> file name of the dataset.
        official_dir: folder of the official split files.
        counts: samples per split; must name exactly the dataset's splits.

    Raises:
        ConfigError: an unknown split or a count outside 1..(size of the official split).
    """
    if set(counts) != set(split_files):
        raise ConfigError(f"{writer}: unknown split(s) {sorted(set(counts) - set(split_files))} in counts")
    chosen: dict[str, list[str]] = {}
    for split, file_name in split_files.items():
        official = read_split_ids(official_dir / file_name, split)
        if not 1 <= counts[split] <= len(official):
            raise ConfigError(f"{writer}: counts[{split!r}] must lie in 1..{len(official)}, got {counts[split]}")
        chosen[file_name] = official[: counts[split]]
    return chosen


def write_split_files(splits_dir: Path, chosen: Mapping[str, list[str]]) -> Path:
    """Write trimmed split files in the official format (one id per line) and return their folder."""
    splits_dir.mkdir(parents=True, exist_ok=True)
    for file_name, ids in chosen.items():
        (splits_dir / file_name).write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    return splits_dir
