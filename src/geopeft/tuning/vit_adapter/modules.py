"""ViT-Adapter's building blocks: spatial prior module, injector, extractor and interaction block.

architectures.md §6 (TerraTorch ``vit_adapter_modules.py``), with the paper's settings: no convolutional
FFN in the extractor (``with_cffn: False``), LayerNorm (eps 1e-6) on queries and keys, BatchNorm in the
spatial prior module (the reference's ``SyncBatchNorm``; see :mod:`geopeft.tuning.vit_adapter.method` for
when it becomes one).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import Tensor, nn

from geopeft.tuning.vit_adapter.msda import MSDeformAttn, Shape

#: The reference's ``norm_layer``: ``partial(nn.LayerNorm, eps=1e-6)``.
LayerNorm = partial(nn.LayerNorm, eps=1e-6)
#: Extra extractors after the last interaction when ``use_extra_extractor`` is set (architectures.md §6).
EXTRA_EXTRACTORS = 2


def _conv_bn_relu(in_ch: int, out_ch: int, stride: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    ]


class SpatialPriorModule(nn.Module):
    """The convolutional stem giving the adapter its multi-scale features (vit_adapter_modules.py L46–144).

    ``stem`` = conv3×3 s2 (in→C) + BN + ReLU, 2 × [conv3×3 s1 + BN + ReLU], MaxPool 3×3 s2 (stride 4);
    ``conv2`` C→2C s2 (stride 8), ``conv3`` 2C→4C s2 (stride 16), ``conv4`` 4C→4C s2 (stride 32), each
    conv3×3 without bias + BN + ReLU; 1×1 convolutions ``fc1..fc4`` (with bias) map each to ``dim``.

    Args:
        in_chans: input bands.
        inplanes: ``C`` (``conv_inplane``, 64 in the paper).
        dim: the ViT width ``D``.
    """

    def __init__(self, in_chans: int, inplanes: int, dim: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            *_conv_bn_relu(in_chans, inplanes, 2),
            *_conv_bn_relu(inplanes, inplanes, 1),
            *_conv_bn_relu(inplanes, inplanes, 1),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        self.conv2 = nn.Sequential(*_conv_bn_relu(inplanes, 2 * inplanes, 2))
        self.conv3 = nn.Sequential(*_conv_bn_relu(2 * inplanes, 4 * inplanes, 2))
        self.conv4 = nn.Sequential(*_conv_bn_relu(4 * inplanes, 4 * inplanes, 2))
        self.fc1 = nn.Conv2d(inplanes, dim, kernel_size=1)
        self.fc2 = nn.Conv2d(2 * inplanes, dim, kernel_size=1)
        self.fc3 = nn.Conv2d(4 * inplanes, dim, kernel_size=1)
        self.fc4 = nn.Conv2d(4 * inplanes, dim, kernel_size=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``[B, C, H, W]`` → four ``[B, D, H/s, W/s]`` maps at strides 4, 8, 16 and 32."""
        c1 = self.stem(x)
        c2 = self.conv2(c1)
        c3 = self.conv3(c2)
        c4 = self.conv4(c3)
        return self.fc1(c1), self.fc2(c2), self.fc3(c3), self.fc4(c4)


class Injector(nn.Module):
    """Spatial features into the ViT: ``x + γ · MSDeformAttn(LN(x), ref, LN(c))`` (L264–313).

    The ViT tokens are the queries, the three SPM levels (strides 8, 16, 32) the keys; ``γ`` (``gamma``,
    one value per channel) starts at ``init_values`` (0 in the paper, so the adapter is the identity on the
    ViT path at init).

    Args:
        dim: width ``D``.
        heads: deformable attention heads.
        points: sampling points per head and level.
        ratio: value width over ``dim``.
        init_values: initial ``γ``.
        levels: key levels (3).
    """

    def __init__(self, dim: int, heads: int, points: int, ratio: float, init_values: float, levels: int = 3) -> None:
        super().__init__()
        self.query_norm = LayerNorm(dim)
        self.feat_norm = LayerNorm(dim)
        self.attn = MSDeformAttn(dim, levels, heads, points, ratio)
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, query: Tensor, reference: Tensor, feat: Tensor, shapes: Sequence[Shape]) -> Tensor:
        """``query`` ``[B, N, D]`` attends to ``feat`` ``[B, S, D]`` laid out as ``shapes``."""
        attn: Tensor = self.attn(self.query_norm(query), reference, self.feat_norm(feat), shapes)
        return query + self.gamma * attn


