"""Sen1Floods11 hand-labelled Sentinel-2 chips: the native GeoTIFF reader (spec/study.md §3.1).

Layout under the raw root (the folder that holds ``v1.1/``)::

    v1.1/data/flood_events/HandLabeled/S2Hand/<Country>_<id>_S2Hand.tif        13 bands, S2 L1C DN
    v1.1/data/flood_events/HandLabeled/LabelHand/<Country>_<id>_LabelHand.tif  1 band, -1 / 0 / 1
    v1.1/Sen1Floods11_Metadata.geojson                                         optional: location, s2_date

Split files list ids such as ``Ghana_103272``; the official ones ship with geopeft. The date of a sample is the
``s2_date`` of its location (the id's country prefix; ``Mekong`` chips are ``Cambodia`` in the metadata) at 12:00,
and its position is the centre pixel of the raster in EPSG:4326.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geopeft.data.bands import S2_BANDS
from geopeft.data.geotiff import centre_lat_lon, open_geotiff
from geopeft.data.normalisation import BandStats
from geopeft.data.registry import SPLITS_ROOT, DatasetInfo, RawSample, register_dataset, require_files, split_file_in
from geopeft.errors import DataError

#: The study's per-band mean and std of the scaled values (``MEANS``/``STDS`` of IBM/peft-geofm
#: ``src/peft_geofm/datamodules/sen1floods11.py`` at 5fe258d; also in the
#: study's ``reference/normalisation.json``).
STUDY_STATS = BandStats(
    mean={
        "COASTAL_AEROSOL": 0.16450718,
        "BLUE": 0.1412956,
        "GREEN": 0.13795798,
        "RED": 0.12353792,
        "RED_EDGE_1": 0.1481099,
        "RED_EDGE_2": 0.23991728,
        "RED_EDGE_3": 0.28587557,
        "NIR_BROAD": 0.26345379,
        "NIR_NARROW": 0.30902815,
        "WATER_VAPOR": 0.04911151,
        "CIRRUS": 0.00652506,
        "SWIR_1": 0.2044958,
        "SWIR_2": 0.11912015,
    },
    std={
        "COASTAL_AEROSOL": 0.06977374,
        "BLUE": 0.07406382,
        "GREEN": 0.07370365,
        "RED": 0.08692279,
        "RED_EDGE_1": 0.07778555,
        "RED_EDGE_2": 0.09105416,
        "RED_EDGE_3": 0.10690993,
        "NIR_BROAD": 0.10096586,
        "NIR_NARROW": 0.11798815,
        "WATER_VAPOR": 0.03380113,
        "CIRRUS": 0.01463465,
        "SWIR_1": 0.09772074,
        "SWIR_2": 0.07659938,
    },
    source="IBM/peft-geofm src/peft_geofm/datamodules/sen1floods11.py at 5fe258d (MEANS/STDS)",
)

INFO = DatasetInfo(
    name="sen1floods11",
    bands=S2_BANDS,
    classes=("Not water", "Water"),
    gsd=10.0,
    scale=1e-4,
    regions=("test", "bolivia"),
    metadata=("time", "location"),  # the date needs v1.1/Sen1Floods11_Metadata.geojson at prepare time
    study_stats=STUDY_STATS,
)

#: Split name -> file name, as in the authors' ``datasets_splits/sen1floods11/``.
SPLIT_FILES: dict[str, str] = {
    "train": "train_data.txt",
    "val": "valid_data.txt",
    "test": "test_data.txt",
    "bolivia": "bolivia_data.txt",
}
HAND_DIR = Path("v1.1") / "data" / "flood_events" / "HandLabeled"
METADATA_FILE = Path("v1.1") / "Sen1Floods11_Metadata.geojson"
#: Country prefix of a chip id -> ``location`` in the metadata, where the two differ.
LOCATION_ALIASES: dict[str, str] = {"Mekong": "Cambodia"}
IMAGE_DTYPES = ("int16", "uint16", "float32", "float64")
LABEL_VALUES = (-1, 0, 1)
FIX = "re-download it from gs://sen1floods11 (v1.1, HandLabeled) or remove the id from the split file"


def image_path(raw: Path, sample_id: str) -> Path:
    """The ``S2Hand`` GeoTIFF of ``sample_id``."""
    return raw / HAND_DIR / "S2Hand" / f"{sample_id}_S2Hand.tif"


def label_path(raw: Path, sample_id: str) -> Path:
    """The ``LabelHand`` GeoTIFF of ``sample_id``."""
    return raw / HAND_DIR / "LabelHand" / f"{sample_id}_LabelHand.tif"


def parse_date(text: str, where: str) -> str:
    """Turn an ``s2_date`` (``2019-03-12``, ``2019/03/12``, optionally with a time) into ISO text at 12:00.

    Args:
        text: the date as written in the metadata.
        where: the file it came from, named in the error.

    Raises:
        DataError: the text is not a date.
    """
    try:
        day = dt.date.fromisoformat(str(text).strip().replace("/", "-")[:10])
    except ValueError:
        raise DataError(f"{where}: s2_date {text!r} is not a date (expected YYYY-MM-DD); {FIX}") from None
    return f"{day.isoformat()}T12:00:00"


def read_dates(path: Path) -> dict[str, str]:
    """Location -> ISO date-time from the metadata GeoJSON; a location listed with two dates is left out.

    Raises:
        DataError: the file is not GeoJSON with ``features[*].properties.location``.
    """
    try:
        doc: Any = json.loads(path.read_text(encoding="utf-8"))
        features = doc["features"]
        pairs = [(str(f["properties"]["location"]), f["properties"].get("s2_date")) for f in features]
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a Sen1Floods11 metadata GeoJSON ({exc!r}); {FIX}") from None
    dates: dict[str, str | None] = {}
    for location, raw_date in pairs:
        date = None if raw_date in (None, "") else parse_date(str(raw_date), str(path))
        dates[location] = date if dates.get(location, date) == date else None
    return {loc: date for loc, date in dates.items() if date is not None}


@register_dataset("sen1floods11")
class Sen1Floods11Source:
    """Reads Sen1Floods11 hand-labelled S2 chips from their GeoTIFFs (registered as ``sen1floods11``)."""

    info = INFO
    default_splits_dir = SPLITS_ROOT / "sen1floods11"

    def __init__(self) -> None:
        self._dates: dict[tuple[Path, int, int], dict[str, str]] = {}

    def split_file(self, split: str, splits_dir: Path) -> Path:
        """The split file of ``split`` (``val`` is ``valid_data.txt``)."""
        return split_file_in("sen1floods11", SPLIT_FILES, split, splits_dir)

    def source_files(self, raw: Path, split: str, ids: Sequence[str]) -> list[Path]:
        """Image and label files of ``ids`` plus the metadata GeoJSON when present.

        Raises:
            DataError: an id has no image or no label file; names the first missing files and the split.
        """
        expected = ((i, p) for i in ids for p in (image_path(raw, i), label_path(raw, i)))
        files = require_files("sen1floods11", split, expected, f"Pass --raw the folder that holds v1.1/, or {FIX}")
        metadata = raw / METADATA_FILE
        if metadata.is_file():
            files.append(metadata)
        return files

    def read_sample(self, raw: Path, sample_id: str) -> RawSample:
        """Read one chip: 13-band image (NaN -> 0), mask (NaN and no-data -> -1), date, centre lat/lon.

        Raises:
            DataError: wrong band count or dtype, label values outside {-1, 0, 1}, or image/label shapes differ.
        """
        img_path, lab_path = image_path(raw, sample_id), label_path(raw, sample_id)
        with open_geotiff(img_path, FIX) as src:
            if src.count != len(INFO.bands):
                raise DataError(
                    f"{img_path}: {src.count} band(s), expected the {len(INFO.bands)} Sentinel-2 bands "
                    f"{', '.join(INFO.bands)}; {FIX}"
                )
            if len(set(src.dtypes)) != 1 or src.dtypes[0] not in IMAGE_DTYPES:
                raise DataError(
                    f"{img_path}: dtype {'/'.join(sorted(set(src.dtypes)))}, expected one of {IMAGE_DTYPES}; {FIX}"
                )
            image = src.read()
            lat, lon = centre_lat_lon(src)
        with open_geotiff(lab_path, FIX) as src:
            if src.count != 1:
                raise DataError(f"{lab_path}: {src.count} bands, expected 1 label band; {FIX}")
            label = src.read(1)
        if image.shape[1:] != label.shape:
            raise DataError(
                f"{img_path} is {image.shape[1]}x{image.shape[2]} pixels but {lab_path} is "
                f"{label.shape[0]}x{label.shape[1]}; {FIX}"
            )
        ignored = np.zeros(label.shape, dtype=bool)
        if np.issubdtype(image.dtype, np.floating):
            ignored |= np.isnan(image).any(axis=0)
            image = np.nan_to_num(image, nan=0.0).astype(np.float32)
        if np.issubdtype(label.dtype, np.floating):
            ignored |= np.isnan(label)
            label = np.nan_to_num(label, nan=-1.0)
        values = np.unique(label)
        bad = [v.item() for v in values if v not in LABEL_VALUES]
        if bad:
            raise DataError(f"{lab_path}: label value(s) {bad[:5]} outside {{-1, 0, 1}} (dtype {label.dtype}); {FIX}")
        mask = label.astype(np.int16)
        mask[ignored] = -1
        return RawSample(image=image, mask=mask, date=self._date(raw, sample_id), lat=lat, lon=lon)

    def _date(self, raw: Path, sample_id: str) -> str | None:
        path = raw / METADATA_FILE
        if not path.is_file():
            return None
        stat = path.stat()
        key = (path, stat.st_size, stat.st_mtime_ns)
        if key not in self._dates:
            self._dates[key] = read_dates(path)
        country = sample_id.rsplit("_", 1)[0]
        return self._dates[key].get(LOCATION_ALIASES.get(country, country))
