"""HLS Burn Scars: the native GeoTIFF reader (spec/study.md §3.2).

The raw root is one flat folder holding the Hugging Face ``training/`` and ``validation/`` files merged::

    subsetted_512x512_HLS.S30.T<tile>.<YYYYDDD>.v1.4_merged.tif   6 bands, float32 reflectance
    subsetted_512x512_HLS.S30.T<tile>.<YYYYDDD>.v1.4.mask.tif     1 band, 0 / 1, -1 for no data

Split files list ids such as ``T10SDH.2020248.v1``; an id is matched as a substring of the file names, and
exactly one image (``*_merged.tif``) and one mask (``*.mask.tif``) must match it. The official split files
(the authors' leakage-free train / val / test) ship with geopeft. The date of a sample is its Julian day
``YYYYDDD`` at 12:00, and its position is the centre of the raster in EPSG:4326.

No-data handling: image values that are NaN or infinite, equal the raster's no-data tag, or lie below
:data:`FILL_BELOW` (the HLS fill value -9999, also as -0.9999 after scaling) become 0, and every pixel with such a
value in any band is ignored (mask -1). Slightly negative reflectances, which HLS allows down to -0.01, are kept.
"""

from __future__ import annotations

import calendar
import datetime as dt
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from geopeft.data.bands import HLS_BANDS
from geopeft.data.geotiff import centre_lat_lon, open_geotiff
from geopeft.data.normalisation import BandStats
from geopeft.data.registry import SPLITS_ROOT, DatasetInfo, RawSample, register_dataset, split_file_in
from geopeft.errors import DataError

#: The study's per-band mean and std of the scaled values (``MEANS``/``STDS`` of IBM/peft-geofm
#: ``src/peft_geofm/datamodules/burn_scars.py`` at 5fe258d; also in the
#: study's ``reference/normalisation.json``).
STUDY_STATS = BandStats(
    mean={
        "BLUE": 0.0525628887,
        "GREEN": 0.0779808834,
        "RED": 0.0946640745,
        "NIR_NARROW": 0.213933453,
        "SWIR_1": 0.2355762571,
        "SWIR_2": 0.1710367799,
    },
    std={
        "BLUE": 0.0308036711,
        "GREEN": 0.0375606678,
        "RED": 0.054910697,
        "NIR_NARROW": 0.0701380521,
        "SWIR_1": 0.0910611823,
        "SWIR_2": 0.0835518017,
    },
    source="IBM/peft-geofm src/peft_geofm/datamodules/burn_scars.py at 5fe258d (MEANS/STDS)",
)

INFO = DatasetInfo(
    name="burn_scars",
    bands=HLS_BANDS,
    classes=("Not burned", "Burn scar"),
    gsd=30.0,
    scale=1.0,
    regions=("test",),
    metadata=("time", "location"),
    study_stats=STUDY_STATS,
)

#: Split name -> file name, as in the authors' ``datasets_splits/burn_scars/``.
SPLIT_FILES: dict[str, str] = {"train": "train_data.txt", "val": "val_data.txt", "test": "test_data.txt"}
FILE_PREFIX = "subsetted_512x512_HLS.S30."
IMAGE_SUFFIX = "_merged.tif"
MASK_SUFFIX = ".mask.tif"
IMAGE_DTYPES = ("float32", "float64")
MASK_DTYPES = ("int8", "int16", "int32", "uint8")
LABEL_VALUES = (-1, 0, 1)
#: Image values below this are fill (HLS writes -9999; no reflectance is below -0.01).
FILL_BELOW = -0.5
#: Valid values above this are not reflectance (HLS reflectance stays below 1.6; DN reach 10 000).
MAX_REFLECTANCE = 10.0
#: Tile and Julian date in a sample id or file name, e.g. ``T10SDH.2020248`` in ``...HLS.S30.T10SDH.2020248.v1...``.
NAME_PATTERN = re.compile(r"(?:^|\.)T(?P<tile>\d{2}[A-Z]{3})\.(?P<date>\d{7})(?:\.|$)")
FIX = (
    "download ibm-nasa-geospatial/hls_burn_scars from Hugging Face and merge its training/ and validation/ files "
    "into one flat folder, or remove the id from the split file"
)


