"""The dotted keys a grid file may name, and where each value of an expanded cell came from.

``overrides`` (``where`` and ``set``) and ``exclude`` name spec fields as dotted keys (``train.lr``,
``tuning.options.r``). :func:`check_path` checks such a key along its whole path against the spec's dataclasses
and the option fields of the registered tuning methods and decoders, so a typo anywhere in it stops the plan.

:class:`Origins` records, for every value of a cell as it is merged from ``defaults``, ``axes`` and
``overrides``, the place in the file it came from (``defaults.model.name``, ``axes.tuning[1].options.r``,
``overrides[3].set.train.lr``), so that an error about a value names the line a user has to change.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from geopeft.errors import ConfigError
from geopeft.spec import DecoderSpec, ModelSpec, TrainSpec, TuningSpec

#: The spec's sections and their fields; ``dataset`` and ``seed`` are scalars.
SECTIONS: dict[str, tuple[str, ...]] = {
    "model": tuple(f.name for f in fields(ModelSpec)),
    "tuning": tuple(f.name for f in fields(TuningSpec)),
    "decoder": tuple(f.name for f in fields(DecoderSpec)),
    "train": tuple(f.name for f in fields(TrainSpec)),
}
SCALARS = ("dataset", "seed")
_KEY_IN_MESSAGE = re.compile(r"\b(model|tuning|decoder|train)\.(\w+)")


@functools.cache
def option_names(section: str) -> dict[str, list[str]]:
    """Registered name -> its option keys, for ``tuning`` (methods) or ``decoder`` (decoders)."""
    # Imported here: the registries pull in torch, which `geopeft status` never needs.
    if section == "tuning":
        from geopeft.tuning.registry import tuning_names, tuning_option_names

        return {name: tuning_option_names(name) for name in tuning_names()}
    from geopeft.models.registry import decoder_names, get_decoder

    return {name: [f.name for f in fields(get_decoder(name).settings_cls)] for name in decoder_names()}


def check_path(dotted: str, where: str) -> None:
    """Raise a :class:`ConfigError` naming ``where`` unless ``dotted`` names a spec field along its whole path."""
    if not isinstance(dotted, str) or not dotted:
        raise ConfigError(f"{where}: keys must be dotted spec fields such as train.lr, got {dotted!r}")
    parts = dotted.split(".")
    head, rest = parts[0], parts[1:]
    allowed_heads = (*SECTIONS, *SCALARS)
    if head not in allowed_heads:
        raise ConfigError(f"{where}: unknown key {dotted!r}; keys start with one of: {', '.join(allowed_heads)}")
    if head in SCALARS:
        if rest:
            raise ConfigError(f"{where}: unknown key {dotted!r}; {head} has no fields, write {head}")
        return
    if not rest:
        raise ConfigError(f"{where}: key {dotted!r} names a whole section; name a field: {_fields(head)}")
    field_name, deeper = rest[0], rest[1:]
    if field_name not in SECTIONS[head]:
        raise ConfigError(f"{where}: unknown key {dotted!r}; {head} has: {_fields(head)}")
    if field_name != "options":
        if deeper:
            raise ConfigError(f"{where}: unknown key {dotted!r}; {head}.{field_name} has no fields")
        return
    if not deeper:
        return  # the whole options mapping; its keys are checked once merged into the cells
    if len(deeper) != 1:
        raise ConfigError(f"{where}: key {dotted!r}: name one option, e.g. {head}.options.NAME")
    known = option_names(head)
    if not any(deeper[0] in names for names in known.values()):
        everything = sorted({n for names in known.values() for n in names})
        raise ConfigError(
            f"{where}: unknown key {dotted!r}: no registered {'method' if head == 'tuning' else 'decoder'} has "
            f"option {deeper[0]!r}; options: {', '.join(everything)}"
        )


def _fields(section: str) -> str:
    return ", ".join(f"{section}.{name}" for name in SECTIONS[section])


def leaf_paths(cell: Mapping[str, Any]) -> list[str]:
    """Every dotted key of an expanded cell, down to single options (``tuning.options.r``)."""
    out: list[str] = []
    for key, value in cell.items():
        if key in SECTIONS and isinstance(value, Mapping):
            for name, sub in value.items():
                if name == "options" and isinstance(sub, Mapping) and sub:
                    out += [f"{key}.options.{opt}" for opt in sub]
                else:
                    out.append(f"{key}.{name}")
        else:
            out.append(str(key))
    return out


class Origins:
    """Dotted key -> the place in the grid file its value came from (the last writer wins, as in the merge)."""

    def __init__(self) -> None:
        self._of: dict[str, str] = {}

    def copy(self) -> Origins:
        """An independent copy (each cell records its own)."""
        other = Origins()
        other._of = dict(self._of)
        return other

    def record(self, key: str, origin: str, value: Any) -> None:
        """``value`` was written at ``key`` from ``origin``; a section or ``options`` mapping records its leaves."""
        if isinstance(value, Mapping) and (key in SECTIONS or key.endswith(".options")):
            if key.endswith(".options"):
                self._of[key] = origin
            for name, sub in value.items():
                self.record(f"{key}.{name}", f"{origin}.{name}", sub)
            return
        self._of[key] = origin

    def of(self, key: str) -> str | None:
        """Where ``key`` (or the nearest enclosing key that was written) came from."""
        parts = key.split(".")
        for n in range(len(parts), 0, -1):
            found = self._of.get(".".join(parts[:n]))
            if found:
                return found
        return None


def key_of(exc: ConfigError, cell: Mapping[str, Any]) -> str | None:
    """The dotted key a spec error is about: the one it names, or the one the validation step was checking."""
    key = getattr(exc, "key", "")
    if key:
        return str(key)
    match = _KEY_IN_MESSAGE.search(str(exc))
    if match and match.group(2) in SECTIONS[match.group(1)]:
        return f"{match.group(1)}.{match.group(2)}"
    if "seed" in str(exc) and "seed" in cell:
        return "seed"
    return None
