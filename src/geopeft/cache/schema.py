"""The HDF5 cache layout, its version, its key, and the header check every reader and the builder share.

One file per dataset x split, ``<cache_root>/<dataset>/<split>.h5``::

    images  (N, C, H, W)  native dtype, one sample per chunk, compressed by the codec (see CODECS), Fletcher-32 checked
    masks   (N, H, W)     int16, -1 = ignored
    ids     (N,)          sample ids (UTF-8)
    date    (N,)          acquisition date-time, ISO 8601 ("" when unknown)
    lat/lon (N,)          raster centre in EPSG:4326 degrees (NaN when unknown)
    attrs   IDENTITY_ATTRS (what the file was built from) + CONTENT_ATTRS (train statistics, n) + key

``key`` is a hash of all identity and content attributes: two files with the same key hold the same data.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from geopeft.data.normalisation import BandStats
from geopeft.errors import CacheError

#: Bumped whenever the layout or the meaning of a stored value changes; readers refuse other versions.
BUILDER_VERSION = 3  # 2: reBEN stored at its native 120 px, padded by the reader; 3: Fletcher-32 on every chunk

IMAGES = "images"
MASKS = "masks"
IDS = "ids"
DATE = "date"
LAT = "lat"
LON = "lon"
DATASETS = (IMAGES, MASKS, IDS, DATE, LAT, LON)
MASK_DTYPE = np.int16

#: Image and mask compression. ``blosc-lz4`` is Blosc (LZ4, byte shuffle inside Blosc, level 5) from ``hdf5plugin``,
#: imported lazily by :func:`compression` and :func:`open_h5`; the others are built into h5py.
CODECS = ("lzf", "gzip", "blosc-lz4", "none")
#: Codecs whose HDF5 filter comes from ``hdf5plugin``.
PLUGIN_CODECS = frozenset({"blosc-lz4"})
#: ``none`` is the default, by the numbers of ``bench/cache_read.py`` (512x512x13 int16 chips, one thread, page cache
#: warm): a cache sample costs its float32 conversion (~1 ms), the Fletcher-32 check (~2 ms) and the decode, which is
#: ~0.8 ms for ``none``, ~3 ms for blosc-lz4 and ~17 ms for lzf, so lzf reads slower than the GeoTIFFs themselves.
#: The full study's caches are ~11 GB uncompressed, small next to a scratch quota. Build with ``codec="blosc-lz4"``
#: (~0.7 of the size, ~half the read rate) where disk space or file-system bandwidth is the limit; lzf and gzip stay
#: available for portability.
DEFAULT_CODEC = "none"

#: What a file was built from; a prepare run reuses a file only when all of these match.
IDENTITY_ATTRS = (
    "dataset",
    "split",
    "builder_version",
    "codec",
    "bands",
    "wavelengths",
    "gsd",
    "scale",
    "classes",
    "split_file_sha256",
    "sources_sha256",
    "stats_sha256",
)
#: What was computed while building: the train split's per-band mean/std (after ``scale``) and the count.
CONTENT_ATTRS = ("mean", "std", "n")
KEY_ATTR = "key"


def load_plugins(codec: str) -> None:
    """Register the HDF5 filters that ``codec`` needs (importing ``hdf5plugin`` registers all of its filters).

    Raises:
        CacheError: ``codec`` needs ``hdf5plugin`` and it is not installed.
    """
    if codec not in PLUGIN_CODECS:
        return
    try:
        import hdf5plugin  # noqa: F401  (imported for its side effect: registers Blosc & co. with HDF5)
    except ImportError:
        raise CacheError(
            f"codec {codec!r} needs the hdf5plugin package: `pip install hdf5plugin`, or build with codec 'none'"
        ) from None


def compression(codec: str) -> dict[str, Any]:
    """``h5py.Group.create_dataset`` keyword arguments for ``codec``, always with a Fletcher-32 checksum per chunk.

    The checksum is what makes a flipped byte in a stored sample an error on read (naming the rebuild command) instead
    of silently wrong pixels: uncompressed chunks have no other check, and LZ4/LZF streams do not reliably fail on
    corruption either. It costs ~2 ms per 512x512x13 int16 chip (``bench/cache_read.py`` reports rates with it).
    lzf and gzip run HDF5's byte-shuffle filter first: on the synthetic int16 chips it makes lzf files ~30 % smaller
    at the same decoding speed. ``blosc-lz4`` shuffles inside Blosc.

    Raises:
        CacheError: ``codec`` needs ``hdf5plugin`` and it is not installed.
    """
    checksum: dict[str, Any] = {"fletcher32": True}
    if codec == "none":
        return checksum
    if codec == "blosc-lz4":
        load_plugins(codec)
        import hdf5plugin

        return {**hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE), **checksum}
    return {"compression": codec, "shuffle": True, **checksum}


def plain(value: Any) -> Any:
    """An attribute value as plain JSON-able Python (numpy scalars/arrays, bytes and tuples converted)."""
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value


def compute_key(attrs: Mapping[str, Any]) -> str:
    """16 hex digits of the SHA-256 of the canonical JSON of the identity and content attributes."""
    picked = {name: plain(attrs[name]) for name in (*IDENTITY_ATTRS, *CONTENT_ATTRS)}
    text = json.dumps(picked, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def rebuild_hint(dataset: str, cache_root: str | os.PathLike[str]) -> str:
    """The command that (re)builds the caches of ``dataset``."""
    return f"`geopeft prepare {dataset} --raw <RAW_DIR> --cache {cache_root}`"


def open_h5(path: str | os.PathLike[str], mode: str = "r") -> h5py.File:
    """Open an HDF5 file with file locking off unless the user set ``HDF5_USE_FILE_LOCKING`` otherwise.

    A file whose ``codec`` attribute names a plugin codec gets its filters registered (:func:`load_plugins`) before
    any chunk is read, so every process that reads through here (DataLoader workers included) can decode it; HDF5
    looks filters up when a chunk is decoded, not when the file is opened. A missing ``hdf5plugin`` is left to
    :func:`read_header` (which reports it) or to the first read.
    """
    os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")
    f = h5py.File(path, mode)
    try:
        codec = plain(f.attrs.get("codec", "")) if mode == "r" else ""
    except BaseException:
        f.close()
        raise
    if isinstance(codec, str) and codec in PLUGIN_CODECS:
        with contextlib.suppress(CacheError):
            load_plugins(codec)
    return f


@dataclass(frozen=True)
class CacheHeader:
    """The checked attributes of one cache file.

    Args:
        path: the file.
        attrs: every identity and content attribute as plain Python values.
        key: the stored (and re-computed) key.
        shape: ``(C, H, W)`` of one image.
        dtype: stored image dtype name.
    """

    path: Path
    attrs: dict[str, Any]
    key: str
    shape: tuple[int, int, int]
    dtype: str

    @property
    def n(self) -> int:
        """Number of samples."""
        return int(self.attrs["n"])

    @property
    def bands(self) -> tuple[str, ...]:
        """Band names in stored order."""
        return tuple(self.attrs["bands"])

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names by index."""
        return tuple(self.attrs["classes"])

    @property
    def scale(self) -> float:
        """Constant scale applied before standardisation."""
        return float(self.attrs["scale"])

    @property
    def mean(self) -> tuple[float, ...]:
        """Per-band train mean after ``scale``."""
        return tuple(float(v) for v in self.attrs["mean"])

    @property
    def std(self) -> tuple[float, ...]:
        """Per-band train standard deviation after ``scale``."""
        return tuple(float(v) for v in self.attrs["std"])

    def train_stats(self) -> BandStats:
        """The train split's per-band mean and std stored in this file (``train.normalisation: train_split``)."""
        return BandStats(
            mean=dict(zip(self.bands, self.mean, strict=True)),
            std=dict(zip(self.bands, self.std, strict=True)),
            source=f"the train split of the cache ({self.path.parent})",
        )

    def matches(self, identity: Mapping[str, Any], ignore: tuple[str, ...] = ()) -> bool:
        """Whether this file was built from ``identity`` (attributes named in ``ignore`` aside)."""
        names = [n for n in IDENTITY_ATTRS if n not in ignore]
        return json.dumps([plain(identity[n]) for n in names]) == json.dumps([self.attrs[n] for n in names])