def image_path(raw: Path, sample_id: str) -> Path:
    """The canonical image file name of ``sample_id`` (``T10SDH.2020248.v1``) in the flat folder ``raw``."""
    return raw / f"{FILE_PREFIX}{sample_id}.4{IMAGE_SUFFIX}"


def mask_path(raw: Path, sample_id: str) -> Path:
    """The canonical mask file name of ``sample_id`` in the flat folder ``raw``."""
    return raw / f"{FILE_PREFIX}{sample_id}.4{MASK_SUFFIX}"


def parse_date(name: str, where: str) -> str:
    """The acquisition date in a file name or id (``...T10SDH.2020248...``) as ISO text at 12:00.

    Args:
        name: a file name or sample id holding ``T<tile>.<YYYYDDD>``.
        where: the file it came from, named in the error.

    Raises:
        DataError: the name holds no tile and Julian date, or the day of the year does not exist.
    """
    found = NAME_PATTERN.search(name)
    if found is None:
        raise DataError(
            f"{where}: name {name!r} holds no HLS tile and Julian date (expected ...T<tile>.<YYYYDDD>.v1...); {FIX}"
        )
    text = found.group("date")
    year, day = int(text[:4]), int(text[4:])
    days_in_year = 366 if calendar.isleap(year) else 365
    if not 1 <= day <= days_in_year:
        raise DataError(f"{where}: Julian date {text} has no day {day} in {year} (1..{days_in_year}); {FIX}")
    return (dt.datetime(year, 1, 1, 12) + dt.timedelta(days=day - 1)).isoformat()


def list_files(raw: Path) -> list[str]:
    """Names of the regular files directly inside ``raw``, sorted.

    Raises:
        DataError: ``raw`` is not a folder.
    """
    if not raw.is_dir():
        raise DataError(f"burn_scars: raw folder {raw} does not exist; pass --raw the flat folder of the GeoTIFFs")
    with os.scandir(raw) as entries:
        return sorted(e.name for e in entries if e.is_file())


def match_files(names: Sequence[str], sample_id: str) -> tuple[list[str], list[str], list[str]]:
    """The images, masks and all files among ``names`` whose name contains ``sample_id``."""
    matched = [n for n in names if sample_id in n]
    return [n for n in matched if n.endswith(IMAGE_SUFFIX)], [n for n in matched if n.endswith(MASK_SUFFIX)], matched


def _locate(raw: Path, sample_id: str, names: Sequence[str]) -> tuple[tuple[Path, Path] | None, str]:
    """The image and mask of ``sample_id``, or ``None`` and what is wrong."""
    images, masks, matched = match_files(names, sample_id)
    if len(images) == 1 and len(masks) == 1:
        return (raw / images[0], raw / masks[0]), ""
    if not matched:
        return None, f"id {sample_id}: no file matches (expected {image_path(raw, sample_id)} and its .mask.tif)"
    return None, (
        f"id {sample_id}: expected exactly one *{IMAGE_SUFFIX} and one *{MASK_SUFFIX} in {raw}, "
        f"found {len(images)} image(s) and {len(masks)} mask(s) among the matching files {', '.join(matched)}"
    )


def _read_image(path: Path) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_], float | None, float | None]:
    """Image with fill set to 0, the ignored pixels, and the centre lat/lon."""
    with open_geotiff(path, FIX) as src:
        if src.count != len(INFO.bands):
            raise DataError(
                f"{path}: {src.count} band(s), expected the {len(INFO.bands)} HLS bands {', '.join(INFO.bands)}; {FIX}"
            )
        dtypes = sorted(set(src.dtypes))
        if len(dtypes) != 1 or dtypes[0] not in IMAGE_DTYPES:
            raise DataError(
                f"{path}: dtype {'/'.join(dtypes)}, expected reflectance as one of {IMAGE_DTYPES} "
                f"(the Hugging Face files are float32 reflectance, not digital numbers); {FIX}"
            )
        image = src.read().astype(np.float32)
        nodata = src.nodata
        lat, lon = centre_lat_lon(src)
    with np.errstate(invalid="ignore"):
        fill = ~np.isfinite(image) | (image < FILL_BELOW)
        if nodata is not None and np.isfinite(nodata):
            fill |= image == np.float32(nodata)
    image[fill] = 0.0
    top = float(image.max()) if image.size else 0.0
    if top > MAX_REFLECTANCE:
        raise DataError(
            f"{path}: values up to {top:g} are not reflectance (expected at most ~1.6); the file holds digital "
            f"numbers or an unknown fill value; {FIX}"
        )
    return image, fill.any(axis=0), lat, lon


