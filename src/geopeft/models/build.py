"""Specs → a :class:`~geopeft.models.segmentor.Segmentor`, and the plan-time check of the same specs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from geopeft.errors import ConfigError
from geopeft.models.metadata import check_metadata
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
from geopeft.models.weights.pretrained import NO_WEIGHTS, check_weights_name, load_pretrained
from geopeft.spec import DecoderSpec, ModelSpec


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
    check_metadata(model.name, model.metadata, where)
    check_weights_name(backbone.name, model.weights, where)
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
        ConfigError: unknown backbone, decoder or option key, weights that are unknown or made for another
            backbone, or a bad value.
    """
    _resolve(model, decoder, where)


def build_segmentor(
    model: ModelSpec,
    decoder: DecoderSpec,
    *,
    num_classes: int,
    img_size: int,
    where: str = "",
    weights_root: str | Path | None = None,
) -> Segmentor:
    """Build backbone, neck and decoder; the backbone gets ``model.weights`` unless that is ``none``.

    Neck and decoder are always randomly initialised. Pretrained weights are read from the local file
    ``<weights_root>/<filename>`` of their catalogue entry (:mod:`geopeft.models.weights.pretrained`), hash-checked,
    and loaded with input channels picked by band name; nothing is downloaded.

    Args:
        model: the backbone spec; empty ``bands`` means the backbone's default bands.
        decoder: the decoder spec.
        num_classes: output classes.
        img_size: chip size in pixels.
        where: file or cell the specs came from, prepended to messages.
        weights_root: the directory of the weights files (the run environment's ``weights_root``); needed
            only when ``model.weights`` is not ``none``.

    Raises:
        ConfigError: a spec or size is invalid, or weights are asked for without a ``weights_root``.
        WeightsError: the weights file is missing, changed since it was first verified, or does not fit.
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
    if model.weights != NO_WEIGHTS:
        if weights_root is None:
            raise ConfigError(
                f"{prefix}model.weights is {model.weights!r} but no weights directory was given; pass "
                "weights_root (the run environment's weights_root)"
            )
        load_pretrained(backbone, model.weights, weights_root, where)
    neck, head = resolved.decoder.builder(resolved.backbone, resolved.settings, num_classes)

    def head_builder(info: BackboneInfo) -> tuple[nn.Module, nn.Module]:
        resolved.settings.check(info, where)
        return resolved.decoder.builder(info, resolved.settings, num_classes)

    return Segmentor(
        backbone,
        neck,
        head,
        patch_size=resolved.backbone.patch_size,
        metadata_keys=getattr(backbone, "metadata_keys", ()),
        metadata_inputs=getattr(backbone, "metadata_inputs", None),
        backbone_info=resolved.backbone,
        head_builder=head_builder,
    )
