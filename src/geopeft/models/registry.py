"""Backbone and decoder registries, and the one factory that builds a backbone by name.

A backbone is registered with :func:`register_backbone` on a builder taking the input bands and the chip
size; a decoder with :func:`register_decoder` on a builder taking the backbone's description, its settings
and the number of classes. Each decoder has a frozen settings dataclass; :func:`settings_from_options`
turns a spec's option mapping into it and rejects unknown keys (tuning methods use it too).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol, TypeVar

from torch import nn

from geopeft.errors import ConfigError
from geopeft.registry import Registry

S = TypeVar("S")


class BackboneBuilder(Protocol):
    """Builds a backbone for the given input bands and chip size; does no I/O."""

    def __call__(self, *, bands: tuple[str, ...], img_size: int) -> nn.Module:
        """Return the backbone module."""
        ...


#: Backbone kinds: ``vit`` returns token sequences ``[B, 1 + N, D]``, ``cnn`` returns feature maps ``[B, C, h, w]``.
BACKBONE_KINDS = ("vit", "cnn")


@dataclass(frozen=True)
class BackboneInfo:
    """What the rest of geopeft knows about a backbone without building it.

    A ViT (``kind="vit"``) returns ``depth`` token sequences of width ``embed_dim``, all at the stride
    ``patch_size``. A CNN (``kind="cnn"``) returns ``len(out_channels)`` feature maps, finest first, map
    ``i`` having ``out_channels[i]`` channels at stride ``strides[i]``; its ``patch_size`` is only the
    multiple inputs are padded to (32 for a ResNet), its ``depth`` is the number of maps and its
    ``embed_dim`` the channels of the last one.

    Args:
        name: registry name.
        default_bands: the bands it was pre-trained on, used when a spec gives none.
        patch_size: the token stride (ViT) or pad multiple (CNN) in pixels; inputs are padded to a multiple of it.
        embed_dim: width of every block output (ViT) or of the last map (CNN).
        depth: number of features returned by ``forward``.
        builder: the function that builds it.
        kind: ``"vit"`` or ``"cnn"``.
        out_channels: channels of each feature (derived for a ViT: ``depth × embed_dim``).
        strides: stride of each feature in pixels (derived for a ViT: ``depth × patch_size``).
        metadata: the per-sample metadata kinds it encodes (:data:`geopeft.spec.METADATA_KINDS`); a cell may
            feed only these. Its module then has ``metadata_inputs`` (see :mod:`geopeft.models.metadata`).
    """

    name: str
    default_bands: tuple[str, ...]
    patch_size: int
    embed_dim: int
    depth: int
    builder: BackboneBuilder
    kind: str = "vit"
    out_channels: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    metadata: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in BACKBONE_KINDS:
            raise ConfigError(f"backbone {self.name}: kind must be one of {BACKBONE_KINDS}, got {self.kind!r}")
        if self.depth < 1 or self.embed_dim < 1:
            raise ConfigError(f"backbone {self.name}: depth and embed_dim must be positive (a vit gives both)")
        if not self.out_channels:
            object.__setattr__(self, "out_channels", (self.embed_dim,) * self.depth)
        if not self.strides:
            object.__setattr__(self, "strides", (self.patch_size,) * self.depth)
        if not len(self.out_channels) == len(self.strides) == self.depth:
            raise ConfigError(
                f"backbone {self.name}: out_channels {self.out_channels} and strides {self.strides} must both "
                f"have depth = {self.depth} entries"
            )


class DecoderBuilder(Protocol):
    """Builds the ``(neck, decoder)`` pair of a decoder for a backbone."""

    def __call__(self, backbone: BackboneInfo, settings: Any, num_classes: int) -> tuple[nn.Module, nn.Module]:
        """Return the neck and the decoder (which includes the class head)."""
        ...


@dataclass(frozen=True)
class DecoderSettings:
    """Base of every decoder's settings dataclass."""

    def check(self, backbone: BackboneInfo, where: str = "") -> None:
        """Raise a :class:`ConfigError` when the settings cannot work with ``backbone`` (nothing by default).

        Args:
            backbone: the backbone the decoder will sit on.
            where: file or cell the settings came from, for the message.
        """


@dataclass(frozen=True)
class DecoderInfo:
    """A registered decoder.

    Args:
        name: registry name, e.g. ``linear``.
        settings_cls: the frozen dataclass its options are parsed into.
        builder: the function that builds its neck and decoder.
    """

    name: str
    settings_cls: type[DecoderSettings]
    builder: DecoderBuilder


_BACKBONES: Registry[BackboneInfo] = Registry("backbone")
_DECODERS: Registry[DecoderInfo] = Registry("decoder")


