"""The paper's "linear" decoder: one transposed convolution from the token grid back to pixels.

TerraTorch's ``LinearDecoder`` with ``upsampling_size`` = the patch size (16 for Prithvi) and
``rescale: false``, behind the ``SelectIndices [-1]`` + ``ReshapeTokensToImage`` necks: the final-norm
output of the last block, CLS dropped, tokens reshaped to ``[B, D, h, w]``, then
``ConvTranspose2d(D, num_classes, kernel = stride = patch)`` maps every token to its ``p×p`` pixel block,
so the logits have exactly the padded input size. The layer is named ``conv`` as in TerraTorch.

On a CNN backbone (DeCUR) the decoder reads the feature map ``in_index`` (default the last, layer4 at
stride 32) and upsamples by that map's stride (the paper's ``upsampling_size: 32``).

``upsampling`` sets the kernel and stride explicitly; when it is smaller than the map's stride the segmentor
rescales the logits bilinearly to the input size (TerraTorch's ``rescale: true``). The paper's ViT-Adapter cells
use ``upsampling: 16`` on the adapter's stride-32 map.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from geopeft.errors import ConfigError
from geopeft.models.necks import single_map_neck
from geopeft.models.registry import BackboneInfo, DecoderSettings, register_decoder


@dataclass(frozen=True)
class LinearSettings(DecoderSettings):
    """Options of the linear decoder.

    Args:
        in_index: the block output to decode; -1 (the default, as in the paper) is the final-norm output,
            other indices are raw block outputs.
        upsampling: kernel size and stride of the transposed convolution; 0 (the default) is the decoded
            map's stride, which gives the input size without rescaling.
    """

    in_index: int = field(default=-1, metadata={"help": "block output to decode (-1 = last, normed)"})
    upsampling: int = field(default=0, metadata={"help": "transposed-conv stride; 0 = the map's stride"})

    def __post_init__(self) -> None:
        for name in ("in_index", "upsampling"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"decoder linear option {name} must be an integer, got {value!r}")
        if self.upsampling < 0:
            raise ConfigError(
                f"decoder linear option upsampling must be >= 0 (0 = the map's stride), got {self.upsampling}"
            )

    def check(self, backbone: BackboneInfo, where: str = "") -> None:
        """Refuse an ``in_index`` outside the backbone's features (blocks of a ViT, maps of a CNN)."""
        if not -backbone.depth <= self.in_index < backbone.depth:
            prefix = f"{where}: " if where else ""
            what = "feature maps" if backbone.kind == "cnn" else "blocks"
            raise ConfigError(
                f"{prefix}decoder linear option in_index {self.in_index} is out of range for {backbone.name}, "
                f"which has {backbone.depth} {what}; allowed: {-backbone.depth} .. {backbone.depth - 1}"
            )


class LinearDecoder(nn.Module):
    """``ConvTranspose2d(in_channels, num_classes, kernel = stride = upsampling)`` on the last input map.

    Args:
        in_channels: channels of the input map.
        num_classes: output classes.
        upsampling: kernel size and stride (the stride of the decoded feature: the patch size for a ViT).
    """

    def __init__(self, in_channels: int, num_classes: int, upsampling: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(in_channels, num_classes, kernel_size=upsampling, stride=upsampling)

    def forward(self, features: list[Tensor]) -> Tensor:
        """``[B, C, h, w]`` → logits ``[B, num_classes, h·p, w·p]``."""
        out: Tensor = self.conv(features[-1])
        return out


@register_decoder("linear", LinearSettings)
def build_linear(backbone: BackboneInfo, settings: LinearSettings, num_classes: int) -> tuple[nn.Module, nn.Module]:
    """The neck (select ``in_index``; for a ViT also drop CLS and reshape) and the transposed-convolution decoder."""
    neck, channels, stride = single_map_neck(backbone, settings.in_index)
    return neck, LinearDecoder(channels, num_classes, settings.upsampling or stride)
