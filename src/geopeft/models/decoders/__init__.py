"""Decoders (neck + head) by name; importing this package registers the built-in ones (``linear``)."""

from __future__ import annotations

from geopeft.models.decoders import linear
from geopeft.models.registry import (
    DecoderInfo,
    DecoderSettings,
    decoder_names,
    get_decoder,
    register_decoder,
)

__all__ = ["DecoderInfo", "DecoderSettings", "decoder_names", "get_decoder", "linear", "register_decoder"]
