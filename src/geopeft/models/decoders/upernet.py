"""The paper's UperNet decoder on the learned feature pyramid (TerraTorch's MMSeg-derived ``UperNetDecoder``).

Neck: four block outputs (``select_indices``; default four evenly spaced blocks ending at the last, i.e.
``[2,5,8,11]`` for 12 blocks and ``[5,11,17,23]`` for 24, as in the paper's configs) → tokens to maps →
:class:`~geopeft.models.necks.LearnedInterpolateToPyramidal` (strides 4/8/16/32 for patch 16).
On a CNN backbone (DeCUR) the neck only selects maps: the stage outputs (default all) are the pyramid.

Decoder, as TerraTorch ``decoders/upernet_decoder.py`` with ``align_corners=True``: a pyramid pooling
module (PPM) on the deepest level (adaptive average pool to each scale → 1×1 ConvModule → bilinear back,
concatenated with the input → 3×3 ConvModule ``bottleneck``); 1×1 lateral ConvModules on the other three
levels; a top-down path adding the bilinearly upsampled coarser level; 3×3 ``fpn_convs``; every level
upsampled to the finest and concatenated → 3×3 ``fpn_bottleneck``. ``ConvModule`` is Conv (no bias) +
BatchNorm2d + ReLU. A 1×1 ``head`` (TerraTorch's ``SegmentationHead``) gives logits at stride 4, which the
segmentor rescales bilinearly to the input size (TerraTorch's ``rescale: true``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geopeft.errors import ConfigError
from geopeft.models.necks import (
    PyramidSettings,
    is_int,
    pyramid_neck,
)
from geopeft.models.registry import BackboneInfo, register_decoder


@dataclass(frozen=True)
class UperNetSettings(PyramidSettings):
    """Options of the UperNet decoder.

    Args:
        channels: width of every ConvModule (paper: 256).
        pool_scales: output sizes of the PPM's adaptive pools (MMSeg/TerraTorch default ``(1, 2, 3, 6)``).
        select_indices: the four block outputs feeding the pyramid; ``None`` (default) picks four evenly
            spaced blocks ending at the last.
    """

    channels: int = field(default=256, metadata={"help": "width of every ConvModule"})
    pool_scales: tuple[int, ...] = field(default=(1, 2, 3, 6), metadata={"help": "PPM adaptive pool sizes"})

    decoder: ClassVar[str] = "upernet"

    def __post_init__(self) -> None:
        if not is_int(self.channels) or self.channels < 1:
            raise ConfigError(f"decoder upernet option channels must be a positive integer, got {self.channels!r}")
        scales = self.pool_scales
        if not isinstance(scales, list | tuple) or not scales or not all(is_int(s) and s >= 1 for s in scales):
            raise ConfigError(
                f"decoder upernet option pool_scales must be a non-empty list of positive integers, got {scales!r}"
            )
        object.__setattr__(self, "pool_scales", tuple(scales))
        super().__post_init__()


class ConvModule(nn.Sequential):
    """Conv2d (no bias) + BatchNorm2d + ReLU, as TerraTorch's ``decoders/utils.py::ConvModule``.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: 1 or 3 (padding keeps the size).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU()


def _resize(x: Tensor, size: Sequence[int]) -> Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


class PPM(nn.ModuleList):
    """Pyramid pooling: per scale, adaptive average pool → 1×1 ConvModule → bilinear back to the input size.

    Args:
        pool_scales: the adaptive pool output sizes.
        in_channels: input channels.
        channels: output channels of every branch.
    """

    def __init__(self, pool_scales: Sequence[int], in_channels: int, channels: int) -> None:
        super().__init__(
            nn.Sequential(nn.AdaptiveAvgPool2d(scale), ConvModule(in_channels, channels, 1)) for scale in pool_scales
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        """``[B, C, h, w]`` → one ``[B, channels, h, w]`` map per scale."""
        return [_resize(branch(x), x.shape[2:]) for branch in self]


class UperNetDecoder(nn.Module):
    """UperNet over a feature pyramid (finest first), plus the 1×1 class head.

    Args:
        in_channels: channels of each pyramid level, finest first.
        num_classes: output classes.
        channels: width of every ConvModule.
        pool_scales: PPM pool sizes.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int = 256,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
    ) -> None:
        super().__init__()
        levels = tuple(in_channels)
        self.psp_modules = PPM(pool_scales, levels[-1], channels)
        self.bottleneck = ConvModule(levels[-1] + len(pool_scales) * channels, channels, 3)
        self.lateral_convs = nn.ModuleList(ConvModule(c, channels, 1) for c in levels[:-1])
        self.fpn_convs = nn.ModuleList(ConvModule(channels, channels, 3) for _ in levels[:-1])
        self.fpn_bottleneck = ConvModule(len(levels) * channels, channels, 3)
        self.head = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, features: list[Tensor]) -> Tensor:
        """Pyramid maps (finest first) → logits at the finest level's size."""
        deepest = features[-1]
        psp = self.bottleneck(torch.cat([deepest, *self.psp_modules(deepest)], dim=1))
        laterals = [conv(features[i]) for i, conv in enumerate(self.lateral_convs)]
        laterals.append(psp)
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + _resize(laterals[i], laterals[i - 1].shape[2:])
        outs = [conv(laterals[i]) for i, conv in enumerate(self.fpn_convs)]
        outs.append(laterals[-1])
        size = outs[0].shape[2:]
        fused = self.fpn_bottleneck(torch.cat([outs[0], *(_resize(o, size) for o in outs[1:])], dim=1))
        out: Tensor = self.head(fused)
        return out


@register_decoder("upernet", UperNetSettings)
def build_upernet(backbone: BackboneInfo, settings: UperNetSettings, num_classes: int) -> tuple[nn.Module, nn.Module]:
    """The pyramid neck on ``select_indices`` (a CNN's maps as they are) and the UperNet decoder with its head."""
    neck, channels = pyramid_neck(backbone, settings.indices(backbone))
    decoder = UperNetDecoder(channels, num_classes, settings.channels, settings.pool_scales)
    return neck, decoder
