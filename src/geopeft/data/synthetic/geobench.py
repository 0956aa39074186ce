"""Synthetic GEO-Bench m-cashew-plantation and m-SA-crop-type in the native layout, for ``make demo`` and the tests.

Each writer puts one HDF5 file per sample under ``<root>/<folder>/`` (one 2-D dataset per band, named as GEO-Bench's
``write_sample_hdf5`` names them, plus ``label``), the ``default_partition.json`` and, exported from it, the split
files that ``prepare`` reads. The task is learnable: every class has its own spectrum (a fixed mix of vegetation,
soil, dry vegetation, built-up, water and flowering-crop spectra), class regions are smooth random blobs, and a
small cloud brightens a few pixels and sets the cloud band. The same seed gives the same files.

Stored as GEO-Bench v1 does (converters ``benin_smallholder_cashews.py`` and ``crop_type_south_africa.py``):
cashew bands are float32 Sentinel-2 DN with a date suffix on every key, the cloud band a probability 0-100, the
label int64; SA crop bands are int16 without dates, on the small scale of its statistics (spec §3.5: means 12-84,
here reflectance x 255), the cloud band a 0/1 mask, the label int16.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import numpy.typing as npt

from geopeft.data.geobench import (
    LABEL_KEY,
    PARTITION_FILE,
    PARTITION_KEYS,
    CashewPlantationSource,
    GeoBenchSource,
    SACropTypeSource,
)
from geopeft.data.synthetic.fields import sample_rng, smooth_field
from geopeft.data.synthetic.registry import register_synthetic
from geopeft.errors import ConfigError

DEFAULT_COUNTS: Mapping[str, int] = {"train": 16, "val": 6, "test": 6}

#: HDF5 band names of GEO-Bench's ``sentinel2_13_bands`` without cirrus, then ``CloudProbability``'s name.
KEY_NAMES: tuple[str, ...] = (
    "01 - Coastal aerosol",
    "02 - Blue",
    "03 - Green",
    "04 - Red",
    "05 - Vegetation Red Edge",
    "06 - Vegetation Red Edge",
    "07 - Vegetation Red Edge",
    "08 - NIR",
    "08A - Vegetation Red Edge",
    "09 - Water vapour",
    "11 - SWIR",
    "12 - SWIR",
    "Cloud Probability",
)

# Reflectance of the 12 optical bands (B01..B08, B8A, B09, B11, B12); rough library spectra ("endmembers").
ENDMEMBERS = np.array(
    [
        (0.12, 0.09, 0.08, 0.05, 0.10, 0.24, 0.30, 0.32, 0.34, 0.11, 0.20, 0.10),  # green vegetation
        (0.13, 0.11, 0.13, 0.16, 0.19, 0.22, 0.24, 0.26, 0.27, 0.09, 0.32, 0.25),  # bare soil
        (0.11, 0.10, 0.12, 0.15, 0.19, 0.22, 0.24, 0.26, 0.27, 0.10, 0.40, 0.30),  # dry vegetation
        (0.17, 0.16, 0.17, 0.18, 0.19, 0.20, 0.21, 0.22, 0.22, 0.09, 0.25, 0.22),  # built-up
        (0.11, 0.095, 0.085, 0.065, 0.055, 0.045, 0.040, 0.035, 0.030, 0.012, 0.015, 0.008),  # water
        (0.12, 0.08, 0.17, 0.16, 0.21, 0.27, 0.31, 0.33, 0.34, 0.11, 0.21, 0.11),  # flowering crop (yellow)
    ]
)
CLOUD = 0.38
# Fractions of each endmember per class, in class-index order; checked to be separable by a nearest-centroid test.
CASHEW_MIXES = (
    (0.0, 0.2, 0.0, 0.0, 0.8, 0.0),  # no data
    (0.9, 0.1, 0.0, 0.0, 0.0, 0.0),  # well-managed plantation
    (0.6, 0.1, 0.3, 0.0, 0.0, 0.0),  # poorly-managed plantation
    (0.3, 0.0, 0.7, 0.0, 0.0, 0.0),  # non-plantation
    (0.1, 0.1, 0.0, 0.8, 0.0, 0.0),  # residential
    (0.05, 0.95, 0.0, 0.0, 0.0, 0.0),  # background
    (0.4, 0.6, 0.0, 0.0, 0.0, 0.0),  # uncertain
)
SA_CROP_MIXES = (
    (0.0, 0.2, 0.0, 0.0, 0.8, 0.0),  # No Data
    (1.0, 0.0, 0.0, 0.0, 0.0, 0.0),  # Lucerne/Medics
    (0.65, 0.0, 0.35, 0.0, 0.0, 0.0),  # Planted pastures (perennial)
    (0.0, 0.6, 0.4, 0.0, 0.0, 0.0),  # Fallow
    (0.4, 0.6, 0.0, 0.0, 0.0, 0.0),  # Wine grapes
    (0.35, 0.0, 0.65, 0.0, 0.0, 0.0),  # Weeds
    (0.05, 0.0, 0.95, 0.0, 0.0, 0.0),  # Small grain grazing
    (0.75, 0.1, 0.0, 0.0, 0.15, 0.0),  # Wheat
    (0.3, 0.0, 0.0, 0.0, 0.0, 0.7),  # Canola
    (0.2, 0.3, 0.0, 0.5, 0.0, 0.0),  # Rooibos
)
#: Acquisition dates of the Benin cashew time series (a subset of the converter's ``DATES``).
CASHEW_DATES = (
    "2019-11-10",
    "2019-11-15",
    "2019-11-20",
    "2019-11-30",
    "2019-12-05",
    "2019-12-10",
    "2019-12-15",
    "2019-12-20",
    "2020-01-04",
    "2020-01-09",
    "2020-01-19",
    "2020-02-08",
)
SA_CROP_PREFIX = "ref_south_africa_crops_competition_v1_train_labels_"


@dataclass(frozen=True)
class Flavour:
    """How one GEO-Bench dataset stores its samples.

    Args:
        source: the dataset's reader (folder, classes, dated keys).
        mixes: endmember fractions of each class.
        dn_per_reflectance: stored value of reflectance 1.0.
        band_dtype: dtype of every band.
        label_dtype: dtype of ``label``.
        cloud_probability: the cloud band holds a probability 0-100 (else a 0/1 mask of the same cloud).
        ids: split counts and seed -> sample ids per split, named as the dataset's converter names them.
    """

    source: GeoBenchSource
    mixes: tuple[tuple[float, ...], ...]
    dn_per_reflectance: float
    band_dtype: str
    label_dtype: str
    cloud_probability: bool
    ids: Callable[[Mapping[str, int], int], dict[str, list[str]]]


def class_spectra(flavour: Flavour) -> npt.NDArray[np.float64]:
    """``[classes, 12]`` reflectance of each class."""
    spectra: npt.NDArray[np.float64] = np.asarray(flavour.mixes) @ ENDMEMBERS
    return spectra


def _sample(
    flavour: Flavour, rng: np.random.Generator, size: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Optical reflectance ``[12, size, size]``, cloud probability ``[size, size]`` (0-100) and label."""
    classes = len(flavour.mixes)
    label = np.argmax(np.stack([smooth_field(rng, size, 6) for _ in range(classes)]), axis=0)
    reflectance = class_spectra(flavour)[label].transpose(2, 0, 1) * rng.uniform(0.95, 1.05)
    yy, xx = np.mgrid[0:size, 0:size]
    cy, cx = rng.uniform(0, size, 2)
    sigma = max(size / 24, 1.5)
    cloud = rng.uniform(40, 100) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    cloud = np.where(cloud >= 5, np.round(cloud), 0.0)
    alpha = cloud / 100
    reflectance = (1 - alpha) * reflectance + alpha * CLOUD + rng.normal(0.0, 0.008, reflectance.shape)
    return reflectance, cloud, label


