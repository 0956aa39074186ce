"""Multi-scale deformable attention (Deformable DETR's ``MSDeformAttn``) in pure PyTorch.

architectures.md §6, "Deformable attention dependency": the reference stack (TerraTorch's
``detr_ops/modules/ms_deform_attn.py`` L29–155) needs the CUDA-only ``MultiScaleDeformableAttention``
kernel and ``torch<2.6``. Here the core is :func:`ms_deform_attn_core`, the ``F.grid_sample`` formulation
of the same sampling (the reference file's ``ms_deform_attn_core_pytorch``, L86–116), which runs on any
device and torch version:

* a sampling location ``(x, y)`` in ``[0, 1]`` of level ``l`` (size ``H_l × W_l``) reads the value map at
  pixel ``(x·W_l − 0.5, y·H_l − 0.5)`` (pixel centres at integers), bilinearly, with zeros outside the
  map: ``grid_sample(..., mode="bilinear", padding_mode="zeros", align_corners=False)`` on
  ``grid = 2·loc − 1`` computes exactly that, as does the CUDA kernel's ``im2col_bilinear``;
* the samples of each head are weighted by a softmax over levels × points and summed.

As in the reference, the core always runs in float32 (the kernel's ``custom_fwd(cast_inputs=float32)``).
No compiled kernel is used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geopeft.errors import ConfigError

#: A level's ``(height, width)`` in tokens.
Shape = tuple[int, int]


def ms_deform_attn_core(value: Tensor, shapes: Sequence[Shape], locations: Tensor, weights: Tensor) -> Tensor:
    """Sample every level at the given locations and sum the samples with the attention weights.

    Args:
        value: ``[N, S, M, Dh]``: the flattened levels (``S = Σ H_l·W_l``, row-major, finest first as in
            ``shapes``) split into ``M`` heads of ``Dh`` channels.
        shapes: ``(H_l, W_l)`` of each of the ``L`` levels.
        locations: ``[N, Lq, M, L, P, 2]`` sampling locations ``(x, y)`` normalised to ``[0, 1]`` per level
            (values outside sample zeros).
        weights: ``[N, Lq, M, L, P]`` attention weights.

    Returns:
        ``[N, Lq, M·Dh]``.
    """
    batch, _, heads, head_dim = value.shape
    _, queries, _, levels, points, _ = locations.shape
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    grids = 2 * locations - 1
    sampled = []
    for level, (h, w) in enumerate(shapes):
        # [N, H·W, M, Dh] → [N·M, Dh, H, W]
        value_l = (
            value[:, starts[level] : starts[level + 1]]
            .flatten(2)
            .transpose(1, 2)
            .reshape(batch * heads, head_dim, h, w)
        )
        # [N, Lq, M, P, 2] → [N·M, Lq, P, 2]
        grid_l = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        sampled.append(F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False))
    # [N·M, Dh, Lq, L·P] weighted by [N·M, 1, Lq, L·P]
    stacked = torch.stack(sampled, dim=-2).flatten(-2)
    attn = weights.transpose(1, 2).reshape(batch * heads, 1, queries, levels * points)
    out = (stacked * attn).sum(-1).view(batch, heads * head_dim, queries)
    return out.transpose(1, 2).contiguous()


def reference_points(shapes: Sequence[Shape], device: torch.device | None = None) -> Tensor:
    """Pixel centres of each level normalised to ``[0, 1]``: ``[1, Σ H_l·W_l, 1, 2]`` as ``(x, y)``.

    ViT-Adapter's ``get_reference_points`` (vit_adapter_modules.py L11–25): ``((j + 0.5)/W, (i + 0.5)/H)``
    for every row ``i`` and column ``j`` of every level, row-major, levels in order; the trailing singleton
    broadcasts over the key levels.

    Args:
        shapes: ``(H, W)`` of each query level.
        device: where to build the tensor.
    """
    out = []
    for h, w in shapes:
        ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h
        xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        out.append(torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=-1))
    return torch.cat(out, dim=0)[None, :, None]


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention with a value width of ``ratio · dim`` (ViT-Adapter's variant).

    Layers (architectures.md §6): ``sampling_offsets`` Linear(D, M·L·P·2), ``attention_weights``
    Linear(D, M·L·P), ``value_proj`` Linear(D, D·ratio), ``output_proj`` Linear(D·ratio, D). Offsets are
    divided by each level's ``(W, H)`` and added to the query's reference point; the weights are a softmax
    over levels × points per head.

    Args:
        dim: query and key width ``D``.
        levels: key levels ``L``.
        heads: attention heads ``M``; must divide ``int(dim · ratio)``.
        points: sampling points per head and level ``P``.
        ratio: value width over ``dim`` (``deform_ratio``, 0.5 in the paper).
    """

    def __init__(self, dim: int, levels: int, heads: int, points: int, ratio: float = 1.0) -> None:
        super().__init__()
        value_dim = int(dim * ratio)
        if heads < 1 or value_dim % heads:
            raise ConfigError(
                f"vit_adapter: the deformable attention's value width {value_dim} (= {dim} × deform_ratio {ratio}) "
                f"is not divisible by deform_num_heads {heads}; change deform_num_heads or deform_ratio"
            )
        self.dim, self.levels, self.heads, self.points = dim, levels, heads, points
        self.value_dim = value_dim
        self.sampling_offsets = nn.Linear(dim, heads * levels * points * 2)
        self.attention_weights = nn.Linear(dim, heads * levels * points)
        self.value_proj = nn.Linear(dim, value_dim)
        self.output_proj = nn.Linear(value_dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The reference ``_reset_parameters``: radial offset bias, zero attention weights, xavier projections.

        Head ``m`` points along the angle ``2π·m/M``, its direction scaled so that the larger of
        ``|cos|, |sin|`` is 1, and point ``p`` lies ``p + 1`` times that far out, on every level. The offset
        weights and the attention weights and biases are zero (uniform attention at init).
        """
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.heads, dtype=torch.float32) * (2.0 * math.pi / self.heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], dim=-1)
        grid = grid / grid.abs().max(dim=-1, keepdim=True).values
        grid = grid.view(self.heads, 1, 1, 2).repeat(1, self.levels, self.points, 1)
        grid = grid * torch.arange(1, self.points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(self, query: Tensor, reference: Tensor, keys: Tensor, shapes: Sequence[Shape]) -> Tensor:
        """Attend from ``query`` to the multi-scale ``keys``.

        Args:
            query: ``[N, Lq, D]``.
            reference: ``[N or 1, Lq, 1 or L, 2]`` reference points ``(x, y)`` in ``[0, 1]``.
            keys: ``[N, S, D]``: the levels flattened row-major and concatenated in the order of ``shapes``.
            shapes: ``(H_l, W_l)`` of the ``L`` key levels.

        Returns:
            ``[N, Lq, D]``.
        """
        if len(shapes) != self.levels or sum(h * w for h, w in shapes) != keys.shape[1]:
            raise ConfigError(
                f"vit_adapter: deformable attention built for {self.levels} levels got shapes {list(shapes)} "
                f"for {keys.shape[1]} key tokens"
            )
        batch, queries, _ = query.shape
        value = self.value_proj(keys).view(batch, keys.shape[1], self.heads, self.value_dim // self.heads)
        offsets = self.sampling_offsets(query).view(batch, queries, self.heads, self.levels, self.points, 2)
        weights = self.attention_weights(query).view(batch, queries, self.heads, self.levels * self.points)
        weights = weights.softmax(-1).view(batch, queries, self.heads, self.levels, self.points)
        normaliser = torch.tensor([(w, h) for h, w in shapes], dtype=offsets.dtype, device=offsets.device)
        locations = reference[:, :, None, :, None, :] + offsets / normaliser[None, None, None, :, None, :]
        with torch.autocast(device_type=query.device.type, enabled=False):
            out = ms_deform_attn_core(value.float(), shapes, locations.float(), weights.float())
        result: Tensor = self.output_proj(out.to(query.dtype))
        return result
