"""Backbone-neutral batch metadata (:mod:`geopeft.cache.metadata`) → each backbone family's forward inputs.

A batch's ``"metadata"`` maps field names (``year``, ``doy``, ``week``, ``hour``, ``lat``, ``lon``, ``gsd``) to
``[B]`` tensors; only the fields of the kinds a cell asked for are there, ``gsd`` always is. A backbone that
encodes metadata exposes one of these functions as its ``metadata_inputs`` method, and
:class:`~geopeft.models.segmentor.Segmentor` passes the result to its ``forward`` as keyword arguments.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from geopeft.cache.metadata import FIELDS, GSD
from geopeft.errors import ConfigError
from geopeft.models.registry import backbone_names, get_backbone

Metadata = Mapping[str, Tensor]
#: The metadata kinds (``model.metadata``) the Prithvi TL variants and Clay encode.
TL: tuple[str, ...] = ("time", "location")


def _fields(metadata: Metadata, kind: str, backbone: str) -> list[Tensor] | None:
    """The ``[B]`` tensors of ``kind``'s fields, or ``None`` when the batch has none of them."""
    names = FIELDS[kind]
    present = [name in metadata for name in names]
    if not any(present):
        return None
    if not all(present):
        missing = [name for name, there in zip(names, present, strict=True) if not there]
        raise ConfigError(f"{backbone}: batch metadata {kind!r} lacks field(s) {missing}; expected {list(names)}")
    return [metadata[name].reshape(-1) for name in names]


def prithvi_inputs(metadata: Metadata) -> dict[str, Tensor]:
    """Prithvi TL inputs (peft-geofm's ``normalize_timestamp_prithvi`` and ``normalize_latlon_prithvi``).

    * ``temporal_coords`` ``[B, 1, 2]`` = (year, day of year − 1), one frame;
    * ``location_coords`` ``[B, 2]`` = (lat, lon) in degrees.

    Each is left out when the batch lacks its kind; ``gsd`` is not used. A model without the TL encoders
    refuses the coordinates in its ``forward``.

    Args:
        metadata: batch metadata (see the module docstring).
    """
    out: dict[str, Tensor] = {}
    time = _fields(metadata, "time", "Prithvi")
    if time is not None:
        year, doy, _, _ = time
        out["temporal_coords"] = torch.stack([year, doy], dim=-1).float()[:, None, :]
    location = _fields(metadata, "location", "Prithvi")
    if location is not None:
        out["location_coords"] = torch.stack(location, dim=-1).float()
    return out


def clay_inputs(metadata: Metadata) -> dict[str, Tensor]:
    """Clay inputs (peft-geofm's ``clay_tlgw`` encodings, computed in float64 then cast to float32).

    * ``time`` ``[B, 4]`` = sin, cos of week·2π/52 and sin, cos of hour·2π/24;
    * ``latlon`` ``[B, 4]`` = sin, cos of latitude and sin, cos of longitude, in radians;
    * ``gsd`` ``[B]``, the dataset's GSD in metres.

    Each is left out when the batch lacks it; :class:`~geopeft.models.clay.ClayEncoder` then uses zeros (time,
    latlon) as ``clay_gw`` does.

    Args:
        metadata: batch metadata (see the module docstring).
    """
    out: dict[str, Tensor] = {}
    time = _fields(metadata, "time", "Clay")
    if time is not None:
        _, _, week, hour = (t.double() for t in time)
        week, hour = week * (2 * math.pi / 52), hour * (2 * math.pi / 24)
        out["time"] = torch.stack([week.sin(), week.cos(), hour.sin(), hour.cos()], dim=-1).float()
    location = _fields(metadata, "location", "Clay")
    if location is not None:
        lat, lon = (torch.deg2rad(t.double()) for t in location)
        out["latlon"] = torch.stack([lat.sin(), lat.cos(), lon.sin(), lon.cos()], dim=-1).float()
    if GSD in metadata:
        out["gsd"] = metadata[GSD].reshape(-1).float()
    return out


def check_metadata(backbone: str, kinds: tuple[str, ...], where: str = "") -> None:
    """Check at plan time that ``backbone`` encodes every metadata kind a cell asks for.

    Args:
        backbone: backbone registry name.
        kinds: ``model.metadata`` of the cell.
        where: file or cell the spec came from, prepended to the message.

    Raises:
        ConfigError: a kind the backbone has no encoder for; the message names the backbones that have.
    """
    missing = [kind for kind in kinds if kind not in get_backbone(backbone, where).metadata]
    if missing:
        prefix = f"{where}: " if where else ""
        able = [name for name in backbone_names() if set(kinds) <= set(get_backbone(name).metadata)]
        raise ConfigError(
            f"{prefix}model.metadata {list(kinds)}: backbone {backbone} does not encode {', '.join(missing)}; "
            f"backbones that do: {', '.join(able) or 'none'}; drop model.metadata or pick one of them"
        )
