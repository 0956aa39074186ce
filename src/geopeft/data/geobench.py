"""GEO-Bench v1 segmentation datasets m-cashew-plantation and m-SA-crop-type: the native HDF5 reader.

Facts: spec/study.md §3.4-3.5. Layout under the raw root (GEO-Bench's ``segmentation_v1.0`` folder)::

    m-cashew-plant/<sample_id>.hdf5             one 2-D dataset per band, plus ``label`` (class indices)
    m-cashew-plant/default_partition.json       {"train": [ids], "valid": [ids], "test": [ids]}
    m-SA-crop-type/<sample_id>.hdf5             the same layout
    m-SA-crop-type/default_partition.json

As in TerraTorch's ``MBeninSmallHolderCashewsNonGeo`` and ``MSACropTypeNonGeo``, the band keys of a sample are
sorted, ``label`` is removed, and that sorted order is the band order: the 12 Sentinel-2 bands without cirrus, then
the cloud probability. GEO-Bench's ``write_sample_hdf5`` names each dataset after its band (``"02 - Blue"``,
``"08A - Vegetation Red Edge"``, ``"Cloud Probability"``, ...) with ``_YYYY-MM-DD`` appended when the band has a date
(m-cashew-plantation; m-SA-crop-type has none). The date of a sample is the first such date in key order, at
00:00 as TerraTorch parses it; GEO-Bench stores no location, so lat/lon are unknown.

GEO-Bench's splits are its default partition. The cache builder reads text split files, so
:meth:`GeoBenchSource.write_split_files` writes the partition as ``train.txt``/``valid.txt``/``test.txt`` (pass that
folder as ``splits_dir``); :meth:`GeoBenchSource.source_files` checks that the split files agree with the partition.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from geopeft.data.bands import S2_BANDS
from geopeft.data.geobench_stats import CASHEW_STATS, SA_CROP_STATS
from geopeft.data.registry import SPLITS_ROOT, DatasetInfo, RawSample, register_dataset, require_files
from geopeft.errors import DataError, unknown_choice

#: Band names in the sorted key order of a GEO-Bench sample: S2 without cirrus, then the cloud probability.
GEOBENCH_BANDS: tuple[str, ...] = (*(b for b in S2_BANDS if b != "CIRRUS"), "CLOUD_PROBABILITY")
#: The code each sorted band key must carry (``"08A - Vegetation Red Edge_2019-11-15"`` -> ``"08A"``).
BAND_CODES: tuple[str, ...] = ("01", "02", "03", "04", "05", "06", "07", "08", "08A", "09", "11", "12", "CLOUD")
LABEL_KEY = "label"
PARTITION_FILE = "default_partition.json"
#: geopeft split -> key of the partition file and stem of the exported split file.
PARTITION_KEYS: dict[str, str] = {"train": "train", "val": "valid", "test": "test"}
SPLIT_FILES: dict[str, str] = {split: f"{key}.txt" for split, key in PARTITION_KEYS.items()}
IMAGE_DTYPES = ("int16", "uint16", "float32", "float64")
DATE_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}")

# Class names from GEO-Bench's converters (benin_smallholder_cashews.py LABELS, crop_type_south_africa.py
# crop_labels). Class 0 ("no data") is a class like the others: only -1 is ignored.
CASHEW_INFO = DatasetInfo(
    name="m_cashew_plantation",
    bands=GEOBENCH_BANDS,
    classes=(
        "no data",
        "well-managed plantation",
        "poorly-managed plantation",
        "non-plantation",
        "residential",
        "background",
        "uncertain",
    ),
    gsd=10.0,
    scale=1.0,
    metadata=("time",),  # dated band keys; GEO-Bench stores no location
    study_stats=CASHEW_STATS,
)
SA_CROP_INFO = DatasetInfo(
    name="m_sa_crop_type",
    bands=GEOBENCH_BANDS,
    classes=(
        "No Data",
        "Lucerne/Medics",
        "Planted pastures (perennial)",
        "Fallow",
        "Wine grapes",
        "Weeds",
        "Small grain grazing",
        "Wheat",
        "Canola",
        "Rooibos",
    ),
    gsd=10.0,
    scale=1.0,
    study_stats=SA_CROP_STATS,
)


def band_code(key: str) -> str:
    """The band code of an HDF5 key: ``"02 - Blue_2019-11-17"`` -> ``"02"``, ``"Cloud Probability"`` -> ``"CLOUD"``."""
    if key.replace("_", " ").strip().lower().startswith("cloud"):
        return "CLOUD"
    return key.split(" - ", 1)[0].strip().upper()


def parse_key_date(keys: Sequence[str], where: Path) -> str | None:
    """The first ``YYYY-MM-DD`` found in ``keys`` as ISO date-time at 00:00, or ``None`` when no key has one.

    Raises:
        DataError: the first date-like text is not a calendar date.
    """
    for key in keys:
        match = DATE_PATTERN.search(key)
        if match:
            try:
                day = dt.date.fromisoformat(match.group())
            except ValueError:
                raise DataError(f"{where}: band key {key!r} carries {match.group()!r}, not a calendar date") from None
            return f"{day.isoformat()}T00:00:00"
    return None


def _dataset_2d(f: h5py.File, key: str, path: Path, fix: str) -> npt.NDArray[Any]:
    """The 2-D array stored under ``key``."""
    node = f[key]
    if not isinstance(node, h5py.Dataset) or node.ndim != 2:
        shape = getattr(node, "shape", "a group")
        raise DataError(f"{path}: {key!r} is {shape}, expected one 2-D array (height x width); {fix}")
    data: npt.NDArray[Any] = node[()]
    return data


def _mask(label: npt.NDArray[Any], classes: int, path: Path, fix: str) -> npt.NDArray[np.int16]:
    """Label array -> int16 mask; NaN -> -1; values outside ``-1..classes-1`` raise."""
    if label.dtype.kind == "f":
        nan = np.isnan(label)
        if (label[~nan] != np.round(label[~nan])).any():
            raise DataError(f"{path}: label holds non-integer values (dtype {label.dtype}); {fix}")
        label = np.where(nan, -1, label)
    elif label.dtype.kind not in "iu":
        raise DataError(f"{path}: label has dtype {label.dtype}, expected integer class indices; {fix}")
    values = np.unique(label)
    bad = [v.item() for v in values if not -1 <= v < classes]
    if bad:
        raise DataError(
            f"{path}: label value(s) {bad[:5]} outside -1..{classes - 1} (the {classes} classes, -1 = ignored); {fix}"
        )
    return label.astype(np.int16)


class GeoBenchSource:
    """Reads one GEO-Bench v1 segmentation dataset from its per-sample HDF5 files.

    Subclasses set ``info``, ``folder`` (the dataset's folder under the raw root), ``dated`` (whether band keys
    carry the acquisition date) and ``default_splits_dir``.
    """

    info: DatasetInfo
    folder: str
    dated: bool
    default_splits_dir: Path

    def __init__(self) -> None:
        self._partitions: dict[tuple[Path, int, int], dict[str, list[str]]] = {}

    @property
    def fix(self) -> str:
        """How to repair a broken sample, appended to the errors."""
        return f"re-download GEO-Bench v1.0 (segmentation_v1.0/{self.folder}) or remove the id from the split file"

    def sample_path(self, raw: Path, sample_id: str) -> Path:
        """The HDF5 file of ``sample_id``."""
        return raw / self.folder / f"{sample_id}.hdf5"

    def partition_path(self, raw: Path) -> Path:
        """The default partition file of the dataset."""
        return raw / self.folder / PARTITION_FILE

    def read_partition(self, raw: Path) -> dict[str, list[str]]:
        """Split (``train``, ``val``, ``test``) -> sample ids of the default partition.

        Raises:
            DataError: the file is missing or not a partition (a key missing, ids repeated or in two splits).
        """
        path = self.partition_path(raw)
        if not path.is_file():
            raise DataError(
                f"{self.info.name}: partition file {path} not found; pass --raw the GEO-Bench segmentation_v1.0 "
                f"folder that holds {self.folder}/ ({PARTITION_FILE} and the <sample id>.hdf5 files)"
            )
        stat = path.stat()
        key = (path, stat.st_size, stat.st_mtime_ns)
        if key not in self._partitions:
            self._partitions[key] = self._parse_partition(path)
        return self._partitions[key]

    def _parse_partition(self, path: Path) -> dict[str, list[str]]:
        expected = f'expected {{"train": [ids], "valid": [ids], "test": [ids]}}; {self.fix}'
        try:
            doc: Any = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: not JSON ({exc}); {expected}") from None
        if not isinstance(doc, dict):
            raise DataError(f"{path}: holds a {type(doc).__name__}, {expected}")
        partition: dict[str, list[str]] = {}
        for split, name in PARTITION_KEYS.items():
            ids = doc.get(name)
            if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
                raise DataError(f"{path}: {name!r} is missing or not a non-empty list of sample ids; {expected}")
            partition[split] = ids
        counts = Counter(i for ids in partition.values() for i in ids)
        repeated = sorted(i for i, n in counts.items() if n > 1)
        if repeated:
            raise DataError(f"{path}: sample id(s) {', '.join(repeated[:5])} listed more than once; {self.fix}")
        return partition

    def native_splits(self, raw: Path) -> tuple[dict[str, list[str]], bytes]:
        """The default partition (``prepare`` uses it when given no split files) and its file's bytes."""
        return self.read_partition(raw), self.partition_path(raw).read_bytes()

    def write_split_files(self, raw: Path, out: Path) -> Path:
        """Write the default partition as split files (``train.txt``, ``valid.txt``, ``test.txt``) into ``out``.

        Returns:
            ``out``, to pass to ``prepare`` as ``splits_dir``.

        Raises:
            DataError: the partition file is missing or malformed.
        """
        partition = self.read_partition(raw)
        out.mkdir(parents=True, exist_ok=True)
        for split, file_name in SPLIT_FILES.items():
            (out / file_name).write_text("".join(f"{i}\n" for i in partition[split]), encoding="utf-8")
        return out

    def split_file(self, split: str, splits_dir: Path) -> Path:
        """The split file of ``split`` (``val`` is ``valid.txt``, after the partition key).

        Raises:
            ConfigError: unknown split.
            DataError: ``splits_dir`` is the default folder, where geopeft ships no split files for GEO-Bench.
        """
        if split not in SPLIT_FILES:
            raise unknown_choice(f"{self.info.name} split", split, SPLIT_FILES)
        path = splits_dir / SPLIT_FILES[split]
        if splits_dir == self.default_splits_dir and not path.is_file():
            raise DataError(
                f"{self.info.name}: geopeft ships no split files for this dataset; its splits are GEO-Bench's default "
                f"partition <RAW>/{self.folder}/{PARTITION_FILE}. Write them as split files with "
                f"get_source({self.info.name!r}).write_split_files(RAW, OUT) and pass --splits OUT "
                f"(`geopeft synth {self.info.name}` writes them next to its synthetic data)"
            )
        return path

    def source_files(self, raw: Path, split: str, ids: Sequence[str]) -> list[Path]:
        """The partition file and the HDF5 file of every id.

        Raises:
            DataError: the partition file is missing; an id has no HDF5 file (names the first missing files and the
                split); or the split file lists ids that the partition does not put in this split.
        """
        partition = self.read_partition(raw)
        files = require_files(
            self.info.name,
            split,
            ((i, self.sample_path(raw, i)) for i in ids),
            f"Pass --raw the folder that holds {self.folder}/, or {self.fix}",
        )
        allowed = set(partition.get(split, ()))
        outside = [i for i in ids if i not in allowed]
        if outside:
            raise DataError(
                f"{self.info.name} split {split}: id(s) {', '.join(outside[:5])} are not in the "
                f"{PARTITION_KEYS.get(split, split)!r} list of {self.partition_path(raw)}; GEO-Bench's splits are its "
                "default partition: write the split files from it with write_split_files(RAW, OUT)"
            )
        return [self.partition_path(raw), *files]

    def read_sample(self, raw: Path, sample_id: str) -> RawSample:
        """Read one sample: 13 bands in sorted key order (NaN -> 0), its mask (NaN -> -1) and, if dated, its date.

        Raises:
            DataError: unreadable file, no ``label``, wrong band count, names or dtype, shapes that differ, or label
                values outside the classes.
        """
        path = self.sample_path(raw, sample_id)
        try:
            with h5py.File(path, "r") as f:
                keys = sorted(f.keys())
                if LABEL_KEY not in keys:
                    raise DataError(f"{path}: no {LABEL_KEY!r} dataset among {keys}; {self.fix}")
                band_keys = [k for k in keys if k != LABEL_KEY]
                self._check_band_keys(path, band_keys)
                bands = [_dataset_2d(f, k, path, self.fix) for k in band_keys]
                label = _dataset_2d(f, LABEL_KEY, path, self.fix)
        except OSError as exc:
            raise DataError(f"{path}: cannot be read as HDF5 ({exc}); {self.fix}") from None
        for key, band in zip(band_keys, bands, strict=True):
            if band.dtype.name not in IMAGE_DTYPES:
                raise DataError(
                    f"{path}: band {key!r} has dtype {band.dtype}, expected one of {IMAGE_DTYPES}; {self.fix}"
                )
            if band.shape != label.shape:
                raise DataError(
                    f"{path}: band {key!r} is {band.shape[0]}x{band.shape[1]} pixels but {LABEL_KEY!r} is "
                    f"{label.shape[0]}x{label.shape[1]}; {self.fix}"
                )
        image = np.stack(bands)
        ignored = np.zeros(label.shape, dtype=bool)
        if image.dtype.kind == "f":
            ignored |= np.isnan(image).any(axis=0)
            image = np.nan_to_num(image, nan=0.0).astype(np.float32)
        mask = _mask(label, len(self.info.classes), path, self.fix)
        mask[ignored] = -1
        date = parse_key_date(band_keys, path) if self.dated else None
        return RawSample(image=image, mask=mask, date=date)

    def _check_band_keys(self, path: Path, band_keys: Sequence[str]) -> None:
        codes = tuple(band_code(k) for k in band_keys)
        if codes != BAND_CODES:
            raise DataError(
                f"{path}: {len(band_keys)} band(s) {list(band_keys)}, expected the {len(BAND_CODES)} GEO-Bench bands "
                f"{', '.join(BAND_CODES)} (Sentinel-2 without cirrus, then the cloud probability) plus "
                f"{LABEL_KEY!r}; {self.fix}"
            )


@register_dataset("m_cashew_plantation")
class CashewPlantationSource(GeoBenchSource):
    """GEO-Bench m-cashew-plantation (Benin), 7 classes, dated band keys (registered as ``m_cashew_plantation``)."""

    info = CASHEW_INFO
    folder = "m-cashew-plant"
    dated = True
    default_splits_dir = SPLITS_ROOT / "m_cashew_plantation"


@register_dataset("m_sa_crop_type")
class SACropTypeSource(GeoBenchSource):
    """GEO-Bench m-SA-crop-type (South Africa), 10 classes, no date (registered as ``m_sa_crop_type``)."""

    info = SA_CROP_INFO
    folder = "m-SA-crop-type"
    dated = False
    default_splits_dir = SPLITS_ROOT / "m_sa_crop_type"