def register_backbone(
    name: str,
    *,
    default_bands: Sequence[str],
    patch_size: int,
    embed_dim: int = 0,
    depth: int = 0,
    kind: str = "vit",
    out_channels: Sequence[int] = (),
    strides: Sequence[int] = (),
    metadata: Sequence[str] = (),
) -> Callable[[BackboneBuilder], BackboneBuilder]:
    """Decorator registering a backbone builder under ``name``; a duplicate name raises ``ValueError``.

    A ViT gives ``embed_dim`` and ``depth``; a CNN gives ``kind="cnn"``, ``out_channels`` and ``strides``
    (``depth`` and ``embed_dim`` then default to their length and last entry).

    Args:
        name: registry name.
        default_bands: the pre-training bands.
        patch_size: token stride (ViT) or pad multiple (CNN) in pixels.
        embed_dim: block output width (ViT).
        depth: number of blocks (ViT).
        kind: ``"vit"`` or ``"cnn"``.
        out_channels: channels of each returned feature map (CNN).
        strides: stride in pixels of each returned feature map (CNN).
        metadata: the metadata kinds it encodes (``time``, ``location``).
    """
    channels, stride_list = tuple(out_channels), tuple(strides)
    if kind == "cnn":
        if not channels or len(channels) != len(stride_list):
            raise ConfigError(f"backbone {name}: a cnn needs out_channels and strides of the same non-zero length")
        depth = depth or len(channels)
        embed_dim = embed_dim or channels[-1]

    def deco(builder: BackboneBuilder) -> BackboneBuilder:
        info = BackboneInfo(
            name,
            tuple(default_bands),
            patch_size,
            embed_dim,
            depth,
            builder,
            kind,
            channels,
            stride_list,
            tuple(metadata),
        )
        _BACKBONES.add(name, info)
        return builder

    return deco


def get_backbone(name: str, where: str = "") -> BackboneInfo:
    """The registered backbone ``name``; an unknown name raises a :class:`ConfigError` listing the known ones."""
    return _BACKBONES.get(name, where)


def backbone_names() -> list[str]:
    """Registered backbone names, in registration order."""
    return _BACKBONES.names()


def check_bands(bands: Sequence[str], where: str = "") -> tuple[str, ...]:
    """Return ``bands`` as a tuple after checking it is a non-empty list of distinct non-empty names.

    Args:
        bands: band names.
        where: file or cell the bands came from, for the message.
    """
    prefix = f"{where}: " if where else ""
    if isinstance(bands, str) or not bands:
        raise ConfigError(f"{prefix}model.bands must be a non-empty list of band names, got {bands!r}")
    out = tuple(bands)
    bad = [b for b in out if not isinstance(b, str) or not b]
    if bad:
        raise ConfigError(f"{prefix}model.bands must hold non-empty strings, got {bad!r}")
    repeated = sorted({b for b in out if out.count(b) > 1})
    if repeated:
        raise ConfigError(f"{prefix}model.bands lists {repeated} more than once; give each band once")
    return out


def create_backbone(name: str, *, bands: Sequence[str], img_size: int) -> nn.Module:
    """Build the backbone ``name`` for the given input bands and chip size (random weights, no I/O).

    Args:
        name: backbone registry name.
        bands: input band names, in the channel order of the images.
        img_size: the chip size in pixels the model will see.

    Returns:
        A module whose ``forward(image)`` returns the list of block outputs.
    """
    info = get_backbone(name)
    if not isinstance(img_size, int) or isinstance(img_size, bool) or img_size < info.patch_size:
        raise ConfigError(
            f"img_size must be an integer >= the patch size {info.patch_size} of {name}, got {img_size!r}"
        )
    return info.builder(bands=check_bands(bands), img_size=img_size)


def register_decoder(name: str, settings_cls: type[DecoderSettings]) -> Callable[[DecoderBuilder], DecoderBuilder]:
    """Decorator registering a decoder builder and its settings dataclass under ``name``.

    Args:
        name: registry name.
        settings_cls: frozen dataclass (a :class:`DecoderSettings`) holding the decoder's options.
    """

    def deco(builder: DecoderBuilder) -> DecoderBuilder:
        _DECODERS.add(name, DecoderInfo(name, settings_cls, builder))
        return builder

    return deco


def get_decoder(name: str, where: str = "") -> DecoderInfo:
    """The registered decoder ``name``; an unknown name raises a :class:`ConfigError` listing the known ones."""
    return _DECODERS.get(name, where)


def decoder_names() -> list[str]:
    """Registered decoder names, in registration order."""
    return _DECODERS.names()


def settings_from_options(cls: type[S], options: Mapping[str, Any], what: str, where: str = "") -> S:
    """Build the settings dataclass ``cls`` from an options mapping, refusing keys it does not have.

    Args:
        cls: a dataclass whose ``__post_init__`` checks the values.
        options: the spec's options.
        what: what the options belong to, e.g. ``"lora"`` or ``"decoder linear"``.
        where: file or cell the options came from, for the message.

    Raises:
        ConfigError: an unknown key (named, with the allowed ones) or a value the dataclass rejects.
    """
    allowed = sorted(f.name for f in fields(cls))  # type: ignore[arg-type]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        prefix = f"{where}: " if where else ""
        plural = "s" if len(unknown) > 1 else ""
        names = ", ".join(repr(k) for k in unknown)
        raise ConfigError(
            f"{prefix}unknown {what} option{plural} {names}; allowed: {', '.join(allowed) if allowed else '(none)'}"
        )
    try:
        return cls(**options)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}" if where else str(exc)) from None
