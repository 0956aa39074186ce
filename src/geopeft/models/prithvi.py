"""The Prithvi EO ViT encoder (TerraTorch ``PrithviViT``), sized by its registered variant.

Module names match the official checkpoints (``cls_token``, ``pos_embed``, ``patch_embed.proj.*``,
``blocks.{i}.norm1|attn.qkv|attn.proj|norm2|mlp.fc1|mlp.fc2``, ``norm.*``) so that a later loader can map
them one to one. The blocks are timm's ``Block`` with a biased fused qkv and torch's ``LayerNorm``
(eps 1e-5). ``forward`` returns every block output with its CLS token, and only the last one goes through
the final ``norm``, as TerraTorch's ``forward_features``. The time/location ("TL") encoders are not built.
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from geopeft.data.bands import HLS_BANDS
from geopeft.errors import ConfigError
from geopeft.models.pos_embed import get_3d_sincos_pos_embed, interpolate_pos_embed
from geopeft.models.registry import register_backbone

__all__ = ["HLS_BANDS", "PRETRAIN_IMG_SIZE", "PatchEmbed", "PrithviViT"]

#: Chip size of pre-training. The paper's configs never set ``backbone_img_size``, so the position
#: embedding is always built for this grid and resampled to the input's grid.
PRETRAIN_IMG_SIZE = 224


class PatchEmbed(nn.Module):
    """Tubelet embedding: a ``Conv3d`` with kernel = stride = ``(1, p, p)``, flattened time-major.

    Args:
        patch_size: spatial patch size ``p`` (the tubelet depth is 1).
        in_chans: input channels.
        embed_dim: token width.
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = (1, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, T, H, W]`` → ``[B, T·(H/p)·(W/p), D]``."""
        tokens: Tensor = self.proj(x)
        return tokens.flatten(2).transpose(1, 2)


class PrithviViT(nn.Module):
    """Prithvi ViT encoder.

    Args:
        img_size: chip size the fixed position embedding is built for (224 in every paper config).
        patch_size: spatial patch size.
        num_frames: frames per input; 4-D inputs are read as one frame.
        in_chans: input channels (bands).
        embed_dim: token width.
        depth: number of transformer blocks.
        num_heads: attention heads per block.
        mlp_ratio: MLP hidden width over ``embed_dim``.
    """

    def __init__(
        self,
        img_size: int = PRETRAIN_IMG_SIZE,
        patch_size: int = 16,
        num_frames: int = 1,
        in_chans: int = 6,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if img_size < patch_size:
            raise ConfigError(f"PrithviViT: img_size {img_size} is smaller than the patch size {patch_size}")
        if embed_dim % num_heads:
            raise ConfigError(f"PrithviViT: embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.in_chans = in_chans
        self.num_frames = num_frames
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.grid_size = (num_frames, img_size // patch_size, img_size // patch_size)
        self.out_channels = [embed_dim] * depth

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        pos_embed = get_3d_sincos_pos_embed(embed_dim, self.grid_size, add_cls_token=True)
        self.pos_embed: Tensor
        self.register_buffer("pos_embed", pos_embed.unsqueeze(0))
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=nn.LayerNorm) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        """TerraTorch's initialisation: xavier-uniform linears and patch embedding, N(0, 0.02) CLS."""
        weight = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _check_input(self, x: Tensor) -> Tensor:
        """Return ``x`` as ``[B, C, T, H, W]`` after checking channels and divisibility."""
        if x.ndim == 4 and self.num_frames == 1:
            x = x.unsqueeze(2)
        if x.ndim != 5:
            raise ConfigError(f"PrithviViT expects [B, C, H, W] or [B, C, T, H, W] input, got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            raise ConfigError(
                f"PrithviViT was built for {self.in_chans} bands but the input has {x.shape[1]} channels; "
                "check model.bands against the dataset's bands"
            )
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ConfigError(
                f"PrithviViT input {h}×{w} is not a multiple of the patch size {self.patch_size}; "
                "pad it first (Segmentor does)"
            )
        return x

    def forward(self, x: Tensor) -> list[Tensor]:
        """Encode an image (TerraTorch's ``forward_features``).

        Args:
            x: ``[B, C, H, W]`` (one frame) or ``[B, C, T, H, W]``; H and W multiples of the patch size.

        Returns:
            ``depth`` tensors ``[B, 1 + T·h·w, D]`` (CLS first): the raw block outputs, except the last,
            which is passed through the final ``norm``.
        """
        x = self._check_input(x)
        t, h, w = x.shape[-3:]
        new_grid = (t, h // self.patch_size, w // self.patch_size)
        pos_embed = interpolate_pos_embed(self.pos_embed, self.grid_size, new_grid)
        tokens = self.patch_embed(x) + pos_embed[:, 1:, :]
        cls_tokens = (self.cls_token + pos_embed[:, :1, :]).expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls_tokens, tokens], dim=1)
        out: list[Tensor] = []
        for block in self.blocks:
            tokens = block(tokens)
            out.append(tokens)
        out[-1] = self.norm(tokens)
        return out


def _build(bands: tuple[str, ...], *, embed_dim: int, depth: int, num_heads: int, patch_size: int = 16) -> PrithviViT:
    """A single-frame Prithvi for ``bands`` with the pre-training position grid (TerraTorch's factory)."""
    return PrithviViT(
        img_size=PRETRAIN_IMG_SIZE,
        patch_size=patch_size,
        num_frames=1,
        in_chans=len(bands),
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
    )


# The builders take the chip size for the registry contract; Prithvi keeps the 224-pixel position grid
# and resamples it to the input grid at run time (see PRETRAIN_IMG_SIZE), so they do not use it.


@register_backbone("prithvi_tiny", default_bands=HLS_BANDS, patch_size=16, embed_dim=64, depth=4)
def prithvi_tiny(*, bands: tuple[str, ...], img_size: int) -> nn.Module:
    """A tiny Prithvi-shaped ViT (width 64, 4 blocks, 4 heads) for the demo and the tests."""
    return _build(bands, embed_dim=64, depth=4, num_heads=4)


@register_backbone("prithvi_eo_v1_100", default_bands=HLS_BANDS, patch_size=16, embed_dim=768, depth=12)
def prithvi_eo_v1_100(*, bands: tuple[str, ...], img_size: int) -> nn.Module:
    """Prithvi EO 1.0 100M: ViT-B/16 (width 768, 12 blocks, 12 heads)."""
    return _build(bands, embed_dim=768, depth=12, num_heads=12)


@register_backbone("prithvi_eo_v2_300", default_bands=HLS_BANDS, patch_size=16, embed_dim=1024, depth=24)
def prithvi_eo_v2_300(*, bands: tuple[str, ...], img_size: int) -> nn.Module:
    """Prithvi EO 2.0 300M: ViT-L/16 (width 1024, 24 blocks, 16 heads)."""
    return _build(bands, embed_dim=1024, depth=24, num_heads=16)
