"""Every error geopeft raises on purpose.

Each message names the cell, file, field or key involved and says how to fix it, in the manner of
torchgeo's ``DatasetNotFoundError``. Callers catch :class:`GeopeftError` to print one clear line instead
of a traceback.
"""

from __future__ import annotations


class GeopeftError(Exception):
    """Base class: an expected failure with a message meant for the user."""


class ConfigError(GeopeftError, ValueError):
    """A grid file, spec or option is invalid (unknown key, value out of range, ...).

    Args:
        message: what is wrong and how to fix it.
        key: the dotted spec key it is about (``train.lr``), when known: a grid error then names the place in
            the file the value came from.
    """

    def __init__(self, message: str, key: str = "") -> None:
        super().__init__(message)
        self.key = key


class DataError(GeopeftError):
    """Raw dataset files are missing, malformed or inconsistent with the split files."""


class CacheError(GeopeftError):
    """The HDF5 cache is missing, stale or corrupt."""


class WeightsError(GeopeftError):
    """A checkpoint file cannot be loaded onto a backbone."""


class CheckpointError(GeopeftError):
    """A checkpoint file is unreadable or belongs to another cell."""


class SubmitError(GeopeftError):
    """A sweep could not be planned or submitted (lock held, unknown cluster profile, ...)."""


class CellFailed(GeopeftError):
    """A cell ended without a result; ``reason`` is a short class such as ``oom``, ``nan`` or ``data``."""

    def __init__(self, message: str, reason: str = "error") -> None:
        super().__init__(message)
        self.reason = reason


def unknown_choice(what: str, value: object, allowed: object, where: str = "") -> ConfigError:
    """Build the one error for a value outside a fixed set of choices.

    Args:
        what: the field or key, e.g. ``"model"``.
        value: the offending value.
        allowed: the allowed values (any iterable; printed sorted).
        where: file or cell the value came from, prepended when given.
    """
    choices = ", ".join(sorted(str(a) for a in allowed))  # type: ignore[attr-defined]
    prefix = f"{where}: " if where else ""
    return ConfigError(f"{prefix}unknown {what} {value!r}; allowed: {choices}")
