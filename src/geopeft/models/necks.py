"""Necks: turn backbone outputs into the feature maps a decoder reads (TerraTorch ``models/necks.py``).

Every neck is called as ``neck(features, grid=(h, w))`` by the :class:`~geopeft.models.segmentor.Segmentor`,
where ``grid`` is the token grid of the padded image. The ViT necks are:

* :class:`SelectTokensToImage` — ``SelectIndices`` + ``ReshapeTokensToImage`` (linear and FCN decoders);
* :class:`TokensToPyramid` — the same followed by :class:`LearnedInterpolateToPyramidal` (UperNet, UNet).

A CNN backbone (``BackboneInfo.kind == "cnn"``, e.g. DeCUR's ResNet-50) already returns feature maps at
increasing strides, so its only neck is :class:`SelectMaps` (TerraTorch uses no neck for DeCUR: the pyramid
decoders read the stage outputs directly and linear/FCN read the last one with ``in_index -1``).
:func:`single_map_neck` and :func:`pyramid_neck` pick the right neck for either kind.

The helpers at the end choose and check which block outputs a decoder reads.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from torch import Tensor, nn

from geopeft.errors import ConfigError
from geopeft.models.registry import BackboneInfo, DecoderSettings

#: How many maps the pyramid neck takes and returns (strides ×4, ×2, ×1 and ÷2 of the token grid).
PYRAMID_LEVELS = 4


class SelectTokensToImage(nn.Module):
    """Neck for ViT features: select block outputs, drop CLS, reshape tokens to feature maps.

    TerraTorch's ``SelectIndices`` + ``ReshapeTokensToImage``: ``[B, (1 +) T·h·w, D]`` becomes
    ``[B, T·D, h, w]`` (frames stacked on channels). The grid comes from the padded image size, so
    non-square inputs work.

    Args:
        indices: which features to keep (negative indices count from the end).
        remove_cls_token: drop the first token.
    """

    def __init__(self, indices: Sequence[int] = (-1,), remove_cls_token: bool = True) -> None:
        super().__init__()
        self.indices = tuple(indices)
        self.remove_cls_token = remove_cls_token

    def forward(self, features: list[Tensor], grid: tuple[int, int]) -> list[Tensor]:
        """Select and reshape.

        Args:
            features: backbone outputs ``[B, N, D]``.
            grid: token grid ``(h, w)`` of the (padded) input.
        """
        h, w = grid
        out = []
        for index in self.indices:
            tokens = features[index]
            if self.remove_cls_token:
                tokens = tokens[:, 1:]
            batch, count, dim = tokens.shape
            if count % (h * w):
                raise ConfigError(f"{count} tokens do not fill a {h}×{w} grid; check the backbone's patch size")
            frames = count // (h * w)
            maps = tokens.reshape(batch, frames, h, w, dim).permute(0, 1, 4, 2, 3)
            out.append(maps.reshape(batch, frames * dim, h, w))
        return out


class LearnedInterpolateToPyramidal(nn.Module):
    """Four maps at the token stride → a pyramid at strides ``p/4, p/2, p, 2p`` (4/8/16/32 for patch 16).

    TerraTorch's ``LearnedInterpolateToPyramidal`` (necks.py L272–304), layer for layer:
    ``fpn1`` = ConvT 2×2 s2 (C0→C0/2) + BatchNorm2d + GELU + ConvT 2×2 s2 (C0/2→C0/4);
    ``fpn2`` = ConvT 2×2 s2 (C1→C1/2); ``fpn3`` = identity; ``fpn4`` = MaxPool 2×2 s2.
    Output channels are ``[C0/4, C1/2, C2, C3]`` (:attr:`out_channels`).

    Args:
        in_channels: channels of the four input maps.
    """

    def __init__(self, in_channels: Sequence[int]) -> None:
        super().__init__()
        channels = tuple(in_channels)
        if len(channels) != PYRAMID_LEVELS:
            raise ConfigError(f"the pyramid neck needs exactly {PYRAMID_LEVELS} input maps, got {len(channels)}")
        c0, c1, c2, c3 = channels
        self.fpn1 = nn.Sequential(
            nn.ConvTranspose2d(c0, c0 // 2, kernel_size=2, stride=2),
            nn.BatchNorm2d(c0 // 2),
            nn.GELU(),
            nn.ConvTranspose2d(c0 // 2, c0 // 4, kernel_size=2, stride=2),
        )
        self.fpn2 = nn.Sequential(nn.ConvTranspose2d(c1, c1 // 2, kernel_size=2, stride=2))
        self.fpn3 = nn.Sequential(nn.Identity())
        self.fpn4 = nn.Sequential(nn.MaxPool2d(kernel_size=2, stride=2))
        self.out_channels = (c0 // 4, c1 // 2, c2, c3)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        """Four ``[B, C_i, h, w]`` maps → the pyramid, finest first.

        The outputs are ``[B, C0/4, 4h, 4w]``, ``[B, C1/2, 2h, 2w]``, ``[B, C2, h, w]`` and
        ``[B, C3, h/2, w/2]``; an odd grid side is floored by the max-pool, as in TerraTorch.
        """
        if len(features) != PYRAMID_LEVELS:
            raise ConfigError(f"the pyramid neck needs exactly {PYRAMID_LEVELS} input maps, got {len(features)}")
        return [self.fpn1(features[0]), self.fpn2(features[1]), self.fpn3(features[2]), self.fpn4(features[3])]


class TokensToPyramid(nn.Module):
    """The UperNet/UNet neck chain: ``SelectIndices`` + ``ReshapeTokensToImage`` + ``LearnedInterpolateToPyramidal``.

    Args:
        indices: the four block outputs to use (negative indices count from the end).
        embed_dim: width of each block output.
    """

    def __init__(self, indices: Sequence[int], embed_dim: int) -> None:
        super().__init__()
        self.select = SelectTokensToImage(indices=indices)
        self.pyramid = LearnedInterpolateToPyramidal([embed_dim] * len(self.select.indices))
        self.out_channels = self.pyramid.out_channels

    def forward(self, features: list[Tensor], grid: tuple[int, int]) -> list[Tensor]:
        """Backbone outputs ``[B, N, D]`` and the token grid → the four pyramid maps (see the class docstring)."""
        out: list[Tensor] = self.pyramid(self.select(features, grid=grid))
        return out


class SelectMaps(nn.Module):
    """Neck for CNN features: keep the feature maps at ``indices`` unchanged (``SelectIndices``).

    Args:
        indices: which maps to keep, in order (negative indices count from the end).
    """

    def __init__(self, indices: Sequence[int]) -> None:
        super().__init__()
        self.indices = tuple(indices)

    def forward(self, features: list[Tensor], grid: tuple[int, int]) -> list[Tensor]:
        """Select maps; ``grid`` (the token grid) is not needed for maps and is ignored."""
        return [features[i] for i in self.indices]


def single_map_neck(backbone: BackboneInfo, index: int) -> tuple[nn.Module, int, int]:
    """The neck feeding one map to a linear/FCN decoder, with that map's channels and stride.

    Args:
        backbone: the backbone the decoder sits on.
        index: the feature to decode (already checked to be in range).

    Returns:
        ``(neck, channels, stride)``: a ViT gets :class:`SelectTokensToImage` at the patch stride, a CNN
        :class:`SelectMaps` at the map's own stride.
    """
    neck: nn.Module = SelectMaps((index,)) if backbone.kind == "cnn" else SelectTokensToImage(indices=(index,))
    return neck, backbone.out_channels[index], backbone.strides[index]


def pyramid_neck(backbone: BackboneInfo, indices: Sequence[int]) -> tuple[nn.Module, tuple[int, ...]]:
    """The neck feeding a pyramid (finest first) to UperNet/UNet, with the channels of its levels.

    Args:
        backbone: the backbone the decoder sits on.
        indices: the features to use (already checked).

    Returns:
        ``(neck, channels)``: :class:`TokensToPyramid` for a ViT, :class:`SelectMaps` for a CNN (its
        stage outputs are already a pyramid; no reshape and no learned interpolation).
    """
    if backbone.kind == "cnn":
        return SelectMaps(indices), tuple(backbone.out_channels[i] for i in indices)
    neck = TokensToPyramid(indices, backbone.embed_dim)
    return neck, neck.out_channels


def default_pyramid_indices(depth: int) -> tuple[int, ...]:
    """Four evenly spaced blocks ending at the last: ``[2,5,8,11]`` for depth 12, ``[5,11,17,23]`` for 24.

    This is ``(k·depth)//4 − 1`` for ``k = 1..4`` (the paper's choices), clipped at 0 for backbones with
    fewer than four blocks (depth 2 → ``[0,0,0,1]``; only the tiny test backbones are that shallow).

    Args:
        depth: the backbone's number of blocks.
    """
    return tuple(max(0, (k * depth) // PYRAMID_LEVELS - 1) for k in range(1, PYRAMID_LEVELS + 1))


def is_int(value: object) -> bool:
    """True for a real integer (``bool`` is refused)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_block_indices(
    indices: Sequence[int], backbone: BackboneInfo, *, decoder: str, option: str, where: str = ""
) -> None:
    """Raise a :class:`ConfigError` naming the option to change when an index is not one of ``backbone``'s blocks.

    Args:
        indices: block indices (negative ones count from the end).
        backbone: the backbone the decoder sits on.
        decoder: the decoder's registry name, for the message.
        option: the option the indices came from, for the message.
        where: file or cell the options came from, for the message.
    """
    bad = [i for i in indices if not -backbone.depth <= i < backbone.depth]
    if bad:
        prefix = f"{where}: " if where else ""
        what = "feature maps" if backbone.kind == "cnn" else "blocks"
        raise ConfigError(
            f"{prefix}decoder {decoder} option {option} {list(indices)}: {bad} out of range for {backbone.name}, "
            f"which has {backbone.depth} {what}; change decoder option {option} to indices in "
            f"{-backbone.depth} .. {backbone.depth - 1}"
        )


