"""Per-sample metadata as backbone-neutral numbers: what :class:`~geopeft.cache.reader.CacheDataset` yields.

A cell that feeds metadata (``model.metadata``, see :data:`geopeft.spec.METADATA_KINDS`) gets, in every sample's
``"metadata"`` mapping, one float32 scalar per field of each kind it asked for, plus the dataset's ``gsd``:

* ``time``: ``year`` (e.g. 2019), ``doy`` (day of the year minus one, 0..365), ``week`` (ISO week, 1..53) and
  ``hour`` (hour of the day, 0..23, as ``datetime.hour``) of the stored acquisition date-time;
* ``location``: ``lat`` and ``lon`` of the chip centre in degrees (EPSG:4326);
* ``gsd``: the ground sample distance in metres, always.

Each backbone family turns these into its own inputs in :mod:`geopeft.models.metadata`. A sample without a value
its dataset claims to record is a :class:`~geopeft.errors.DataError` naming the cache file and the sample id, raised
when the split is opened, before any training: zeros (Clay's ``Datacuber`` default) would silently mix
"with metadata" and "without" within one run.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from geopeft.errors import DataError

#: The fields of each metadata kind, in order.
FIELDS: dict[str, tuple[str, ...]] = {"time": ("year", "doy", "week", "hour"), "location": ("lat", "lon")}
#: The field that carries the dataset's ground sample distance; present in every sample's metadata.
GSD = "gsd"

Table = dict[str, npt.NDArray[np.float32]]


def time_fields(date: str) -> tuple[float, float, float, float]:
    """``(year, day of year - 1, ISO week, hour)`` of an ISO 8601 date-time such as ``2019-03-12T12:00:00``.

    Raises:
        ValueError: ``date`` is not ISO 8601.
    """
    when = dt.datetime.fromisoformat(date)
    return (
        float(when.year),
        float(when.timetuple().tm_yday - 1),
        float(when.isocalendar().week),
        float(when.hour),
    )


def metadata_table(
    path: Path,
    kinds: Sequence[str],
    ids: Sequence[str],
    dates: Sequence[str],
    lats: npt.NDArray[np.floating],
    lons: npt.NDArray[np.floating],
    fix: str,
) -> Table:
    """The fields of ``kinds`` for every sample of a cache file, as float32 arrays ``[N]``.

    Args:
        path: the cache file, named in errors.
        kinds: metadata kinds to produce (keys of :data:`FIELDS`).
        ids: sample ids, named in errors.
        dates: stored ISO dates (``""`` when unknown).
        lats: stored latitudes in degrees (NaN when unknown).
        lons: stored longitudes in degrees (NaN when unknown).
        fix: how to get the missing values, appended to errors.

    Raises:
        DataError: a sample has no (or an unreadable) date, or no position; names the file and the sample id.
    """
    table: Table = {}
    if "time" in kinds:
        rows = []
        for sample_id, date in zip(ids, dates, strict=True):
            try:
                rows.append(time_fields(date))
            except ValueError:
                what = "no acquisition date" if not date else f"an unreadable acquisition date {date!r}"
                raise DataError(
                    f"{path}: sample {sample_id} has {what}, which model.metadata 'time' needs; {fix}"
                ) from None
        columns = np.asarray(rows, dtype=np.float32).reshape(len(ids), len(FIELDS["time"]))
        table.update({name: columns[:, j].copy() for j, name in enumerate(FIELDS["time"])})
    if "location" in kinds:
        for sample_id, lat, lon in zip(ids, lats.tolist(), lons.tolist(), strict=True):
            if not (math.isfinite(lat) and math.isfinite(lon)):
                raise DataError(f"{path}: sample {sample_id} has no centre lat/lon, which 'location' needs; {fix}")
        table.update(lat=np.asarray(lats, dtype=np.float32), lon=np.asarray(lons, dtype=np.float32))
    return table