class Extractor(nn.Module):
    """ViT features into the adapter: ``c + MSDeformAttn(LN(c), ref, LN(x))`` (L193–261), without the CFFN.

    The adapter tokens of the three levels are the queries, the ViT tokens (one level, stride 16) the keys.

    Args:
        dim: width ``D``.
        heads: deformable attention heads.
        points: sampling points per head and level.
        ratio: value width over ``dim``.
        levels: key levels (1).
    """

    def __init__(self, dim: int, heads: int, points: int, ratio: float, levels: int = 1) -> None:
        super().__init__()
        self.query_norm = LayerNorm(dim)
        self.feat_norm = LayerNorm(dim)
        self.attn = MSDeformAttn(dim, levels, heads, points, ratio)

    def forward(self, query: Tensor, reference: Tensor, feat: Tensor, shapes: Sequence[Shape]) -> Tensor:
        """``query`` ``[B, S, D]`` attends to ``feat`` ``[B, N, D]`` laid out as ``shapes``."""
        result: Tensor = query + self.attn(self.query_norm(query), reference, self.feat_norm(feat), shapes)
        return result


class InteractionBlock(nn.Module):
    """Injector → a run of ViT blocks → extractor (→ extra extractors), ``InteractionBlock`` L316–420.

    The ViT blocks are not owned here (they stay the backbone's); :meth:`forward` receives them.

    Args:
        dim: width ``D``.
        heads: deformable attention heads.
        points: sampling points.
        ratio: value width over ``dim``.
        init_values: initial injector ``γ``.
        extra_extractor: add :data:`EXTRA_EXTRACTORS` more extractors (the last interaction).
    """

    def __init__(
        self, dim: int, heads: int, points: int, ratio: float, init_values: float, extra_extractor: bool
    ) -> None:
        super().__init__()
        self.injector = Injector(dim, heads, points, ratio, init_values)
        self.extractor = Extractor(dim, heads, points, ratio)
        self.extra_extractors = (
            nn.ModuleList(Extractor(dim, heads, points, ratio) for _ in range(EXTRA_EXTRACTORS))
            if extra_extractor
            else None
        )

    def forward(
        self,
        x: Tensor,
        c: Tensor,
        blocks: Sequence[nn.Module],
        vit_shape: Shape,
        spm_shapes: Sequence[Shape],
        references: tuple[Tensor, Tensor],
    ) -> tuple[Tensor, Tensor]:
        """One interaction.

        Args:
            x: ViT tokens ``[B, h·w, D]`` (no CLS).
            c: adapter tokens ``[B, S, D]`` of the three SPM levels.
            blocks: the ViT blocks of this interaction, run in order.
            vit_shape: the ViT token grid ``(h, w)``.
            spm_shapes: the SPM levels' ``(H, W)`` (strides 8, 16, 32).
            references: the injector's reference points (ViT grid) and the extractor's (SPM levels).

        Returns:
            The updated ``(x, c)``.
        """
        x = self.injector(x, references[0], c, spm_shapes)
        for block in blocks:
            x = block(x)
        c = self.extractor(c, references[1], x, [vit_shape])
        if self.extra_extractors is not None:
            for extractor in self.extra_extractors:
                c = extractor(c, references[1], x, [vit_shape])
        return x, c


def init_adapter_weights(module: nn.Module) -> None:
    """ViT-Adapter's ``_init_weights`` for one module (applied to ``spm``, ``interactions`` and ``up``).

    Linear: truncated normal (std 0.02), zero bias; LayerNorm/BatchNorm: weight 1, bias 0; (transposed)
    convolutions: normal with std ``sqrt(2 / fan_out)``, ``fan_out = k_h·k_w·out_channels / groups``, zero
    bias. :class:`MSDeformAttn` is re-initialised afterwards by its own ``reset_parameters``.
    """
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm | nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, std=(2.0 / fan_out) ** 0.5)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
