"""The Prithvi EO ViT encoder (TerraTorch ``PrithviViT``), sized by its registered variant.

Module names match the official checkpoints (``cls_token``, ``pos_embed``, ``patch_embed.proj.*``,
``blocks.{i}.norm1|attn.qkv|attn.proj|norm2|mlp.fc1|mlp.fc2``, ``norm.*``) so that a later loader can map
them one to one. The blocks are timm's ``Block`` with a biased fused qkv and torch's ``LayerNorm``
(eps 1e-5). ``forward`` returns every block output with its CLS token, and only the last one goes through
the final ``norm``, as TerraTorch's ``forward_features``.

The "TL" variants add a :class:`TemporalEncoder` (``temporal_embed_enc``) and a :class:`LocationEncoder`
(``location_embed_enc``), architectures.md §1.3: 1-D sin-cos encodings of the raw year and day of year
(``D/2`` each) and of latitude and longitude in degrees (``D/2`` each), times a learnable ``scale``
initialised to 0.1, added to the patch tokens only (not CLS), after the position embedding and one after the
other (temporal, then location, TerraTorch's order), and only when the coordinates are passed. Like TerraTorch
they are computed in float32 (the coordinates' dtype there).
Unlike TerraTorch, the frame count of the temporal encoding is the input's, not the built ``num_frames``,
and coordinates given to a model without the encoders raise instead of being ignored.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from geopeft.data.bands import HLS_BANDS
from geopeft.errors import ConfigError
from geopeft.models.metadata import TL, prithvi_inputs
from geopeft.models.pos_embed import get_3d_sincos_pos_embed, interpolate_pos_embed
from geopeft.models.registry import register_backbone

__all__ = [
    "HLS_BANDS",
    "METADATA_KEYS_TL",
    "PRETRAIN_IMG_SIZE",
    "LocationEncoder",
    "PatchEmbed",
    "PrithviViT",
    "TemporalEncoder",
]

#: Chip size of pre-training. The paper's configs never set ``backbone_img_size``, so the position
#: embedding is always built for this grid and resampled to the input's grid.
PRETRAIN_IMG_SIZE = 224
#: Metadata entries a TL variant reads: ``temporal_coords`` ``[B, T, 2]`` = (year, day of year - 1) and
#: ``location_coords`` ``[B, 2]`` = (lat, lon) in degrees of the chip centre (peft-geofm's datasets).
METADATA_KEYS_TL: tuple[str, ...] = ("temporal_coords", "location_coords")


def _sincos_1d(embed_dim: int, pos: Tensor) -> Tensor:
    """TerraTorch's ``_get_1d_sincos_embed_from_grid_torch`` in float32: ``[pos.numel(), embed_dim]``."""
    pos = pos.reshape(-1).float()
    omega = torch.arange(embed_dim // 2, dtype=torch.float32, device=pos.device) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega
    out = torch.outer(pos, omega)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def _make_scale(module: nn.Module, learnable: bool) -> None:
    """Give ``module`` a ``scale``: a parameter ``[1]`` = 0.1 when learnable, else a buffer ``[1]`` = 1."""
    if learnable:
        module.scale = nn.Parameter(torch.full((1,), 0.1))
    else:
        module.register_buffer("scale", torch.ones(1))


class TemporalEncoder(nn.Module):
    """Sin-cos encoding of (year, day of year): ``D/2`` dims each, concatenated, times ``scale``.

    Args:
        embed_dim: token width (even halves; TerraTorch gives the day ``D - D/2`` dims).
        trainable_scale: ``scale`` is a parameter initialised to 0.1 (all TL variants), else a fixed 1.
    """

    def __init__(self, embed_dim: int, trainable_scale: bool = True) -> None:
        super().__init__()
        self.year_dim = embed_dim // 2
        self.day_dim = embed_dim - self.year_dim
        self.scale: Tensor
        _make_scale(self, trainable_scale)

    def forward(self, temporal_coords: Tensor, tokens_per_frame: int) -> Tensor:
        """``[B, T, 2]`` → ``[B, T·tokens_per_frame, D]`` (each frame's encoding repeated for its tokens)."""
        shape = (*temporal_coords.shape[:2], -1)
        year = _sincos_1d(self.year_dim, temporal_coords[:, :, 0]).reshape(shape)
        day = _sincos_1d(self.day_dim, temporal_coords[:, :, 1]).reshape(shape)
        embedding = self.scale * torch.cat([year, day], dim=-1)
        return torch.repeat_interleave(embedding, tokens_per_frame, dim=1)


class LocationEncoder(nn.Module):
    """Sin-cos encoding of (lat, lon) in degrees: ``D/2`` dims each, concatenated, times ``scale``.

    Args:
        embed_dim: token width.
        trainable_scale: ``scale`` is a parameter initialised to 0.1 (all TL variants), else a fixed 1.
    """

    def __init__(self, embed_dim: int, trainable_scale: bool = True) -> None:
        super().__init__()
        self.lat_dim = embed_dim // 2
        self.lon_dim = embed_dim - self.lat_dim
        self.scale: Tensor
        _make_scale(self, trainable_scale)

    def forward(self, location_coords: Tensor) -> Tensor:
        """``[B, 2]`` → ``[B, 1, D]``, broadcast over the tokens by the caller."""
        shape = (location_coords.shape[0], 1, -1)
        lat = _sincos_1d(self.lat_dim, location_coords[:, 0]).reshape(shape)
        lon = _sincos_1d(self.lon_dim, location_coords[:, 1]).reshape(shape)
        result: Tensor = self.scale * torch.cat([lat, lon], dim=-1)
        return result


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
        coords_encoding: build the temporal and location encoders (the "TL" variants).
        coords_scale_learn: their ``scale`` is learnable (init 0.1) rather than fixed at 1.
        bands: the input band names in channel order (used to map pretrained patch-embedding channels);
            ``None`` when unknown.
    """

    #: Metadata entries :class:`~geopeft.models.segmentor.Segmentor` passes to ``forward`` (TL variants
    #: set :data:`METADATA_KEYS_TL` on the instance).
    metadata_keys: tuple[str, ...] = ()
    metadata_inputs = staticmethod(prithvi_inputs)  #: batch metadata → ``forward`` keyword arguments

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
        coords_encoding: bool = False,
        coords_scale_learn: bool = True,
        bands: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if img_size < patch_size:
            raise ConfigError(f"PrithviViT: img_size {img_size} is smaller than the patch size {patch_size}")
        if embed_dim % num_heads:
            raise ConfigError(f"PrithviViT: embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        if bands is not None and len(bands) != in_chans:
            raise ConfigError(f"PrithviViT: {len(bands)} band names {list(bands)} for in_chans {in_chans}")
        self.bands = None if bands is None else tuple(bands)
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
        # Built after the initialisation (and drawing no random numbers), so that a TL model and its plain
        # twin built from the same seed hold the same weights.
        self.coords_encoding = coords_encoding
        if coords_encoding:
            self.temporal_embed_enc = TemporalEncoder(embed_dim, coords_scale_learn)
            self.location_embed_enc = LocationEncoder(embed_dim, coords_scale_learn)
            self.metadata_keys = METADATA_KEYS_TL

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

    def _add_coords(
        self, tokens: Tensor, frames: int, temporal_coords: Tensor | None, location_coords: Tensor | None
    ) -> Tensor:
        """The patch ``tokens`` ``[B, T·h·w, D]`` plus the TL encodings given, added one after the other.

        The temporal encoding is added first, then the location encoding, each to the running sum, as TerraTorch's
        ``PrithviViT.forward_features`` does (adding their sum instead rounds differently).
        """
        if not self.coords_encoding:
            if temporal_coords is not None or location_coords is not None:
                raise ConfigError(
                    "PrithviViT: temporal_coords/location_coords given to a model without the TL encoders; "
                    "use a *_tl backbone or drop the coordinates"
                )
            return tokens
        batch = tokens.shape[0]
        if temporal_coords is not None:
            if temporal_coords.shape != (batch, frames, 2):
                raise ConfigError(
                    f"PrithviViT: temporal_coords must have shape ({batch}, {frames}, 2) = (year, day of year) "
                    f"per frame, got {tuple(temporal_coords.shape)}"
                )
            tokens = tokens + self.temporal_embed_enc(temporal_coords.to(tokens.device), tokens.shape[1] // frames)
        if location_coords is not None:
            if location_coords.shape != (batch, 2):
                raise ConfigError(
                    f"PrithviViT: location_coords must have shape ({batch}, 2) = (lat, lon), "
                    f"got {tuple(location_coords.shape)}"
                )
            tokens = tokens + self.location_embed_enc(location_coords.to(tokens.device))
        return tokens

    def embed(
        self, x: Tensor, temporal_coords: Tensor | None = None, location_coords: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """The tokens before the blocks (arguments as :meth:`forward`; ViT-Adapter runs the blocks itself).

        Returns:
            ``(patch tokens [B, T·h·w, D], CLS token [B, 1, D])``: the patch tokens with the position
            embedding (resampled to the input grid) and the TL encodings, the CLS token with its own.
        """
        x = self._check_input(x)
        t, h, w = x.shape[-3:]
        new_grid = (t, h // self.patch_size, w // self.patch_size)
        pos_embed = interpolate_pos_embed(self.pos_embed, self.grid_size, new_grid)
        tokens = self.patch_embed(x) + pos_embed[:, 1:, :]
        tokens = self._add_coords(tokens, t, temporal_coords, location_coords)
        cls_tokens = (self.cls_token + pos_embed[:, :1, :]).expand(tokens.shape[0], -1, -1)
        return tokens, cls_tokens

    def forward(
        self, x: Tensor, temporal_coords: Tensor | None = None, location_coords: Tensor | None = None
    ) -> list[Tensor]:
        """Encode an image (TerraTorch's ``forward_features``).

        Args:
            x: ``[B, C, H, W]`` (one frame) or ``[B, C, T, H, W]``; H and W multiples of the patch size.
            temporal_coords: TL variants only: ``[B, T, 2]`` = (year, day of year - 1) per frame.
            location_coords: TL variants only: ``[B, 2]`` = (lat, lon) in degrees.

        Returns:
            ``depth`` tensors ``[B, 1 + T·h·w, D]`` (CLS first): the raw block outputs, except the last,
            which is passed through the final ``norm``.
        """
        tokens, cls_tokens = self.embed(x, temporal_coords, location_coords)
        tokens = torch.cat([cls_tokens, tokens], dim=1)
        out: list[Tensor] = []
        for block in self.blocks:
            tokens = block(tokens)
            out.append(tokens)
        out[-1] = self.norm(tokens)
        return out


def _build(
    bands: tuple[str, ...],
    *,
    embed_dim: int,
    depth: int,
    num_heads: int,
    patch_size: int = 16,
    coords_encoding: bool = False,
) -> PrithviViT:
    """A single-frame Prithvi for ``bands`` with the pre-training position grid (TerraTorch's factory)."""
    return PrithviViT(
        img_size=PRETRAIN_IMG_SIZE,
        patch_size=patch_size,
        num_frames=1,
        in_chans=len(bands),
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        coords_encoding=coords_encoding,
        coords_scale_learn=True,
        bands=bands,
    )


# The builders take the chip size for the registry contract; Prithvi keeps the 224-pixel position grid
# and resamples it to the input grid at run time (see PRETRAIN_IMG_SIZE), so they do not use it.
# There is no plain "prithvi_eo_v2_100": only the TL weights exist (architectures.md §1.2).


@register_backbone("prithvi_tiny", default_bands=HLS_BANDS, patch_size=16, embed_dim=64, depth=4)
def prithvi_tiny(*, bands: tuple[str, ...], img_size: int) -> nn.Module:
    """A tiny Prithvi-shaped ViT (width 64, 4 blocks, 4 heads) for the demo and the tests."""
    return _build(bands, embed_dim=64, depth=4, num_heads=4)


@register_backbone("prithvi_tiny_tl", default_bands=HLS_BANDS, patch_size=16, embed_dim=64, depth=4, metadata=TL)
def prithvi_tiny_tl(*, bands: tuple[str, ...], img_size: int) -> nn.Module:
    """:func:`prithvi_tiny` with the temporal and location encoders, for the tests."""
    return _build(bands, embed_dim=64, depth=4, num_heads=4, coords_encoding=True)


@register_backbone("prithvi_eo_v1_100", default_bands=HLS_BANDS, patch_size=16, embed_dim=768, depth=12)
def prithvi_eo_v1_100(*, bands: tuple[str, ...], img_size: int) -> nn.Module:
    """Prithvi EO 1.0 100M: ViT-B/16 (width 768, 12 blocks, 12 heads)."""
    return _build(bands, embed_dim=768, depth=12, num_heads=12)


@register_backbone(
    "prithvi_eo_v2_100_tl", default_bands=HLS_BANDS, patch_size=16, embed_dim=768, depth=12, metadata=TL
)
def prithvi_eo_v2_100_tl(*, bands: tuple[str, ...], img_size: int) -> nn.Module:
    """Prithvi EO 2.0 100M-TL: ViT-B/16 (width 768, 12 blocks, 12 heads) with the TL encoders."""
    return _build(bands, embed_dim=768, depth=12, num_heads=12, coords_encoding=True)


@register_backbone("prithvi_eo_v2_300", default_bands=HLS_BANDS, patch_size=16, embed_dim=1024, depth=24)
def prithvi_eo_v2_300(*, bands: tuple[str, ...], img_size: int) -> nn.Module:
    """Prithvi EO 2.0 300M: ViT-L/16 (width 1024, 24 blocks, 16 heads)."""
    return _build(bands, embed_dim=1024, depth=24, num_heads=16)


@register_backbone(
    "prithvi_eo_v2_300_tl", default_bands=HLS_BANDS, patch_size=16, embed_dim=1024, depth=24, metadata=TL
)
def prithvi_eo_v2_300_tl(*, bands: tuple[str, ...], img_size: int) -> nn.Module:
    """Prithvi EO 2.0 300M-TL: ViT-L/16 (width 1024, 24 blocks, 16 heads) with the TL encoders."""
    return _build(bands, embed_dim=1024, depth=24, num_heads=16, coords_encoding=True)


@register_backbone("prithvi_eo_v2_600", default_bands=HLS_BANDS, patch_size=14, embed_dim=1280, depth=32)
def prithvi_eo_v2_600(*, bands: tuple[str, ...], img_size: int) -> nn.Module:
    """Prithvi EO 2.0 600M: ViT-H/14 (width 1280, 32 blocks, 16 heads, patch 14)."""
    return _build(bands, embed_dim=1280, depth=32, num_heads=16, patch_size=14)


@register_backbone(
    "prithvi_eo_v2_600_tl", default_bands=HLS_BANDS, patch_size=14, embed_dim=1280, depth=32, metadata=TL
)
def prithvi_eo_v2_600_tl(*, bands: tuple[str, ...], img_size: int) -> nn.Module:
    """Prithvi EO 2.0 600M-TL: ViT-H/14 (width 1280, 32 blocks, 16 heads, patch 14) with the TL encoders."""
    return _build(bands, embed_dim=1280, depth=32, num_heads=16, patch_size=14, coords_encoding=True)
