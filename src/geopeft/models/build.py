"""Specs → a :class:`~geopeft.models.segmentor.Segmentor`, and the plan-time check of the same specs."""

from __future__ import annotations

from dataclasses import dataclass

from geopeft.errors import ConfigError, unknown_choice
from geopeft.models.registry import (
    BackboneInfo,
    DecoderInfo,
    DecoderSettings,
    check_bands,
    create_backbone,
    get_backbone,
    get_decoder,
    settings_from_options,
)
from geopeft.models.segmentor import Segmentor
from geopeft.spec import DecoderSpec, ModelSpec

#: Weights names a spec may give. The loaders exist (prithvi_weights, clay, resnet) but are not yet wired to
#: a spec: until a pinned weights catalogue exists, a cell can only be built from random init.
WEIGHTS = ("none",)


@dataclass(frozen=True)
class _Resolved:
    backbone: BackboneInfo
    bands: tuple[str, ...]
    decoder: DecoderInfo
    settings: DecoderSettings


def resolve_bands(model: ModelSpec) -> tuple[str, ...]:
    """The input bands of ``model``: its own list, or the backbone's default bands when it gives none."""
    return model.bands or get_backbone(model.name).default_bands


def _resolve(model: ModelSpec, decoder: DecoderSpec, where: str) -> _Resolved:
    backbone = get_backbone(model.name, where)
    bands = check_bands(model.bands or backbone.default_bands, where)
    if model.weights not in WEIGHTS:
        raise unknown_choice("model.weights", model.weights, WEIGHTS, where)
    info = get_decoder(decoder.name, where)
    settings = settings_from_options(info.settings_cls, decoder.opts, f"decoder {decoder.name}", where)
    settings.check(backbone, where)
    return _Resolved(backbone, bands, info, settings)


def validate(model: ModelSpec, decoder: DecoderSpec, where: str = "") -> None:
    """Check a model and decoder spec at plan time without building anything.

    Args:
        model: the backbone spec.
        decoder: the decoder spec.
        where: file or cell the specs came from, prepended to messages.

    Raises:
        ConfigError: unknown backbone, decoder, weights or option key, or a bad value.
    """
    _resolve(model, decoder, where)


def build_segmentor(
    model: ModelSpec, decoder: DecoderSpec, *, num_classes: int, img_size: int, where: str = ""
) -> Segmentor:
    """Build backbone, neck and decoder (random weights, no I/O).

    Args:
        model: the backbone spec; empty ``bands`` means the backbone's default bands.
        decoder: the decoder spec.
        num_classes: output classes.
        img_size: chip size in pixels.
        where: file or cell the specs came from, prepended to messages.
    """
    resolved = _resolve(model, decoder, where)
    prefix = f"{where}: " if where else ""
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ConfigError(f"{prefix}num_classes must be a positive integer, got {num_classes!r}")
    if not isinstance(img_size, int) or isinstance(img_size, bool) or img_size < resolved.backbone.patch_size:
        raise ConfigError(
            f"{prefix}img_size must be an integer >= the patch size {resolved.backbone.patch_size}, got {img_size!r}"
        )
    backbone = create_backbone(model.name, bands=resolved.bands, img_size=img_size)
    neck, head = resolved.decoder.builder(resolved.backbone, resolved.settings, num_classes)
    return Segmentor(
        backbone,
        neck,
        head,
        patch_size=resolved.backbone.patch_size,
        metadata_keys=getattr(backbone, "metadata_keys", ()),
    )
