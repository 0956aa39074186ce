"""The Clay v1 encoder (TerraTorch ``clay_v1`` ``EmbeddingEncoder``), its checkpoint filter and loader.

Architecture as architectures.md §2: a ViT with patch size 8 whose patch embedding is generated from the
band wavelengths (:mod:`geopeft.models.clay_embed`); patch tokens get a GSD-scaled 2-D sin-cos embedding
of width ``D - 8`` concatenated with 8 metadata dims (time and lat/lon sin/cos), the CLS token gets no
position; pre-norm blocks from ``vit_pytorch.simple_vit`` (``to_qkv`` and ``to_out`` without bias, a
``FeedForward`` ``Sequential(LayerNorm, Linear, GELU, Linear)``). ``forward`` returns every block output
with its CLS token; only the last one goes through ``transformer.norm``.

Module names equal the official Lightning checkpoint's ``model.encoder.*`` keys with the prefix removed,
so :func:`checkpoint_filter_fn` only strips the prefix and drops the decoder/teacher entries.

Choices where the spec leaves room (see also the function docstrings):

* Wavelengths come from :data:`geopeft.data.bands.STUDY_WAVELENGTHS_UM`, the peft-geofm table the study passes
  (e.g. BLUE 0.493, RED_EDGE_1 0.704), not the ESA values the cache records (BLUE 0.490); an unknown band is a
  :class:`ConfigError`, where the reference silently uses 0.0. A ``waves`` metadata entry is not accepted: the
  bands fix the wavelengths.
* The position grid is computed for the input's token grid at run time (any H×W, multiples of 8). The
  reference fixes a square ``img_size // 8`` grid and fails on other sizes; on that grid both agree.
* ``gsd`` may be a float, a 0-d tensor or one value per sample (the reference takes the first sample's);
  absent, it is 1.0, as TerraTorch's ``Datacuber``. Absent ``time`` / ``latlon`` are zeros.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geopeft.data.bands import STUDY_WAVELENGTHS_UM
from geopeft.errors import ConfigError, WeightsError
from geopeft.models.clay_embed import DynamicEmbedding, posemb_sincos_2d_with_gsd
from geopeft.models.metadata import TL, clay_inputs
from geopeft.models.registry import register_backbone
from geopeft.models.weights.files import read_weights_file

__all__ = [
    "CKPT_PREFIX",
    "CLAY_BANDS",
    "EXPECTED_MISSING",
    "METADATA_DIM",
    "ClayEncoder",
    "checkpoint_filter_fn",
    "load_clay_weights",
    "wavelengths_for",
]

#: The 10 Sentinel-2 bands of the paper's "all bands" Clay runs (study.md §3.6).
CLAY_BANDS: tuple[str, ...] = (
    "BLUE",
    "GREEN",
    "RED",
    "RED_EDGE_1",
    "RED_EDGE_2",
    "RED_EDGE_3",
    "NIR_BROAD",
    "NIR_NARROW",
    "SWIR_1",
    "SWIR_2",
)
#: Width of the metadata part of each token's encoding: time (4) then lat/lon (4).
METADATA_DIM = 8
#: Prefix of the encoder's entries in the official Lightning checkpoint's ``state_dict``.
CKPT_PREFIX = "model.encoder."
#: Model keys the official checkpoint does not hold (none: the wavelengths are a non-persistent buffer).
EXPECTED_MISSING: frozenset[str] = frozenset()
#: GSD used when none is passed (TerraTorch ``Datacuber``); the paper passes 10 (S2) or 30 (HLS), and so does a
#: cell: every batch carries its dataset's GSD (:mod:`geopeft.models.metadata`).
DEFAULT_GSD = 1.0


def wavelengths_for(bands: Sequence[str]) -> list[float]:
    """The study's central wavelengths (µm) of ``bands``; an unknown band raises a :class:`ConfigError` naming it.

    The values are peft-geofm's (:data:`~geopeft.data.bands.STUDY_WAVELENGTHS_UM`), read at call time.
    """
    unknown = [b for b in bands if b not in STUDY_WAVELENGTHS_UM]
    if unknown:
        raise ConfigError(
            f"Clay needs the central wavelength of every band; unknown band(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(STUDY_WAVELENGTHS_UM)}"
        )
    return [STUDY_WAVELENGTHS_UM[b] for b in bands]


class Attention(nn.Module):
    """Pre-norm multi-head self-attention with bias-free ``to_qkv`` and ``to_out`` (``simple_vit``).

    Args:
        dim: token width.
        heads: attention heads.
        dim_head: width per head.
    """

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, N, dim]`` → ``[B, N, dim]`` (without the residual)."""
        b, n, _ = x.shape
        qkv = self.to_qkv(self.norm(x)).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # scale dim_head**-0.5
        out = out.transpose(1, 2).reshape(b, n, -1)
        result: Tensor = self.to_out(out)
        return result


