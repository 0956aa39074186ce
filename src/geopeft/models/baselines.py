"""The paper's two baselines (study §2): ViT-B/16 (ImageNet-21k) and a U-Net with a random ResNet-50 encoder.

``vit_b16`` is timm's ``vit_base_patch16_224`` architecture (patch 16, width 768, 12 blocks of 12 heads,
MLP ×4, qkv bias, CLS token, LayerNorm eps 1e-6) with ``in_chans`` = the number of bands (6 HLS bands by
default) and ``img_size`` = the dataset chip size. Like Prithvi it returns every block output with CLS
first, the last one through the final norm, so the ViT necks and all four decoders work on it; the paper
uses it with the linear decoder (upsampling 16). ``dynamic_img_size`` lets padded non-square inputs
through (the position grid is resampled). Its weights (timm's ``augreg_in21k_ft_in1k``, catalogue entry
``vit_b16``) are loaded by :mod:`geopeft.models.weights.vit`.

``unet_resnet50`` stands for TerraTorch's SMPModelFactory ``Unet`` with a ``resnet50`` encoder,
``pretrained: false``. It is built from parts geopeft already has instead of
``segmentation_models_pytorch``, which is not installed and whose decoder API changed across versions
(spec §7.2): the encoder is the timm ResNet-50 of :mod:`geopeft.models.resnet` (random init), returning
the five maps SMP's U-Net uses (``act1`` at stride 2 and ``layer1`` … ``layer4``), and the decoder is the
existing ``unet`` decoder, which is SMP's ``UnetDecoder`` block for block. With decoder option
``channels: [256, 128, 64, 32, 16]`` (SMP's default ``decoder_channels``) the layout is SMP's ``Unet``
(head = layer4, skips layer3 … act1, a last block without skip back to stride 1); the one difference is
the class head, a 1×1 convolution here and a 3×3 one in SMP (a few hundred parameters).
"""

from __future__ import annotations

from collections.abc import Sequence

from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from geopeft.data.bands import HLS_BANDS
from geopeft.errors import ConfigError
from geopeft.models.registry import register_backbone
from geopeft.models.resnet import ResNetEncoder

__all__ = ["ViTB16Encoder", "unet_resnet50", "vit_b16"]


class ViTB16Encoder(VisionTransformer):
    """timm's ``VisionTransformer`` as a backbone returning all block outputs (see the module docstring).

    Args:
        bands: input band names (``in_chans = len(bands)``).
        img_size: the chip size the position embedding is made for.
        patch_size: patch size in pixels.
        embed_dim: token width.
        depth: number of blocks.
        num_heads: attention heads per block.
    """

    def __init__(
        self,
        bands: Sequence[str],
        img_size: int,
        *,
        patch_size: int = 16,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
    ) -> None:
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=len(bands),
            num_classes=0,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=4.0,
            qkv_bias=True,
            class_token=True,
            dynamic_img_size=True,
        )
        self.bands = tuple(bands)
        self.in_chans = len(self.bands)
        self.out_channels = [embed_dim] * depth

    def forward(self, x: Tensor) -> list[Tensor]:  # type: ignore[override]  # returns features, not logits
        """``[B, C, H, W]`` (H, W multiples of the patch) → ``depth`` tensors ``[B, 1 + h·w, D]``, CLS first.

        The outputs are the raw block outputs except the last, which goes through the final ``norm``
        (as Prithvi and TerraTorch's ``SelectIndices [-1]``).
        """
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ConfigError(
                f"vit_b16 expects [B, {self.in_chans}, H, W] images (bands {list(self.bands)}), got "
                f"{tuple(x.shape)}; check model.bands against the dataset's bands"
            )
        tokens = self.norm_pre(self.patch_drop(self._pos_embed(self.patch_embed(x))))
        out: list[Tensor] = []
        for block in self.blocks:
            tokens = block(tokens)
            out.append(tokens)
        out[-1] = self.norm(tokens)
        return out


@register_backbone("vit_b16", default_bands=HLS_BANDS, patch_size=16, embed_dim=768, depth=12)
def vit_b16(*, bands: tuple[str, ...], img_size: int) -> nn.Module:
    """The ViT-B/16 baseline (timm ``vit_base_patch16_224`` architecture) for ``bands`` at ``img_size``."""
    return ViTB16Encoder(bands, img_size)


# SMP's Unet reads five encoder maps (the identity at stride 1 is dropped by its decoder): act1 and the
# four residual stages. The chip size is not used: any multiple of 32 works (the segmentor pads to it).


@register_backbone(
    "unet_resnet50",
    default_bands=HLS_BANDS,
    patch_size=32,
    kind="cnn",
    out_channels=(64, 256, 512, 1024, 2048),
    strides=(2, 4, 8, 16, 32),
)
def unet_resnet50(*, bands: tuple[str, ...], img_size: int) -> nn.Module:
    """The U-Net baseline's encoder: a randomly initialised ResNet-50 returning ``act1`` and ``layer1..4``."""
    return ResNetEncoder(bands, out_indices=(0, 1, 2, 3, 4))
