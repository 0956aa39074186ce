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
from geopeft.cache.build import cache_path, move_aside
from geopeft.cache.metadata import GSD, Table, metadata_table
from geopeft.data.bands import select_indices
from geopeft.data.registry import get_dataset
from geopeft.data.transforms import D4_SIZE
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


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at ``path``; None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class CacheDataset(Dataset[dict[str, Any]]):
    """Samples of one cache file as ``{"image", "mask", "index", "metadata"}``, in the stored dtype.

    ``image`` is ``[C, H, W]`` in the stored dtype (int16, uint16 or float32, as the cache holds it) and in the
    requested band order; ``mask`` is int16 ``[H, W]`` with ``-1`` for ignored pixels. Scaling, standardisation and
    padding happen batch-wise on the device (:mod:`geopeft.train.preprocess`), as the study does them, so a worker
    moves half the bytes of float32 for int16 data. With ``train=True`` each sample gets one of the 8 D4
    flips/rotations, the same on image and mask, drawn from (seed, epoch, index) as set by :meth:`set_epoch`: the
    same sample gets the same element in the same epoch whatever the worker, rank or resume point. ``metadata``
    maps the fields of the requested metadata kinds and ``gsd`` to float32 scalars (:mod:`geopeft.cache.metadata`);
    they are read for every sample when the dataset is made, so a sample missing one fails before any training.

    :meth:`read_batch` reads a whole batch straight into its batch arrays (what the loaders use: no per-sample
    tensors, no collate copy); ``ds[i]`` is one sample, as a plain map-style dataset.

    Args:
        header: the checked header of the file (from :func:`geopeft.cache.schema.read_header`).
        bands: band names to return, in this order.
        train: apply D4 augmentation (square samples only).
        metadata: metadata kinds to return (:data:`geopeft.spec.METADATA_KINDS`); ``gsd`` always comes.

    Raises:
        ConfigError: no band, an unknown band, or ``train`` on samples that are not square.
        DataError: a sample lacks a value of a requested kind; the message names the file and the sample id.
    """

    def __init__(
        self,
        header: schema.CacheHeader,
        bands: Sequence[str],
        train: bool,
        metadata: Sequence[str] = (),
    ) -> None:
        if not bands:
            raise ConfigError(
                f"{header.path}: bands must name at least one band; available: {', '.join(header.bands)}"
            )
        _, height, width = header.shape
        if train and height != width:
            raise ConfigError(
                f"{header.path}: D4 augmentation needs square samples, this cache holds {height}x{width}; "
                "rebuild it from square chips"
            )
        self.header = header
        self.path: Path = header.path
        self.key: str = header.key
        self.bands: tuple[str, ...] = tuple(bands)
        self.num_classes: int = len(header.classes)
        self.train = train
        self.seed, self.epoch = 0, 0
        self._index = select_indices(header.bands, self.bands, str(header.path))
        self._identity = list(self._index) == list(range(len(header.bands)))
        self._gather = torch.as_tensor(self._index, dtype=torch.long)
        self.dtype = np.dtype(header.dtype)
        #: ``(C, H, W)`` of one returned image.
        self.shape: tuple[int, int, int] = (len(self.bands), height, width)
        self._file: h5py.File | None = None
        self._arrays: tuple[h5py.Dataset, h5py.Dataset] | None = None  # images, masks of ``_file``
        self._scratch: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]] | None = None  # one stored sample
        self._pid = -1
        self._opened: tuple[int, int] | None = None  # (device, inode) of the file ``_file`` opened
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
        state["_file"], state["_arrays"], state["_scratch"], state["_pid"] = None, None, None, -1
        return state

    def _h5(self) -> h5py.File:
        """The open file of this process (reopened after a fork)."""
        if self._file is None or self._pid != os.getpid():
            self._file = schema.open_h5(self.path)
            self._arrays = (self._file[schema.IMAGES], self._file[schema.MASKS])
            self._scratch = None
            self._pid = os.getpid()
            self._opened = _identity(self.path)
        return self._file

    def _position(self, i: int) -> int:
        if not -len(self) <= i < len(self):
            raise IndexError(f"{self.path}: index {i} out of range for {len(self)} samples")
        return i % len(self)

    def _fill(self, i: int, image: np.ndarray[Any, Any], mask: np.ndarray[Any, Any]) -> None:
        """Read sample ``i`` (a valid position) into ``image`` ``[C, H, W]`` and ``mask`` ``[H, W]``, augmented.

        The common case, no band selection and the identity element, reads straight into ``image``; otherwise the
        stored sample is read into a per-process scratch buffer and written once, selected and turned, into place.
        """
        k = self.d4_element(i) if self.train else 0
        try:
            self._h5()
            assert self._arrays is not None
            images, masks = self._arrays
            if k == 0 and self._identity:
                images.read_direct(image, np.s_[i])
                masks.read_direct(mask, np.s_[i])
                return
            if self._scratch is None:
                self._scratch = (np.empty(images.shape[1:], images.dtype), np.empty(masks.shape[1:], masks.dtype))
            raw, raw_mask = self._scratch
            images.read_direct(raw, np.s_[i])
            masks.read_direct(raw_mask, np.s_[i])
        except OSError as exc:
            raise self._unreadable(i, exc) from None
        x = torch.from_numpy(raw)
        if not self._identity:
            x = x.index_select(0, self._gather)  # on the stored dtype: half the bytes of float32
        d4_into(x, k, torch.from_numpy(image))
        d4_into(torch.from_numpy(raw_mask), k, torch.from_numpy(mask))

    def _unreadable(self, i: int, exc: OSError) -> CacheError:
        """The error of sample ``i`` that cannot be read; a corrupt file is moved aside first.

        Corrupt means that reading the sample again fails as well, in the file this process opened, still at its
        path (not replaced by a rebuild meanwhile). It is moved to ``<split>.corrupt-<UTC time>.h5``, as ``geopeft
        prepare`` moves a corrupt file, so that the cache counts as missing: ``geopeft rerun`` then rebuilds it before
        the cells run again (a prepare job on SLURM), instead of running them on the corrupt file once more.
        """
        fix = f"delete the file and rebuild it with {self._rebuild_hint()}"
        if self._opened is not None and self._opened == _identity(self.path) and not self._readable(i):
            try:
                aside = move_aside(self.path)
            except OSError:  # another process moved it first
                aside = None
            if aside is not None:
                fix = (
                    f"moved to {aside.name}; geopeft rerun rebuilds it before the cells run again (SLURM), "
                    f"or rebuild it with {self._rebuild_hint()}"
                )
        return CacheError(f"{self.path}: sample {i} cannot be read ({exc}); {fix}")

    def _readable(self, i: int) -> bool:
        """Whether sample ``i`` reads (again) from the open file."""
        if self._arrays is None:
            return False
        images, masks = self._arrays
        try:
            images.read_direct(np.empty(images.shape[1:], images.dtype), np.s_[i])
            masks.read_direct(np.empty(masks.shape[1:], masks.dtype), np.s_[i])
        except OSError:
            return False
        return True

    def read_batch(self, indices: Sequence[int]) -> dict[str, Any]:
        """Samples ``indices`` as one batch, each augmented as ``ds[i]`` is.

        Returns ``image`` ``[B, C, H, W]`` (stored dtype), ``mask`` ``[B, H, W]`` int16, ``index`` ``[B]`` int64 and
        ``metadata`` (``[B]`` float32 per field).
        """
        positions = [self._position(int(i)) for i in indices]
        image = np.empty((len(positions), *self.shape), dtype=self.dtype)
        mask = np.empty((len(positions), *self.shape[1:]), dtype=schema.MASK_DTYPE)
        for j, i in enumerate(positions):
            self._fill(i, image[j], mask[j])
        metadata = {name: torch.from_numpy(values[positions]) for name, values in self._meta.items()}
        metadata[GSD] = torch.full((len(positions),), float(self._gsd), dtype=torch.float32)
        return {
            "image": torch.from_numpy(image),
            "mask": torch.from_numpy(mask),
            "index": torch.tensor(positions, dtype=torch.int64),
            "metadata": metadata,
        }

    def __getitem__(self, i: int) -> dict[str, Any]:
        batch = self.read_batch([i])
        return {
            "image": batch["image"][0],
            "mask": batch["mask"][0],
            "index": int(batch["index"][0]),
            "metadata": {name: values[0] for name, values in batch["metadata"].items()},
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


#: Each D4 element of :func:`geopeft.data.transforms.d4` as (flip rows, flip columns, then transpose): the order in
#: which torch applies it with one strided read for the transposes (tested against ``d4`` for all eight).
D4_PARTS: dict[int, tuple[bool, bool, bool]] = {
    0: (False, False, False),
    1: (False, True, True),
    2: (True, True, False),
    3: (True, False, True),
    4: (False, True, False),
    5: (True, True, True),
    6: (True, False, False),
    7: (False, False, True),
}


def d4_into(x: torch.Tensor, k: int, out: torch.Tensor) -> None:
    """Write element ``k`` of D4 of ``x`` (``[C, H, W]`` or ``[H, W]``, square) into ``out``, as ``d4`` defines it.

    Flips first (contiguous reads), then the transpose of an odd element plane by plane, where torch's 2-D transposing
    copy runs about twice as fast as numpy's ``rot90`` copy on int16 (``bench/cache_read.py`` prints each element's
    cost).
    """
    flip_rows, flip_cols, transpose = D4_PARTS[k]
    h, w = x.ndim - 2, x.ndim - 1
    dims = [d for d, flip in ((h, flip_rows), (w, flip_cols)) if flip]
    y = x.flip(dims) if dims else x
    if not transpose:
        out.copy_(y)
    elif x.ndim == 2:
        out.copy_(y.t())
    else:
        for c in range(x.shape[0]):
            out[c].copy_(y[c].t())


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
    return CacheDataset(header, bands, train, metadata=metadata)
