"""Decoders (neck + head) by name; importing this package registers the built-in ones.

The built-in decoders are ``fcn``, ``linear``, ``unet`` and ``upernet`` (registered in import order).
"""

from __future__ import annotations

from geopeft.models.decoders import fcn, linear, unet, upernet
from geopeft.models.registry import (
    DecoderInfo,
    DecoderSettings,
    decoder_names,
    get_decoder,
    register_decoder,
)

__all__ = [
    "DecoderInfo",
    "DecoderSettings",
    "decoder_names",
    "fcn",
    "get_decoder",
    "linear",
    "register_decoder",
    "unet",
    "upernet",
]