def _read_mask(path: Path) -> npt.NDArray[np.int16]:
    """Labels -1 / 0 / 1; pixels equal to the mask's own no-data tag become -1 (a tag of 0 or 1 is not honoured)."""
    with open_geotiff(path, FIX) as src:
        if src.count != 1:
            raise DataError(f"{path}: {src.count} bands, expected 1 mask band; {FIX}")
        if src.dtypes[0] not in MASK_DTYPES:
            raise DataError(f"{path}: mask dtype {src.dtypes[0]}, expected one of {MASK_DTYPES}; {FIX}")
        label = src.read(1)
        nodata = src.nodata
    tagged = np.zeros(label.shape, dtype=bool)
    if nodata is not None and np.isfinite(nodata) and nodata not in (0, 1):
        tagged = label == nodata
    values = np.unique(label[~tagged])
    bad = [v.item() for v in values if v not in LABEL_VALUES]
    if bad:
        raise DataError(
            f"{path}: mask value(s) {bad[:5]} outside {{-1, 0, 1}} (dtype {label.dtype}, no-data tag {nodata}); {FIX}"
        )
    mask: npt.NDArray[np.int16] = label.astype(np.int16)
    mask[tagged] = -1
    return mask


@register_dataset("burn_scars")
class BurnScarsSource:
    """Reads HLS Burn Scars chips from their GeoTIFFs in one flat folder (registered as ``burn_scars``)."""

    info = INFO
    default_splits_dir = SPLITS_ROOT / "burn_scars"

    def split_file(self, split: str, splits_dir: Path) -> Path:
        """The split file of ``split`` (``train_data.txt``, ``val_data.txt``, ``test_data.txt``)."""
        return split_file_in("burn_scars", SPLIT_FILES, split, splits_dir)

    def source_files(self, raw: Path, split: str, ids: Sequence[str]) -> list[Path]:
        """The image and mask file of every id.

        Raises:
            DataError: an id matches no file, or not exactly one image and one mask; names the first few ids,
                their expected files and the split.
        """
        names = list_files(raw)
        files: list[Path] = []
        problems: list[str] = []
        for sample_id in ids:
            pair, problem = _locate(raw, sample_id, names)
            if pair is None:
                problems.append(problem)
            else:
                files.extend(pair)
        if problems:
            shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
            raise DataError(
                f"burn_scars split {split}: {len(problems)} sample id(s) of the split file lack a unique image and "
                f"mask: {shown}. Pass --raw the one flat folder that holds them, or {FIX}"
            )
        return files

    def read_sample(self, raw: Path, sample_id: str) -> RawSample:
        """Read one chip: 6-band float32 image (fill -> 0), mask (fill and no-data -> -1), date, centre lat/lon.

        Raises:
            DataError: the files are missing or ambiguous, wrong band count or dtype, values that are not
                reflectance, mask values outside {-1, 0, 1}, image and mask shapes differ, or no date in the name.
        """
        pair, problem = _locate(raw, sample_id, list_files(raw))
        if pair is None:
            raise DataError(f"burn_scars: {problem}; {FIX}")
        img_path, msk_path = pair
        date = parse_date(img_path.name, str(img_path))
        image, fill, lat, lon = _read_image(img_path)
        mask = _read_mask(msk_path)
        if image.shape[1:] != mask.shape:
            raise DataError(
                f"{img_path} is {image.shape[1]}x{image.shape[2]} pixels but {msk_path} is "
                f"{mask.shape[0]}x{mask.shape[1]}; {FIX}"
            )
        mask[fill] = -1
        return RawSample(image=image, mask=mask, date=date, lat=lat, lon=lon)