def _keys(flavour: Flavour, rng: np.random.Generator) -> list[str]:
    if not flavour.source.dated:
        return list(KEY_NAMES)
    date = CASHEW_DATES[int(rng.integers(len(CASHEW_DATES)))]
    return [f"{name}_{date}" for name in KEY_NAMES]


def write_sample(flavour: Flavour, path: Path, size: int, rng: np.random.Generator) -> None:
    """Write one sample's HDF5 file."""
    reflectance, cloud, label = _sample(flavour, rng, size)
    top = flavour.dn_per_reflectance
    optical = np.clip(np.rint(reflectance * top), 0, top)
    cloud_band = cloud if flavour.cloud_probability else (cloud > 0).astype(np.float64)
    bands = np.concatenate([optical, cloud_band[None]]).astype(flavour.band_dtype)
    with h5py.File(path, "w") as f:
        for key, band in zip(_keys(flavour, rng), bands, strict=True):
            f.create_dataset(key, data=band)
        f.create_dataset(LABEL_KEY, data=label.astype(flavour.label_dtype))


def cashew_ids(counts: Mapping[str, int], seed: int) -> dict[str, list[str]]:
    """Split -> ``sample_<n>`` ids; the numbers spread over the splits at random (GEO-Bench draws each one's split)."""
    numbers = np.random.default_rng(seed).permutation(sum(counts.values()))
    out, start = {}, 0
    for split, n in counts.items():
        out[split] = [f"sample_{k}" for k in sorted(int(v) for v in numbers[start : start + n])]
        start += n
    return out


