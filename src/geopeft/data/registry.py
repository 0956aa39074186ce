"""Datasets by name: their facts (:class:`DatasetInfo`) and the source that reads their raw files.

A dataset module defines a source class (see :class:`DatasetSource`) and registers it::

    @register_dataset("sen1floods11")
    class Sen1Floods11Source: ...

The registry instantiates the class once. The modules named in :data:`BUILTIN_MODULES` are imported on the first
lookup, so ``get_dataset("sen1floods11")`` works without importing the dataset module first.
"""

from __future__ import annotations

import importlib
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np
import numpy.typing as npt

from geopeft.data.normalisation import BandStats
from geopeft.errors import ConfigError, DataError, unknown_choice
from geopeft.registry import Registry
from geopeft.spec import METADATA_KINDS

#: Modules that register the built-in datasets; imported lazily by every lookup.
BUILTIN_MODULES: tuple[str, ...] = (
    "geopeft.data.sen1floods11",
    "geopeft.data.burn_scars",
    "geopeft.data.reben",
    "geopeft.data.geobench",
)

#: Where the official split files ship: ``<SPLITS_ROOT>/<dataset>/<file>.txt``.
SPLITS_ROOT = Path(__file__).resolve().parent / "splits"


@dataclass(frozen=True)
class DatasetInfo:
    """What the rest of geopeft knows about a dataset.

    Args:
        name: registry name, e.g. ``sen1floods11``.
        bands: band names in file order.
        classes: class names; the class index is the position.
        gsd: ground sample distance in metres.
        scale: constant factor applied to the stored values first (1e-4 turns S2 DN into reflectance).
        train_split: name of the training split.
        val_split: name of the validation split (early stopping, checkpoint selection).
        regions: evaluation splits: the in-distribution test split first, then out-of-distribution ones.
        ignore_index: mask value of pixels that no loss or metric counts.
        pad_to: pad samples on the right and bottom to this size after augmentation (image by reflection, mask
            with ``ignore_index``), as reBEN's 120 -> 128; 0 leaves samples as stored.
        metadata: the per-sample metadata every sample's files record, from :data:`geopeft.spec.METADATA_KINDS`:
            ``time`` (acquisition date) and ``location`` (chip centre); a cell may feed only these.
        study_stats: the per-band mean and std (after ``scale``) the study normalises with, with their source;
            ``None`` when none are published (cells then need ``train.normalisation: train_split``).
    """

    name: str = field(metadata={"help": "registry name"})
    bands: tuple[str, ...] = field(metadata={"help": "band names in file order"})
    classes: tuple[str, ...] = field(metadata={"help": "class names by index"})
    gsd: float = field(metadata={"help": "ground sample distance (m)"})
    scale: float = field(metadata={"help": "constant scale applied before standardisation"})
    train_split: str = field(default="train", metadata={"help": "training split"})
    val_split: str = field(default="val", metadata={"help": "validation split"})
    regions: tuple[str, ...] = field(default=("test",), metadata={"help": "evaluation splits"})
    ignore_index: int = field(default=-1, metadata={"help": "ignored mask value"})
    pad_to: int = field(default=0, metadata={"help": "pad right/bottom to this size after augmentation; 0 = none"})
    metadata: tuple[str, ...] = field(default=(), metadata={"help": "metadata kinds the samples record"})
    study_stats: BandStats | None = field(default=None, metadata={"help": "the study's per-band mean/std"})

    def __post_init__(self) -> None:
        for name in ("bands", "classes", "regions"):
            value = tuple(getattr(self, name))
            object.__setattr__(self, name, value)
            if not value or len(set(value)) != len(value):
                raise ConfigError(f"dataset {self.name}: {name} must be non-empty and unique, got {value!r}")
        if len(set(self.splits)) != len(self.splits):
            raise ConfigError(f"dataset {self.name}: split names repeat: {self.splits!r}")
        for name in ("gsd", "scale"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"dataset {self.name}: {name} must be a positive number, got {value!r}")
        object.__setattr__(self, "metadata", tuple(self.metadata))
        if any(kind not in METADATA_KINDS for kind in self.metadata):
            raise ConfigError(f"dataset {self.name}: metadata must come from {METADATA_KINDS}, got {self.metadata}")
        if self.study_stats is not None and not set(self.study_stats.mean) <= set(self.bands):
            extra = sorted(set(self.study_stats.mean) - set(self.bands))
            raise ConfigError(f"dataset {self.name}: study statistics name bands it does not have: {extra}")

    def require_metadata(self, kinds: Sequence[str], where: str = "") -> None:
        """Check that every sample records the metadata ``kinds`` a cell asks for.

        Args:
            kinds: metadata kinds (``model.metadata`` of a cell).
            where: the file or cell asking, prepended to the message.

        Raises:
            ConfigError: a kind the dataset does not record; the message names the ones it does.
        """
        missing = [kind for kind in kinds if kind not in self.metadata]
        if missing:
            prefix = f"{where}: " if where else ""
            has = ", ".join(self.metadata) if self.metadata else "none"
            raise ConfigError(
                f"{prefix}model.metadata asks for {', '.join(missing)}, which dataset {self.name} does not record "
                f"(it records: {has}); drop {', '.join(missing)} from model.metadata or exclude {self.name} "
                "for this model"
            )

    @property
    def splits(self) -> tuple[str, ...]:
        """Every split: train, val, then the regions."""
        return (self.train_split, self.val_split, *self.regions)