def read_header(path: Path, dataset: str, split: str, cache_root: str | os.PathLike[str] | None = None) -> CacheHeader:
    """Open ``path`` for its attributes only and check version, key and dataset shapes.

    Args:
        path: the cache file.
        dataset: the dataset it must hold.
        split: the split it must hold.
        cache_root: named in the rebuild command (default: the grandparent of ``path``).

    Raises:
        CacheError: the file is missing, unreadable, truncated, of another builder version or inconsistent; the
            message names the file and the command that rebuilds it.
    """
    fix = f"rebuild it with {rebuild_hint(dataset, path.parent.parent if cache_root is None else cache_root)}"
    if not path.is_file():
        raise CacheError(f"{path}: no cache for {dataset}/{split}; {fix}")
    try:
        with open_h5(path) as f:
            raw_attrs = {
                name: f.attrs[name] for name in (*IDENTITY_ATTRS, *CONTENT_ATTRS, KEY_ATTR) if name in f.attrs
            }
            lengths = {name: (f[name].shape, f[name].dtype) for name in DATASETS if name in f}
    except OSError as exc:
        raise CacheError(f"{path}: cannot be read (corrupt or truncated: {exc}); delete it and {fix}") from None
    missing = [n for n in (*IDENTITY_ATTRS, *CONTENT_ATTRS, KEY_ATTR) if n not in raw_attrs] + [
        n for n in DATASETS if n not in lengths
    ]
    if missing:
        raise CacheError(f"{path}: not a complete geopeft cache (missing {', '.join(missing)}); {fix}")
    attrs = {name: plain(value) for name, value in raw_attrs.items()}
    if attrs["builder_version"] != BUILDER_VERSION:
        raise CacheError(
            f"{path}: written by cache builder version {attrs['builder_version']}, this geopeft reads version "
            f"{BUILDER_VERSION}; {fix}"
        )
    if (attrs["dataset"], attrs["split"]) != (dataset, split):
        raise CacheError(f"{path}: holds {attrs['dataset']}/{attrs['split']}, expected {dataset}/{split}; {fix}")
    if compute_key(attrs) != attrs[KEY_ATTR]:
        raise CacheError(f"{path}: stored key {attrs[KEY_ATTR]} does not match its attributes; {fix}")
    try:
        load_plugins(str(attrs["codec"]))
    except CacheError as exc:
        raise CacheError(f"{path}: {exc}") from None
    n, (image_shape, dtype) = attrs["n"], lengths[IMAGES]
    shapes_ok = (
        len(image_shape) == 4
        and image_shape[0] == n
        and image_shape[1] == len(attrs["bands"]) == len(attrs["mean"]) == len(attrs["std"])
        and lengths[MASKS][0] == (n, *image_shape[2:])
        and all(lengths[name][0] == (n,) for name in (IDS, DATE, LAT, LON))
        and all(math.isfinite(s) and s > 0 for s in attrs["std"])
    )
    if not shapes_ok:
        raise CacheError(f"{path}: dataset shapes disagree with n={n} and the band list; {fix}")
    shape = (int(image_shape[1]), int(image_shape[2]), int(image_shape[3]))
    return CacheHeader(path=path, attrs=attrs, key=str(attrs[KEY_ATTR]), shape=shape, dtype=str(dtype))


def first_bad_chunk(path: Path) -> str | None:
    """Decode every image and mask chunk of a cache file (checking each Fletcher-32 sum); the first failure or None.

    This reads the whole file: ``geopeft prepare`` runs it before it reuses a cache, so that a flipped byte on disk
    is found when the cache is prepared, not in the middle of a sweep.
    """
    with open_h5(path) as f:
        for name in (IMAGES, MASKS):
            data = f[name]
            buffer = np.empty(data.shape[1:], dtype=data.dtype)
            for i in range(data.shape[0]):
                try:
                    data.read_direct(buffer, np.s_[i])
                except OSError as exc:
                    return f"{name} of sample {i}: {exc}"
    return None