def sa_crop_ids(counts: Mapping[str, int], seed: int) -> dict[str, list[str]]:
    """Split -> ``<label tile folder>_<time step>`` ids; two steps per tile, all in one split (as GEO-Bench draws)."""
    out, tile = {}, 1
    for split, n in counts.items():
        out[split] = [f"{SA_CROP_PREFIX}{tile + k // 2:04d}_{k % 2}" for k in range(n)]
        tile += (n + 1) // 2
    return out


def write_geobench(flavour: Flavour, root: str | Path, counts: Mapping[str, int] | None, size: int, seed: int) -> Path:
    """Write a synthetic GEO-Bench dataset under ``root`` and return its split-file folder.

    Raises:
        ConfigError: an unknown split, a count below 1, or ``size`` < 16.
    """
    name = flavour.source.info.name
    merged = {**DEFAULT_COUNTS, **(counts or {})}
    unknown = sorted(set(merged) - set(PARTITION_KEYS))
    if unknown:
        raise ConfigError(f"synthetic {name}: unknown split(s) {unknown} in counts; allowed: train, val, test")
    low = {split: n for split, n in merged.items() if n < 1}
    if low:
        raise ConfigError(f"synthetic {name}: counts must be at least 1, got {low}")
    if size < 16:
        raise ConfigError(f"synthetic {name}: size must be at least 16 pixels, got {size}")
    root = Path(root)
    folder = root / flavour.source.folder
    folder.mkdir(parents=True, exist_ok=True)
    ids = flavour.ids({split: merged[split] for split in PARTITION_KEYS}, seed)
    for split_ids in ids.values():
        for sample_id in split_ids:
            write_sample(flavour, flavour.source.sample_path(root, sample_id), size, sample_rng(seed, sample_id))
    partition = {PARTITION_KEYS[split]: split_ids for split, split_ids in ids.items()}
    (folder / PARTITION_FILE).write_text(json.dumps(partition, indent=2) + "\n", encoding="utf-8")
    return flavour.source.write_split_files(root, root / "splits" / name)


CASHEW = Flavour(CashewPlantationSource(), CASHEW_MIXES, 10_000.0, "float32", "int64", True, cashew_ids)
SA_CROP = Flavour(SACropTypeSource(), SA_CROP_MIXES, 255.0, "int16", "int16", False, sa_crop_ids)


@register_synthetic("m_cashew_plantation")
def write_m_cashew_plantation(
    root: str | Path, *, counts: Mapping[str, int] | None = None, size: int = 64, seed: int = 0
) -> Path:
    """Write a small synthetic m-cashew-plantation under ``root/m-cashew-plant/``.

    Args:
        root: the raw root (GEO-Bench's ``segmentation_v1.0`` folder) and the parent of the split files.
        counts: samples per split (``train``, ``val``, ``test``); splits left out take the default.
        size: height and width in pixels (the real samples are 256).
        seed: random seed; the same seed writes the same pixels.

    Returns:
        The folder of the split files (``root/splits/m_cashew_plantation``), to pass to ``prepare``.

    Raises:
        ConfigError: an unknown split, a count below 1, or ``size`` < 16.
    """
    return write_geobench(CASHEW, root, counts, size, seed)


@register_synthetic("m_sa_crop_type")
def write_m_sa_crop_type(
    root: str | Path, *, counts: Mapping[str, int] | None = None, size: int = 64, seed: int = 0
) -> Path:
    """Write a small synthetic m-SA-crop-type under ``root/m-SA-crop-type/``.

    Args:
        root: the raw root (GEO-Bench's ``segmentation_v1.0`` folder) and the parent of the split files.
        counts: samples per split (``train``, ``val``, ``test``); splits left out take the default.
        size: height and width in pixels (the real samples are 256).
        seed: random seed; the same seed writes the same pixels.

    Returns:
        The folder of the split files (``root/splits/m_sa_crop_type``), to pass to ``prepare``.

    Raises:
        ConfigError: an unknown split, a count below 1, or ``size`` < 16.
    """
    return write_geobench(SA_CROP, root, counts, size, seed)
