"""Methods that only choose what trains: full fine-tuning and linear probing."""

from __future__ import annotations

from dataclasses import dataclass

from geopeft.models.segmentor import Segmentor
from geopeft.tuning.registry import register_tuning


@dataclass(frozen=True)
class FullSettings:
    """Full fine-tuning has no settings: every parameter trains."""


@dataclass(frozen=True)
class LinearProbeSettings:
    """Linear probing has no settings: the backbone is frozen, neck and decoder train."""


@register_tuning("full", FullSettings)
def apply_full(model: Segmentor, settings: FullSettings, where: str) -> None:
    """Make every parameter trainable."""
    model.requires_grad_(True)


@register_tuning("linear_probe", LinearProbeSettings)
def apply_linear_probe(model: Segmentor, settings: LinearProbeSettings, where: str) -> None:
    """Freeze the backbone (TerraTorch's ``freeze_backbone: true``); neck and decoder stay trainable."""
    model.requires_grad_(True)
    model.backbone.requires_grad_(False)
