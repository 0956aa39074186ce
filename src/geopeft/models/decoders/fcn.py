"""The paper's FCN decoder: four upscaling blocks from the token grid back to pixels, then a 1×1 head.

TerraTorch's ``FCNDecoder`` (``decoders/fcn_decoder.py``) with the paper's ``channels 512``, ``num_convs 4``,
behind ``SelectIndices [-1]`` + ``ReshapeTokensToImage``. Each block is ``ConvTranspose2d 2×2 s2`` →
``Conv2d 3×3`` (bias) → LayerNorm over channels (eps 1e-6, TerraTorch's ``Norm2d``) → GELU, so 4 blocks take
stride 16 to stride 1. TerraTorch's ``SegmentationHead`` (dropout 0, no extra convs) is the ``head`` 1×1
convolution here. For a patch other than 16 the output size differs from the input and the segmentor
rescales it bilinearly, as TerraTorch's ``rescale`` does (Clay, patch 8: 2× the input, scaled down).
On a CNN backbone the decoder reads the map ``in_index`` (default the last: DeCUR's layer4 at stride 32,
so 4 blocks give stride 2 and the segmentor upsamples ×2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from geopeft.errors import ConfigError
from geopeft.models.necks import check_block_indices, is_int, single_map_neck
from geopeft.models.registry import BackboneInfo, DecoderSettings, register_decoder


@dataclass(frozen=True)
class FCNSettings(DecoderSettings):
    """Options of the FCN decoder.

    Args:
        channels: width of every upscaling block (paper: 512).
        num_convs: number of upscaling blocks, each doubling the resolution (paper: 4).
        in_index: the block output to decode; -1 (default) is the final-norm output.
    """

    channels: int = field(default=512, metadata={"help": "width of every upscaling block"})
    num_convs: int = field(default=4, metadata={"help": "upscaling blocks, each ×2 resolution"})
    in_index: int = field(default=-1, metadata={"help": "block output to decode (-1 = last, normed)"})

    def __post_init__(self) -> None:
        for name in ("channels", "num_convs"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ConfigError(f"decoder fcn option {name} must be a positive integer, got {value!r}")
        if not is_int(self.in_index):
            raise ConfigError(f"decoder fcn option in_index must be an integer, got {self.in_index!r}")

    def check(self, backbone: BackboneInfo, where: str = "") -> None:
        """Refuse an ``in_index`` outside the backbone's blocks."""
        check_block_indices((self.in_index,), backbone, decoder="fcn", option="in_index", where=where)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a ``[B, C, H, W]`` map (TerraTorch's ``Norm2d``, eps 1e-6)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        """Normalise every pixel's channel vector."""
        out: Tensor = super().forward(x.permute(0, 2, 3, 1))
        return out.permute(0, 3, 1, 2)


def upscale_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """TerraTorch's ``_conv_upscale_block``: ConvT 2×2 s2 → Conv 3×3 (bias) → LayerNorm2d → GELU."""
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2),
        nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=True),
        LayerNorm2d(out_channels),
        nn.GELU(),
    )


class FCNDecoder(nn.Module):
    """``num_convs`` upscaling blocks on the last input map, then a 1×1 class head.

    Args:
        in_channels: channels of the input map.
        num_classes: output classes.
        channels: width of every block.
        num_convs: number of blocks.
    """

    def __init__(self, in_channels: int, num_classes: int, channels: int = 512, num_convs: int = 4) -> None:
        super().__init__()
        blocks = [upscale_block(in_channels if i == 0 else channels, channels) for i in range(num_convs)]
        self.upscaling_block = nn.Sequential(*blocks)
        self.head = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, features: list[Tensor]) -> Tensor:
        """``[B, C, h, w]`` → logits ``[B, num_classes, h·2^n, w·2^n]``."""
        out: Tensor = self.head(self.upscaling_block(features[-1]))
        return out


@register_decoder("fcn", FCNSettings)
def build_fcn(backbone: BackboneInfo, settings: FCNSettings, num_classes: int) -> tuple[nn.Module, nn.Module]:
    """The neck (select ``in_index``; for a ViT also drop CLS and reshape) and the FCN decoder with its head."""
    neck, channels, _ = single_map_neck(backbone, settings.in_index)
    return neck, FCNDecoder(channels, num_classes, settings.channels, settings.num_convs)
