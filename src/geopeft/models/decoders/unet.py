"""The paper's UNet decoder on the learned feature pyramid, in plain PyTorch.

TerraTorch's ``UNetDecoder`` wraps ``segmentation_models_pytorch``'s ``UnetDecoder`` with
``encoder_channels = [E0, *E]`` (first map duplicated), ``n_blocks = len(channels)``, batch norm, no
attention and no centre block. SMP drops the first entry and reverses the rest, so on the pyramid
(strides 4/8/16/32, channels ``[C/4, C/2, C, C]``) the *head* is the stride-32 map and the skips are the
stride-16, 8 and 4 maps; a block past the last skip has none. Each SMP ``DecoderBlock`` is: nearest ×2
upsample → concatenate the skip → 2 × ``Conv2dReLU`` (Conv 3×3 without bias + BatchNorm2d + ReLU).
:class:`UNetBlock` is that block with the same layer names (``conv1``/``conv2``, each ``0`` conv, ``1`` BN).
With the paper's ``channels [512, 256, 128, 64]`` the output is at stride 2 with 64 channels; a 1×1
``head`` (TerraTorch's ``SegmentationHead``) gives logits that the segmentor rescales bilinearly ×2.

On a CNN backbone there is no neck work: the decoder reads the backbone's maps (default all of them:
DeCUR's stages 1–4 at strides 4–32, or the five maps of the ``unet_resnet50`` baseline, act1 at stride 2
included, whose SMP layout needs ``channels [256, 128, 64, 32, 16]``).

One deviation: the nearest upsample goes to the skip's size rather than exactly ×2. The two agree whenever
the token grid is even; on an odd grid (e.g. 112×128 pixels = 7×8 tokens, whose stride-32 map is floored to
3×4) SMP would fail on the concatenation, while this version still runs.
"""

from __future__ import annotations

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
class UNetSettings(PyramidSettings):
    """Options of the UNet decoder.

    Args:
        channels: output channels of each decoder block, coarsest first (paper: ``[512, 256, 128, 64]``).
        select_indices: the four block outputs feeding the pyramid; ``None`` (default) picks four evenly
            spaced blocks ending at the last.
    """

    channels: tuple[int, ...] = field(
        default=(512, 256, 128, 64), metadata={"help": "decoder block widths, coarsest first"}
    )

    decoder: ClassVar[str] = "unet"

    def __post_init__(self) -> None:
        chans = self.channels
        if not isinstance(chans, list | tuple) or not chans or not all(is_int(c) and c >= 1 for c in chans):
            raise ConfigError(
                f"decoder unet option channels must be a non-empty list of positive integers, got {chans!r}"
            )
        object.__setattr__(self, "channels", tuple(chans))
        super().__post_init__()


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """SMP's ``Conv2dReLU`` with batch norm: Conv 3×3 (no bias) + BatchNorm2d + ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class UNetBlock(nn.Module):
    """SMP's ``DecoderBlock``: upsample ×2 (nearest) → concat skip → two conv-BN-ReLU.

    Args:
        in_channels: channels of the coarser input.
        skip_channels: channels of the skip (0 for none).
        out_channels: output channels.
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(in_channels + skip_channels, out_channels)
        self.conv2 = conv_bn_relu(out_channels, out_channels)

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        """Upsample ``x`` (to the skip's size when there is one), concatenate the skip, convolve."""
        if skip is None:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            x = torch.cat([F.interpolate(x, size=skip.shape[2:], mode="nearest"), skip], dim=1)
        out: Tensor = self.conv2(self.conv1(x))
        return out


class UNetDecoder(nn.Module):
    """UNet decoder over a feature pyramid (finest first), plus the 1×1 class head.

    Args:
        in_channels: channels of each pyramid level, finest first.
        num_classes: output classes.
        channels: output channels of each block, coarsest first.
    """

    def __init__(self, in_channels: tuple[int, ...], num_classes: int, channels: tuple[int, ...]) -> None:
        super().__init__()
        reversed_levels = in_channels[::-1]
        skips = [*reversed_levels[1:], *([0] * len(channels))][: len(channels)]
        inputs = [reversed_levels[0], *channels[:-1]]
        self.blocks = nn.ModuleList(UNetBlock(i, s, o) for i, s, o in zip(inputs, skips, channels, strict=True))
        self.head = nn.Conv2d(channels[-1], num_classes, kernel_size=1)

    def forward(self, features: list[Tensor]) -> Tensor:
        """Pyramid maps (finest first) → logits, one ×2 per block from the coarsest map."""
        x, *skips = features[::-1]
        for i, block in enumerate(self.blocks):
            x = block(x, skips[i] if i < len(skips) else None)
        out: Tensor = self.head(x)
        return out


@register_decoder("unet", UNetSettings)
def build_unet(backbone: BackboneInfo, settings: UNetSettings, num_classes: int) -> tuple[nn.Module, nn.Module]:
    """The pyramid neck on ``select_indices`` (a CNN's maps as they are) and the UNet decoder with its head."""
    neck, channels = pyramid_neck(backbone, settings.indices(backbone))
    return neck, UNetDecoder(channels, num_classes, settings.channels)