class FeedForward(nn.Module):
    """``net = Sequential(LayerNorm, Linear(dim, hidden), GELU, Linear(hidden, dim))`` (keys ``net.0..3``).

    Args:
        dim: token width.
        hidden_dim: MLP width.
    """

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        """``[B, N, dim]`` → ``[B, N, dim]`` (without the residual)."""
        out: Tensor = self.net(x)
        return out


class Transformer(nn.Module):
    """``simple_vit`` Transformer: ``layers[i] = ModuleList([Attention, FeedForward])`` and a final ``norm``.

    Args:
        dim: token width.
        depth: number of layers.
        heads: attention heads.
        dim_head: width per head.
        mlp_dim: MLP width.
    """

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([Attention(dim, heads, dim_head), FeedForward(dim, mlp_dim)]) for _ in range(depth)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        """Every layer's output; the last one passed through ``norm``."""
        out: list[Tensor] = []
        for layer in self.layers:
            assert isinstance(layer, nn.ModuleList)  # for mypy: layers holds [Attention, FeedForward] pairs
            attn, ff = layer[0], layer[1]
            x = attn(x) + x
            x = ff(x) + x
            out.append(x)
        out[-1] = self.norm(x)
        return out


class ClayEncoder(nn.Module):
    """Clay v1 encoder for a fixed band list.

    Args:
        bands: input band names in channel order; their wavelengths condition the patch embedding.
        patch_size: patch size.
        embed_dim: token width.
        depth: number of blocks.
        num_heads: attention heads (``dim_head = embed_dim // num_heads``, 64 for the base model).
        mlp_ratio: MLP width over ``embed_dim``.
    """

    #: Metadata entries :class:`~geopeft.models.segmentor.Segmentor` passes to ``forward``.
    metadata_keys: tuple[str, ...] = ("time", "latlon", "gsd")
    #: Batch metadata (:mod:`geopeft.cache.metadata` fields) → ``forward`` keyword arguments; the dataset's GSD
    #: always comes, time and lat/lon when the cell asks for them (``clay_gw`` by default, ``clay_tlgw`` with both).
    metadata_inputs = staticmethod(clay_inputs)

    def __init__(
        self,
        bands: Sequence[str],
        patch_size: int = 8,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ConfigError(f"ClayEncoder: embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        if (embed_dim - METADATA_DIM) % 4 or embed_dim - METADATA_DIM < 8:
            raise ConfigError(f"ClayEncoder: embed_dim - {METADATA_DIM} must be a positive multiple of 4")
        self.bands = tuple(bands)
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.out_channels = [embed_dim] * depth
        self.waves: Tensor
        self.register_buffer("waves", torch.tensor(wavelengths_for(self.bands), dtype=torch.float32), persistent=False)
        self.cls_token = nn.Parameter(torch.randn(1, 1, embed_dim) * 0.02)
        self.patch_embedding = DynamicEmbedding(patch_size, embed_dim)
        self.transformer = Transformer(embed_dim, depth, num_heads, embed_dim // num_heads, int(embed_dim * mlp_ratio))

    def _check_input(self, x: Tensor) -> None:
        if x.ndim != 4:
            raise ConfigError(f"ClayEncoder expects [B, C, H, W] input, got shape {tuple(x.shape)}")
        if x.shape[1] != len(self.bands):
            raise ConfigError(
                f"ClayEncoder was built for {len(self.bands)} bands {list(self.bands)} but the input has "
                f"{x.shape[1]} channels; check model.bands against the dataset's bands"
            )
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ConfigError(
                f"ClayEncoder input {h}×{w} is not a multiple of the patch size {self.patch_size}; "
                "pad it first (Segmentor does)"
            )

    def _metadata(self, name: str, value: Tensor | None, batch: int, like: Tensor) -> Tensor:
        """``time`` or ``latlon`` as ``[B, 4]`` in ``like``'s dtype and device; zeros when absent."""
        if value is None:
            return like.new_zeros(batch, 4)
        if value.shape != (batch, 4):
            raise ConfigError(f"ClayEncoder: metadata {name!r} must have shape ({batch}, 4), got {tuple(value.shape)}")
        return value.detach().to(device=like.device, dtype=like.dtype)

    def _gsd(self, gsd: float | Tensor | None, batch: int, device: torch.device) -> Tensor:
        """The GSD as ``[B]`` float32 on ``device``."""
        value = torch.as_tensor(DEFAULT_GSD if gsd is None else gsd, dtype=torch.float32, device=device)
        value = value.detach().reshape(-1)
        if value.numel() == 1:
            return value.expand(batch)
        if value.numel() != batch:
            raise ConfigError(f"ClayEncoder: gsd must be one value or one per sample ({batch}), got {value.numel()}")
        return value

    def encode_patches(
        self,
        x: Tensor,
        time: Tensor | None = None,
        latlon: Tensor | None = None,
        gsd: float | Tensor | None = None,
    ) -> Tensor:
        """Patch tokens plus position/metadata encoding, without CLS: ``[B, h·w, D]``."""
        self._check_input(x)
        batch = x.shape[0]
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        patches: Tensor = self.patch_embedding(x, self.waves)
        pos = posemb_sincos_2d_with_gsd(h, w, self.embed_dim - METADATA_DIM, self._gsd(gsd, batch, x.device))
        meta = torch.cat(
            [self._metadata("time", time, batch, patches), self._metadata("latlon", latlon, batch, patches)], 1
        )
        encoding = torch.cat([pos.to(patches.dtype), meta[:, None, :].expand(-1, h * w, -1)], dim=-1)
        return patches + encoding

    def forward(
        self,
        x: Tensor,
        time: Tensor | None = None,
        latlon: Tensor | None = None,
        gsd: float | Tensor | None = None,
    ) -> list[Tensor]:
        """Encode an image.

        Args:
            x: ``[B, C, H, W]`` in the order of ``bands``; H and W multiples of the patch size.
            time: ``[B, 4]`` = sin/cos of week·2π/52 and hour·2π/24; zeros when absent.
            latlon: ``[B, 4]`` = sin/cos of latitude and longitude (radians); zeros when absent.
            gsd: ground sample distance in metres, one value or ``[B]``; 1.0 when absent.

        Returns:
            ``depth`` tensors ``[B, 1 + h·w, D]`` (CLS first): the raw block outputs, except the last,
            which is passed through ``transformer.norm``.
        """
        patches = self.encode_patches(x, time, latlon, gsd)
        cls_tokens = self.cls_token.to(patches.dtype).expand(patches.shape[0], -1, -1)
        features: list[Tensor] = self.transformer(torch.cat([cls_tokens, patches], dim=1))
        return features


def checkpoint_filter_fn(state_dict: Mapping[str, object], model: nn.Module) -> dict[str, Tensor]:
    """Map the official Clay v1 Lightning checkpoint onto :class:`ClayEncoder` keys.

    Unwraps ``state_dict``, keeps the ``model.encoder.*`` entries with the prefix removed and drops the
    rest (decoder, teacher, ...). Shapes are checked against ``model``; key sets are checked by
    :func:`load_clay_weights`.

    Args:
        state_dict: the checkpoint (with or without the Lightning ``state_dict`` wrapper).
        model: the target encoder.

    Raises:
        WeightsError: no ``model.encoder.*`` entry, a non-tensor entry, or a shape that differs.
    """
    inner = state_dict.get("state_dict", state_dict)
    if not isinstance(inner, Mapping):
        raise WeightsError("Clay checkpoint: 'state_dict' is not a mapping of tensors")
    out: dict[str, Tensor] = {}
    for key, value in inner.items():
        if not isinstance(key, str) or not key.startswith(CKPT_PREFIX):
            continue
        if not isinstance(value, Tensor):
            raise WeightsError(f"Clay checkpoint entry {key!r} is a {type(value).__name__}, not a tensor")
        out[key[len(CKPT_PREFIX) :]] = value
    if not out:
        raise WeightsError(f"Clay checkpoint has no {CKPT_PREFIX}* entries; is it the Clay v1 Lightning checkpoint?")
    own = model.state_dict()
    bad = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in out.items()
        if k in own and v.shape != own[k].shape
    ]
    if bad:
        raise WeightsError(f"Clay checkpoint shapes differ from the model: {'; '.join(bad)}")
    return out


def load_clay_weights(model: ClayEncoder, path: str | Path) -> ClayEncoder:
    """Load the official Clay v1 checkpoint file ``path`` into ``model`` (strict up to ``EXPECTED_MISSING``).

    Args:
        model: the encoder to fill in place.
        path: a local ``clay-v1-base.ckpt`` (read with ``torch.load(weights_only=True)``; no download).

    Returns:
        ``model``.

    Raises:
        WeightsError: the file is missing or unreadable, or the keys do not match (missing and
            unexpected keys are listed with the file).
    """
    path = Path(path)
    raw = read_weights_file(path, "Clay")
    try:
        filtered = checkpoint_filter_fn(raw, model)
    except WeightsError as exc:
        raise WeightsError(f"{path}: {exc}") from None
    expected = set(model.state_dict())
    missing = sorted(expected - set(filtered) - EXPECTED_MISSING)
    unexpected = sorted(set(filtered) - expected)
    if missing or unexpected:
        raise WeightsError(
            f"Clay weights {path} do not match the model: missing keys {missing}, unexpected keys {unexpected}"
        )
    model.load_state_dict(filtered, strict=False)
    return model


def _build(bands: tuple[str, ...], *, embed_dim: int, depth: int, num_heads: int) -> ClayEncoder:
    """A Clay encoder (patch 8, MLP ×4) for ``bands``."""
    return ClayEncoder(bands, patch_size=8, embed_dim=embed_dim, depth=depth, num_heads=num_heads)


# The builders take the chip size for the registry contract; the position grid follows the input grid at
# run time, so they do not use it.


@register_backbone("clay_tiny", default_bands=CLAY_BANDS, patch_size=8, embed_dim=64, depth=2, metadata=TL)
def clay_tiny(*, bands: tuple[str, ...], img_size: int) -> nn.Module:
    """A tiny Clay-shaped encoder (width 64, 2 blocks, 2 heads; full-size weight generator) for tests."""
    return _build(bands, embed_dim=64, depth=2, num_heads=2)


@register_backbone("clay_v1_base", default_bands=CLAY_BANDS, patch_size=8, embed_dim=768, depth=12, metadata=TL)
def clay_v1_base(*, bands: tuple[str, ...], img_size: int) -> nn.Module:
    """Clay v1 base: ViT-B/8 (width 768, 12 blocks, 12 heads of 64) with the dynamic embedding."""
    return _build(bands, embed_dim=768, depth=12, num_heads=12)