def parse_pyramid_indices(value: object, decoder: str) -> tuple[int, ...] | None:
    """Check a ``select_indices`` option: ``None`` (derive from the depth) or exactly four integers.

    Args:
        value: the option value (a list from YAML or a tuple).
        decoder: the decoder's registry name, for the message.

    Returns:
        The indices as a tuple, or ``None``.
    """
    if value is None:
        return None
    if not isinstance(value, list | tuple) or len(value) != PYRAMID_LEVELS or not all(is_int(i) for i in value):
        raise ConfigError(
            f"decoder {decoder} option select_indices must be {PYRAMID_LEVELS} block indices "
            f"(e.g. [2, 5, 8, 11]) or null for evenly spaced blocks ending at the last, got {value!r}"
        )
    return tuple(value)


@dataclass(frozen=True)
class PyramidSettings(DecoderSettings):
    """Base of the settings of decoders fed by :class:`TokensToPyramid` (UperNet, UNet).

    Args:
        select_indices: the four block outputs feeding the pyramid; ``None`` (default) picks four evenly
            spaced blocks ending at the last.
    """

    #: The decoder's registry name, for messages.
    decoder: ClassVar[str] = "pyramid"

    select_indices: tuple[int, ...] | None = field(
        default=None, metadata={"help": "4 block outputs for the pyramid (null = evenly spaced, ending at last)"}
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "select_indices", parse_pyramid_indices(self.select_indices, self.decoder))

    def indices(self, backbone: BackboneInfo) -> tuple[int, ...]:
        """The features used on ``backbone``: ``select_indices`` or the default.

        The default is four evenly spaced blocks for a ViT and every map for a CNN (DeCUR: its four stages).
        """
        if self.select_indices is not None:
            return self.select_indices
        if backbone.kind == "cnn":
            return tuple(range(backbone.depth))
        return default_pyramid_indices(backbone.depth)

    def check(self, backbone: BackboneInfo, where: str = "") -> None:
        """Refuse ``select_indices`` outside the backbone's features, or CNN maps not ordered fine to coarse."""
        indices = self.indices(backbone)
        check_block_indices(indices, backbone, decoder=self.decoder, option="select_indices", where=where)
        if backbone.kind != "cnn":
            return
        strides = [backbone.strides[i] for i in indices]
        if any(a >= b for a, b in itertools.pairwise(strides)):
            prefix = f"{where}: " if where else ""
            raise ConfigError(
                f"{prefix}decoder {self.decoder} option select_indices {list(indices)} picks maps of {backbone.name} "
                f"at strides {strides}; a pyramid needs strictly increasing strides, so change decoder option "
                f"select_indices to increasing map indices (or null for all {backbone.depth} maps)"
            )
