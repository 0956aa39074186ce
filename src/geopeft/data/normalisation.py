"""Per-band input statistics and which ones a cell normalises with.

A cell's ``train.normalisation`` picks the statistics (:data:`geopeft.spec.NORMALISATIONS`):

* ``study`` (the default): the fixed per-dataset, per-band mean and std the study standardises with (IBM/peft-geofm
  ``src/peft_geofm/datamodules/*.py``, ``MEANS``/``STDS``; ``reference/normalisation.json``). Each dataset module
  carries its numbers as a :class:`BandStats` with their source, in :attr:`DatasetInfo.study_stats`.
* ``train_split``: the mean and std of the cell's own training split, computed when the cache is built and stored in
  its header (for datasets or bands without published statistics).

Either way the values are of the *scaled* data (the dataset's constant ``scale`` first), and they are applied batch
by batch on the device after the CPU augmentation (:mod:`geopeft.train.preprocess`): ``(x * scale - mean) / std``,
then reBEN's right/bottom reflect padding, as the study's ``on_after_batch_transfer`` does.

Nothing here imports torch: planning checks a cell's statistics on the login node.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from geopeft.errors import ConfigError


@dataclass(frozen=True)
class BandStats:
    """Published per-band statistics of a dataset, by band name.

    Args:
        mean: band name -> mean of the scaled values.
        std: band name -> standard deviation of the scaled values (a 0 is kept as published; a cell that reads
            such a band is refused, see :func:`resolve`).
        source: where the numbers come from (file and commit), shown in errors and provenance.
    """

    mean: Mapping[str, float] = field(metadata={"help": "band -> mean (after scale)"})
    std: Mapping[str, float] = field(metadata={"help": "band -> std (after scale)"})
    source: str = field(metadata={"help": "where the numbers come from"})

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", dict(self.mean))
        object.__setattr__(self, "std", dict(self.std))
        if set(self.mean) != set(self.std):
            raise ConfigError(f"statistics from {self.source}: mean and std must name the same bands")
        for table in (self.mean, self.std):
            for band, value in table.items():
                if not (isinstance(value, (int, float)) and math.isfinite(value)):
                    raise ConfigError(f"statistics from {self.source}: {band} has non-finite value {value!r}")


@dataclass(frozen=True)
class InputNorm:
    """The standardisation of one cell's input channels, in channel order.

    Args:
        bands: the band of each channel.
        scale: the dataset's constant scale, applied first.
        mean: per-channel mean of the scaled values.
        std: per-channel standard deviation of the scaled values (all non-zero).
        kind: ``study`` or ``train_split`` (the cell's ``train.normalisation``).
        source: where the numbers come from.
    """

    bands: tuple[str, ...]
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    kind: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (a result's ``provenance.normalisation``); :meth:`from_dict` reads it back."""
        return {
            "kind": self.kind,
            "source": self.source,
            "scale": self.scale,
            "bands": list(self.bands),
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str) -> InputNorm:
        """Inverse of :meth:`to_dict`.

        Raises:
            ConfigError: a field is missing or malformed; the message names ``where``.
        """
        try:
            norm = cls(
                bands=tuple(str(b) for b in d["bands"]),
                scale=float(d["scale"]),
                mean=tuple(float(v) for v in d["mean"]),
                std=tuple(float(v) for v in d["std"]),
                kind=str(d["kind"]),
                source=str(d["source"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: malformed normalisation record ({exc!r}); rerun the cell") from None
        if not len(norm.bands) == len(norm.mean) == len(norm.std) or 0 in norm.std:
            raise ConfigError(f"{where}: normalisation record needs one non-zero std per band; rerun the cell")
        return norm


def resolve(
    kind: str,
    dataset: str,
    bands: Sequence[str],
    *,
    scale: float,
    study: BandStats | None,
    train_split: BandStats | None = None,
    where: str = "",
) -> InputNorm:
    """The :class:`InputNorm` of ``bands`` under normalisation ``kind``.

    Args:
        kind: ``study`` or ``train_split``.
        dataset: the dataset's name, for messages.
        bands: the cell's input bands, in channel order.
        scale: the dataset's constant scale.
        study: the dataset's published statistics (:attr:`DatasetInfo.study_stats`), or ``None``.
        train_split: the train split's statistics (from a cache header); ``None`` at plan time, when only
            ``study`` can be checked.
        where: the cell or file asking, prepended to messages.

    Raises:
        ConfigError: ``kind`` is unknown; the dataset has no published statistics, or none for a band; a band's
            std is 0 (division by zero). Each message names the band and the fix.
    """
    prefix = f"{where}: " if where else ""
    if kind == "study":
        if study is None:
            raise ConfigError(
                f"{prefix}dataset {dataset} has no published normalisation statistics; "
                "set train.normalisation: train_split"
            )
        stats = study
    elif kind == "train_split":
        if train_split is None:
            raise ConfigError(f"{prefix}the train split's statistics of {dataset} are read from its cache")
        stats = train_split
    else:
        raise ConfigError(f"{prefix}unknown train.normalisation {kind!r}; allowed: study, train_split")
    missing = [b for b in bands if b not in stats.mean]
    if missing:
        raise ConfigError(
            f"{prefix}{stats.source} gives no {kind} statistics for band(s) {', '.join(missing)} of {dataset}; "
            "drop them from model.bands or set train.normalisation: train_split"
        )
    zero = [b for b in bands if stats.std[b] == 0]
    if zero:
        raise ConfigError(
            f"{prefix}band(s) {', '.join(zero)} of {dataset} have std 0 in {stats.source} ({kind} normalisation "
            "would divide by zero); drop them from model.bands"
        )
    return InputNorm(
        bands=tuple(bands),
        scale=float(scale),
        mean=tuple(float(stats.mean[b]) for b in bands),
        std=tuple(float(stats.std[b]) for b in bands),
        kind=kind,
        source=stats.source,
    )
