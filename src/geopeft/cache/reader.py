"""The torch ``Dataset`` over one cache file (imports torch; the builder does not).

The HDF5 file is opened lazily, on the first ``__getitem__`` in each process, and the handle is dropped when the
dataset is pickled, so no handle crosses a fork or a spawn into DataLoader workers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from geopeft.cache import schema
from geopeft.cache.build import cache_path
from geopeft.cache.metadata import GSD, Table, metadata_table
from geopeft.data.bands import select_indices
from geopeft.data.registry import get_dataset
from geopeft.data.transforms import D4_SIZE, d4, pad_right_bottom
from geopeft.errors import CacheError, ConfigError, unknown_choice


@dataclass(frozen=True)
class SampleMeta:
    """Per-sample metadata stored in the cache.

    Args:
        id: the sample id from the split file.
        date: acquisition date-time as ISO 8601 text, or ``None`` when unknown.
        lat: latitude of the raster centre (EPSG:4326 degrees), or ``None``.
        lon: longitude of the raster centre, or ``None``.
    """

    id: str
    date: str | None
    lat: float | None
    lon: float | None


class CacheDataset(Dataset[dict[str, Any]]):
    """Samples of one cache file as ``{"image", "mask", "index", "metadata"}``.

    ``image`` is float32 ``[C, H, W]`` in the requested band order: the stored values times the constant scale,
    then standardised with the train split's per-band mean and std. ``mask`` is int64 ``[H, W]`` with ``-1`` for
    ignored pixels. With ``train=True`` each sample gets one of the 8 D4 flips/rotations, the same on image and
    mask, drawn from (seed, epoch, index) as set by :meth:`set_epoch`: the same sample gets the same element in the
    same epoch whatever the worker, rank or resume point. ``metadata`` maps the fields of the
    requested metadata kinds and ``gsd`` to float32 scalars (:mod:`geopeft.cache.metadata`); they are read for every
    sample when the dataset is made, so a sample missing one fails before any training.

    Args:
        header: the checked header of the file (from :func:`geopeft.cache.schema.read_header`).
        bands: band names to return, in this order.
        train: apply D4 augmentation.
        pad_to: pad right/bottom to this size after augmentation (0: none).
        metadata: metadata kinds to return (:data:`geopeft.spec.METADATA_KINDS`); ``gsd`` always comes.

    Raises:
        DataError: a sample lacks a value of a requested kind; the message names the file and the sample id.
    """

    def __init__(
        self,
        header: schema.CacheHeader,
        bands: Sequence[str],
        train: bool,
        pad_to: int = 0,
        metadata: Sequence[str] = (),
    ) -> None:
        if not bands:
            raise ConfigError(
                f"{header.path}: bands must name at least one band; available: {', '.join(header.bands)}"
            )
        self.header = header
        self.path: Path = header.path
        self.key: str = header.key
        self.bands: tuple[str, ...] = tuple(bands)
        self.num_classes: int = len(header.classes)
        self.train = train
        self.pad_to = pad_to
        self.seed, self.epoch = 0, 0
        self._index = select_indices(header.bands, self.bands, str(header.path))
        self._mean = np.asarray(header.mean, dtype=np.float32)[self._index]
        self._std = np.asarray(header.std, dtype=np.float32)[self._index]
        self._mean_t = torch.from_numpy(self._mean).view(-1, 1, 1)
        self._std_t = torch.from_numpy(self._std).view(-1, 1, 1)
        self._scale = float(np.float32(header.scale))
        identity = list(self._index) == list(range(len(header.bands)))
        self._gather = None if identity else torch.as_tensor(self._index, dtype=torch.long)
        self._file: h5py.File | None = None
        self._arrays: tuple[h5py.Dataset, h5py.Dataset] | None = None  # images, masks of ``_file``
        self._pid = -1
        self.metadata_kinds: tuple[str, ...] = tuple(metadata)
        self._gsd = np.float32(header.attrs["gsd"])
        self._meta: Table = self._metadata_table() if self.metadata_kinds else {}

    def _metadata_table(self) -> Table:
        """Every sample's fields of :attr:`metadata_kinds` (the file is opened and closed again)."""
        with schema.open_h5(self.path) as f:
            ids = f[schema.IDS].asstr()[:].tolist()
            dates = f[schema.DATE].asstr()[:].tolist()
            lats, lons = f[schema.LAT][:], f[schema.LON][:]
        hint = self._rebuild_hint()
        fix = f"rebuild the cache from raw files that record it with {hint}, or drop it from model.metadata"
        return metadata_table(self.path, self.metadata_kinds, ids, dates, lats, lons, fix)

    def _rebuild_hint(self) -> str:
        """The ``geopeft prepare`` command that rebuilds this file."""
        return schema.rebuild_hint(str(self.header.attrs["dataset"]), self.path.parent.parent)

    def set_epoch(self, seed: int, epoch: int) -> None:
        """Key the D4 draws of the coming epoch; DataLoader workers copy it when the epoch's iterator starts."""
        self.seed, self.epoch = seed, epoch

    def d4_element(self, i: int) -> int:
        """The D4 element of sample ``i`` in the current (seed, epoch)."""
        return int(np.random.default_rng((self.seed, self.epoch, i % len(self))).integers(D4_SIZE))

    def __len__(self) -> int:
        return self.header.n

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"], state["_arrays"], state["_pid"] = None, None, -1
        return state

    def _h5(self) -> h5py.File:
        """The open file of this process (reopened after a fork)."""
        if self._file is None or self._pid != os.getpid():
            self._file = schema.open_h5(self.path)
            self._arrays = (self._file[schema.IMAGES], self._file[schema.MASKS])
            self._pid = os.getpid()
        return self._file

    def _read(self, i: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """Stored image ``[C, H, W]`` and mask ``[H, W]`` of sample ``i``, each read into a new array."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"{self.path}: index {i} out of range for {len(self)} samples")
        i %= len(self)
        try:
            self._h5()
            assert self._arrays is not None
            images, masks = self._arrays
            raw = np.empty(images.shape[1:], dtype=images.dtype)
            mask = np.empty(masks.shape[1:], dtype=masks.dtype)
            images.read_direct(raw, np.s_[i])
            masks.read_direct(mask, np.s_[i])
        except OSError as exc:
            raise CacheError(
                f"{self.path}: sample {i} cannot be read ({exc}); delete the file and rebuild it with "
                f"{self._rebuild_hint()}"
            ) from None
        return raw, mask

    def _normalise(self, raw: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """:func:`geopeft.data.transforms.normalise` of the selected bands, bit for bit, as a float32 array.

        The same float32 operations in the same order (scale, subtract the mean, divide by the std), as whole-array
        torch kernels. Band selection gathers the stored dtype first, which moves half the bytes of a float32 gather.
        """
        x = torch.from_numpy(raw)
        if self._gather is not None:
            x = x.index_select(0, self._gather)
        # numpy allocates the output (it advises transparent huge pages for large arrays, so a fresh 13.6 MB chip
        # takes far fewer page faults), torch converts into it.
        result: np.ndarray[Any, Any] = np.empty(tuple(x.shape), dtype=np.float32)
        out = torch.from_numpy(result)
        out.copy_(x)
        if self._scale != 1.0:
            out.mul_(self._scale)
        out.sub_(self._mean_t).div_(self._std_t)
        return result

    def __getitem__(self, i: int) -> dict[str, Any]:
        raw, mask = self._read(i)
        if self.train:  # D4 commutes with per-band standardisation: turn the stored dtype, half the bytes of float32
            raw, mask = d4(raw, mask, self.d4_element(i))
        image = self._normalise(raw)
        if self.pad_to:
            image, mask = pad_right_bottom(image, mask, self.pad_to)
        i %= len(self)
        metadata = {name: torch.tensor(values[i]) for name, values in self._meta.items()}
        metadata[GSD] = torch.tensor(self._gsd)
        return {
            "image": torch.from_numpy(image),
            "mask": torch.from_numpy(mask.astype(np.int64)),
            "index": i,
            "metadata": metadata,
        }

    def metadata(self, i: int) -> SampleMeta:
        """Id, date and centre position of sample ``i``."""
        f = self._h5()
        date = f[schema.DATE].asstr()[i]
        lat, lon = float(f[schema.LAT][i]), float(f[schema.LON][i])
        return SampleMeta(
            id=f[schema.IDS].asstr()[i],
            date=date or None,
            lat=None if np.isnan(lat) else lat,
            lon=None if np.isnan(lon) else lon,
        )

    def close(self) -> None:
        """Close this process's file handle (it is reopened on the next access)."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file, self._arrays = None, None


def open_split(
    cache_root: str | os.PathLike[str],
    dataset: str,
    split: str,
    *,
    bands: Sequence[str],
    train: bool,
    metadata: Sequence[str] = (),
) -> CacheDataset:
    """Open the cache of ``dataset``/``split`` for reading.

    Args:
        cache_root: the cache root given to ``prepare``.
        dataset: dataset registry name.
        split: one of the dataset's splits (train, val or a region).
        bands: band names to return, in this order.
        train: apply D4 augmentation (use it for the train split only).
        metadata: metadata kinds each sample carries (``model.metadata``); ``gsd`` always comes.

    Raises:
        ConfigError: unknown dataset, split or band, or metadata the dataset does not record.
        DataError: a sample lacks a value of a requested metadata kind.
        CacheError: the file is missing, corrupt or of another builder version; the message names the file and
            the ``geopeft prepare`` command that rebuilds it.
    """
    info = get_dataset(dataset, "open_split")
    if split not in info.splits:
        raise unknown_choice(f"{dataset} split", split, info.splits, "open_split")
    info.require_metadata(metadata, "open_split")
    header = schema.read_header(cache_path(cache_root, dataset, split), dataset, split, cache_root)
    return CacheDataset(header, bands, train, pad_to=info.pad_to, metadata=metadata)
