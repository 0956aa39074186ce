"""The ViT-Adapter backbone: a Prithvi ViT run with interleaved adapter interactions → a 4-level pyramid.

architectures.md §6, "Forward" (TerraTorch ``PrithviViTAdapter.forward_features``, L177–256):

1. reference points for the injector (queries: the ViT grid at stride 16; keys: SPM levels at strides 8,
   16, 32) and the extractor (the reverse);
2. SPM features, ``level_embed[0..2]`` added to c2, c3, c4, which are concatenated into ``c``;
3. patch embedding + position embedding (resampled) + the TL encodings, **without the CLS token**
   (:meth:`PrithviViT.embed <geopeft.models.prithvi.PrithviViT.embed>`);
4. per interaction: injector, the ViT blocks ``interaction_indexes[i][0] .. [1]``, extractor (and the extra
   extractors on the last); the ViT tokens are kept as a ``[B, D, h, w]`` map;
5. ``c`` is split back into c2, c3, c4; ``c1 = up(c2) + c1`` (``up`` a ConvTranspose2d 2×2 s2);
6. with ``add_vit_feature``, the four kept ViT maps resized ×4, ×2, ×1, ×0.5 (bilinear) are added;
7. BatchNorm ``norm1..norm4`` → four ``[B, D, H/s, W/s]`` maps at strides 4, 8, 16, 32.

The ViT's ``cls_token`` and final ``norm`` are not used (the reference deletes them); they stay in the
wrapped :class:`~geopeft.models.prithvi.PrithviViT` (frozen), so its pretrained state dict is unchanged.
Inputs must be multiples of 32 pixels (the segmentor pads to that, as TerraTorch's twice-the-patch padding).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geopeft.errors import ConfigError
from geopeft.models.prithvi import PrithviViT
from geopeft.tuning.vit_adapter.modules import InteractionBlock, SpatialPriorModule, init_adapter_weights
from geopeft.tuning.vit_adapter.msda import MSDeformAttn, reference_points

#: Strides of the four output maps, finest first.
STRIDES = (4, 8, 16, 32)
#: The patch size the adapter's geometry assumes (ViT tokens at stride 16, between the SPM's 8 and 32).
PATCH_SIZE = 16
#: Prefixes of the adapter's own (trainable) parameters: the reference ``freeze()``'s ``extra_layers``.
ADAPTER_PREFIXES = ("level_embed", "spm", "interactions", "up", "norm1", "norm2", "norm3", "norm4")


def default_interaction_indexes(depth: int) -> tuple[tuple[int, int], ...]:
    """Four equal runs of blocks: ``[[0,2],[3,5],[6,8],[9,11]]`` for 12, ``[[0,5],…,[18,23]]`` for 24.

    These are ``prithvi_adapter_cfgs`` for ViT-B and ViT-L (architectures.md §6); other depths get the
    same rule, ``[k·d/4, (k+1)·d/4 − 1]`` (floored), e.g. ``[[0,0],[1,1],[2,2],[3,3]]`` for the tiny test ViT.

    Args:
        depth: the ViT's number of blocks (at least 4).
    """
    if depth < len(STRIDES):
        raise ConfigError(f"vit_adapter needs a ViT with at least {len(STRIDES)} blocks, got {depth}")
    return tuple((k * depth // 4, (k + 1) * depth // 4 - 1) for k in range(4))


def check_interaction_indexes(indexes: Sequence[Sequence[int]], depth: int) -> None:
    """Raise a :class:`ConfigError` unless ``indexes`` are ``[start, end]`` runs covering 0..depth−1 in order."""
    expected = 0
    for pair in indexes:
        if len(pair) != 2 or pair[0] != expected or pair[1] < pair[0]:
            break
        expected = pair[1] + 1
    else:
        if expected == depth and indexes:
            return
    raise ConfigError(
        f"vit_adapter option interaction_indexes {[list(p) for p in indexes]} must be [start, end] block runs "
        f"covering blocks 0..{depth - 1} in order, e.g. {[list(p) for p in default_interaction_indexes(depth)]}"
    )


class ViTAdapterBackbone(nn.Module):
    """A Prithvi ViT with the ViT-Adapter around it; ``forward`` returns four maps, finest first.

    Args:
        vit: the (pretrained) Prithvi encoder; single frame, patch 16.
        interaction_indexes: ``[start, end]`` block runs, one per interaction.
        heads: deformable attention heads (``deform_num_heads``).
        points: sampling points (``n_points``).
        ratio: value width over D (``deform_ratio``).
        init_values: initial injector ``γ``.
        conv_inplane: SPM width.
        use_extra_extractor: the last interaction gets two extra extractors.
        add_vit_feature: add the resized ViT maps to the outputs.
    """

    def __init__(
        self,
        vit: PrithviViT,
        *,
        interaction_indexes: Sequence[tuple[int, int]],
        heads: int,
        points: int = 4,
        ratio: float = 0.5,
        init_values: float = 0.0,
        conv_inplane: int = 64,
        use_extra_extractor: bool = True,
        add_vit_feature: bool = True,
    ) -> None:
        super().__init__()
        if vit.patch_size != PATCH_SIZE or vit.num_frames != 1:
            raise ConfigError(
                f"vit_adapter needs a single-frame Prithvi with patch size {PATCH_SIZE}, got patch size "
                f"{vit.patch_size} and {vit.num_frames} frames; use prithvi_eo_v1_100, prithvi_eo_v2_100_tl or "
                "prithvi_eo_v2_300(_tl)"
            )
        depth = len(vit.blocks)
        check_interaction_indexes(interaction_indexes, depth)
        dim = vit.embed_dim
        self.vit = vit
        self.metadata_keys = vit.metadata_keys
        self.interaction_indexes = tuple((int(a), int(b)) for a, b in interaction_indexes)
        self.add_vit_feature = add_vit_feature
        self.level_embed = nn.Parameter(torch.zeros(3, dim))
        self.spm = SpatialPriorModule(vit.in_chans, conv_inplane, dim)
        last = len(self.interaction_indexes) - 1
        self.interactions = nn.ModuleList(
            InteractionBlock(dim, heads, points, ratio, init_values, extra_extractor=use_extra_extractor and i == last)
            for i in range(len(self.interaction_indexes))
        )
        self.up = nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2)
        self.norm1 = nn.BatchNorm2d(dim)
        self.norm2 = nn.BatchNorm2d(dim)
        self.norm3 = nn.BatchNorm2d(dim)
        self.norm4 = nn.BatchNorm2d(dim)
        for part in (self.up, self.spm, self.interactions):
            part.apply(init_adapter_weights)
        for module in self.modules():
            if isinstance(module, MSDeformAttn):
                module.reset_parameters()
        nn.init.normal_(self.level_embed)
        for norm in (self.norm1, self.norm2, self.norm3, self.norm4):
            init_adapter_weights(norm)

    def adapter_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """The adapter's own parameters (those the reference leaves trainable), with their names."""
        return [(n, p) for n, p in self.named_parameters() if n.startswith(ADAPTER_PREFIXES)]

    def forward(
        self, x: Tensor, temporal_coords: Tensor | None = None, location_coords: Tensor | None = None
    ) -> list[Tensor]:
        """Encode an image into the pyramid.

        Args:
            x: ``[B, C, H, W]`` (or one frame ``[B, C, 1, H, W]``), H and W multiples of 32.
            temporal_coords: TL variants only, as for :class:`~geopeft.models.prithvi.PrithviViT`.
            location_coords: TL variants only.

        Returns:
            ``[B, D, H/4, W/4]``, ``[B, D, H/8, W/8]``, ``[B, D, H/16, W/16]``, ``[B, D, H/32, W/32]``.
        """
        image = x.squeeze(2) if x.ndim == 5 and x.shape[2] == 1 else x
        height, width = image.shape[-2:]
        if image.ndim != 4 or height % STRIDES[-1] or width % STRIDES[-1]:
            raise ConfigError(
                f"vit_adapter expects one-frame input with H and W multiples of {STRIDES[-1]}, got shape "
                f"{tuple(x.shape)}; the segmentor pads to that, so pass images through it"
            )
        batch = image.shape[0]
        vit_shape = (height // PATCH_SIZE, width // PATCH_SIZE)
        spm_shapes = [(height // s, width // s) for s in STRIDES[1:]]
        references = (reference_points([vit_shape], x.device), reference_points(spm_shapes, x.device))

        c1, c2, c3, c4 = self.spm(image)
        levels = [c.flatten(2).transpose(1, 2) + self.level_embed[i] for i, c in enumerate((c2, c3, c4))]
        c = torch.cat(levels, dim=1)
        tokens, _ = self.vit.embed(image, temporal_coords, location_coords)
        dim = tokens.shape[-1]
        vit_maps = []
        for (start, end), interaction in zip(self.interaction_indexes, self.interactions, strict=True):
            blocks = list(self.vit.blocks[start : end + 1])
            tokens, c = interaction(tokens, c, blocks, vit_shape, spm_shapes, references)
            vit_maps.append(tokens.transpose(1, 2).reshape(batch, dim, *vit_shape))

        maps, start = [], 0
        for h, w in spm_shapes:
            maps.append(c[:, start : start + h * w].transpose(1, 2).reshape(batch, dim, h, w))
            start += h * w
        outs = [self.up(maps[0]) + c1, *maps]
        if self.add_vit_feature:
            outs = [
                out + F.interpolate(vit, size=out.shape[-2:], mode="bilinear", align_corners=False)
                if vit.shape[-2:] != out.shape[-2:]
                else out + vit
                for out, vit in zip(outs, vit_maps, strict=True)
            ]
        norms = (self.norm1, self.norm2, self.norm3, self.norm4)
        return [norm(out) for norm, out in zip(norms, outs, strict=True)]
