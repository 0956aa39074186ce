"""Backbones, necks, decoders and the segmentor; importing the package registers the built-in models."""

from __future__ import annotations

from geopeft.models import baselines, clay, decoders, prithvi, resnet
from geopeft.models.build import build_segmentor, resolve_bands, validate
from geopeft.models.registry import backbone_names, create_backbone, decoder_names, get_backbone, get_decoder
from geopeft.models.segmentor import Segmentor

__all__ = [
    "Segmentor",
    "backbone_names",
    "baselines",
    "build_segmentor",
    "clay",
    "create_backbone",
    "decoder_names",
    "decoders",
    "get_backbone",
    "get_decoder",
    "prithvi",
    "resnet",
    "resolve_bands",
    "validate",
]