@dataclass(frozen=True)
class RawSample:
    """One sample as read from the raw files, before any scaling.

    Args:
        image: ``[C, H, W]`` in the file's band order and native dtype (NaN already replaced by 0).
        mask: ``[H, W]`` int16 class indices, ``-1`` where ignored.
        date: acquisition date-time as ISO 8601 text, or ``None`` when unknown.
        lat: latitude of the raster centre in degrees (EPSG:4326), or ``None``.
        lon: longitude of the raster centre in degrees (EPSG:4326), or ``None``.
    """

    image: npt.NDArray[np.generic]
    mask: npt.NDArray[np.int16]
    date: str | None = None
    lat: float | None = None
    lon: float | None = None


class DatasetSource(Protocol):
    """What the cache builder needs from a dataset: its facts and how to read its native files."""

    info: DatasetInfo
    #: Folder of the official split files, used when ``prepare`` is given no ``splits_dir``.
    default_splits_dir: Path

    def split_file(self, split: str, splits_dir: Path) -> Path:
        """The file listing the sample ids of ``split`` inside ``splits_dir``."""
        ...

    def source_files(self, raw: Path, split: str, ids: Sequence[str]) -> list[Path]:
        """Every raw file the samples ``ids`` are read from (shared files such as metadata included).

        Raises:
            DataError: a sample's file is missing; the message names the file, the split and the fix.
        """
        ...

    def read_sample(self, raw: Path, sample_id: str) -> RawSample:
        """Read and check one sample.

        Raises:
            DataError: the files are malformed (band count, dtype, label values, shapes).
        """
        ...


@runtime_checkable
class NativeSplits(Protocol):
    """Optional: a dataset whose download defines its own splits (GEO-Bench's ``default_partition.json``).

    ``prepare`` without ``splits_dir`` then takes the ids from here instead of from shipped split files.
    """

    def native_splits(self, raw: Path) -> tuple[dict[str, list[str]], bytes]:
        """Split -> sample ids, and the raw bytes of the file that defines them (hashed into the cache key)."""
        ...


_SOURCES: Registry[DatasetSource] = Registry("dataset")
S = TypeVar("S", bound=type[DatasetSource])


def register_dataset(name: str) -> Callable[[S], S]:
    """Class decorator registering an instance of a :class:`DatasetSource` class under ``name``.

    Args:
        name: the registry name; it must equal the ``name`` of the source's :class:`DatasetInfo`.

    Returns:
        The decorator, which returns the class unchanged.

    Raises:
        ValueError: ``name`` is registered twice or differs from ``info.name``.
    """

    def deco(cls: S) -> S:
        source = cls()
        if source.info.name != name:
            raise ValueError(
                f"dataset source {cls.__name__} registered as {name!r} but its info names {source.info.name!r}"
            )
        _SOURCES.add(name, source)
        return cls

    return deco


def _load_builtin() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def get_source(name: str, where: str = "") -> DatasetSource:
    """The registered source of dataset ``name``.

    Args:
        name: dataset registry name.
        where: the file or cell the name came from, named in the error.

    Raises:
        ConfigError: unknown name; the message lists the registered datasets.
    """
    _load_builtin()
    return _SOURCES.get(name, where)


def get_dataset(name: str, where: str = "") -> DatasetInfo:
    """The :class:`DatasetInfo` of dataset ``name``.

    Args:
        name: dataset registry name.
        where: the file or cell the name came from, named in the error.

    Raises:
        ConfigError: unknown name; the message lists the registered datasets.
    """
    return get_source(name, where).info


def dataset_names() -> list[str]:
    """Registered dataset names in registration order."""
    _load_builtin()
    return _SOURCES.names()


def split_file_in(dataset: str, files: Mapping[str, str], split: str, splits_dir: Path) -> Path:
    """``splits_dir / files[split]``: the split file of a dataset whose splits map to fixed file names.

    Raises:
        ConfigError: ``split`` is not one of ``files``; the message names the allowed splits.
    """
    if split not in files:
        raise unknown_choice(f"{dataset} split", split, files)
    return splits_dir / files[split]


def read_split_ids(path: Path, split: str) -> list[str]:
    """Sample ids listed in a split file: one per line, blank lines skipped, surrounding whitespace stripped.

    Args:
        path: the split file.
        split: the split's name, for the error messages.

    Raises:
        DataError: the file is missing, lists no id, or lists an id twice.
    """
    if not path.is_file():
        raise DataError(
            f"split {split}: split file {path} not found; pass the folder that holds it as splits_dir "
            "(or leave splits_dir unset to use the official split files shipped with geopeft)"
        )
    ids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not ids:
        raise DataError(f"split {split}: split file {path} lists no sample; add one sample id per line")
    repeated = sorted(i for i, count in Counter(ids).items() if count > 1)
    if repeated:
        raise DataError(
            f"split {split}: {path} lists sample id(s) {', '.join(repeated)} more than once; remove the repeats"
        )
    return ids


def require_files(dataset: str, split: str, expected: Iterable[tuple[str, Path]], fix: str) -> list[Path]:
    """The expected ``(sample id, file)`` pairs' files, or one error naming the first missing ones.

    Args:
        dataset: dataset name, for the message.
        split: the split whose file named the ids.
        expected: every (id, file) the split needs, in order.
        fix: what to do, appended to the message (e.g. which folder ``--raw`` must name).

    Raises:
        DataError: some files are missing; the first three are named with their ids, then a count.
    """
    files: list[Path] = []
    missing: list[str] = []
    for sample_id, path in expected:
        if path.is_file():
            files.append(path)
        else:
            missing.append(f"{path} (id {sample_id})")
    if missing:
        shown = "; ".join(missing[:3]) + (f"; and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DataError(
            f"{dataset} split {split}: {len(missing)} file(s) named by the split file are missing: {shown}. {fix}"
        )
    return files
