"""Fixed 3-D sin-cos position embeddings of the Prithvi ViT and their resampling to other grids.

This follows TerraTorch's ``prithvi_mae.py`` (``get_3d_sincos_pos_embed``,
``get_1d_sincos_pos_embed_from_grid`` and ``_interpolate_pos_encoding``): the embedding width is split
6:6:4 between the width, height and time axes and concatenated in that order; each axis uses
``omega_i = 1 / 10000^(i / (d/2))`` and the output ``[sin(pos·omega), cos(pos·omega)]``; the CLS row is zero.
The values are computed in float64 and returned as float32, like TerraTorch's numpy code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from geopeft.errors import ConfigError


def get_1d_sincos_pos_embed_from_grid(embed_dim: int, pos: Tensor) -> Tensor:
    """1-D sin-cos embedding of the positions ``pos``.

    Args:
        embed_dim: output width; must be even.
        pos: positions, any shape (flattened).

    Returns:
        A float64 tensor ``[pos.numel(), embed_dim]``: sines in the first half, cosines in the second.
    """
    if embed_dim % 2:
        raise ConfigError(f"a sin-cos embedding needs an even width, got {embed_dim}")
    omega = torch.arange(embed_dim // 2, dtype=torch.float64, device=pos.device) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega
    out = torch.outer(pos.reshape(-1).to(torch.float64), omega)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def get_3d_sincos_pos_embed(
    embed_dim: int,
    grid_size: tuple[int, int, int],
    *,
    add_cls_token: bool = False,
    device: torch.device | str | None = None,
) -> Tensor:
    """3-D sin-cos embedding of a ``(t, h, w)`` token grid in time-major order.

    Args:
        embed_dim: width; must be a multiple of 16 (split 6:6:4 between w, h and t).
        grid_size: the grid depth, height and width in tokens.
        add_cls_token: prepend an all-zero row for the CLS token.
        device: where to build it (default: torch's current default device, so that it follows
            ``with torch.device("meta")``).

    Returns:
        A float32 tensor ``[(1 +) t·h·w, embed_dim]``.
    """
    if embed_dim % 16:
        raise ConfigError(f"the Prithvi position embedding needs a width divisible by 16, got {embed_dim}")
    t_size, h_size, w_size = grid_size
    w_dim = h_dim = embed_dim // 16 * 6
    t_dim = embed_dim // 16 * 4

    def axis(dim: int, size: int) -> Tensor:
        return get_1d_sincos_pos_embed_from_grid(dim, torch.arange(size, dtype=torch.float64, device=device))

    w_embed = axis(w_dim, w_size).repeat(t_size * h_size, 1)
    h_embed = axis(h_dim, h_size).repeat_interleave(w_size, dim=0).repeat(t_size, 1)
    t_embed = axis(t_dim, t_size).repeat_interleave(h_size * w_size, dim=0)
    pos_embed = torch.cat([w_embed, h_embed, t_embed], dim=1)
    if add_cls_token:
        pos_embed = torch.cat([pos_embed.new_zeros(1, embed_dim), pos_embed], dim=0)
    return pos_embed.float()


def interpolate_pos_embed(
    pos_embed: Tensor, grid_size: tuple[int, int, int], new_grid: tuple[int, int, int]
) -> Tensor:
    """Resample a CLS-prefixed 3-D position embedding to another token grid.

    As in TerraTorch: a different number of frames recomputes the sin-cos embedding for the new depth;
    the spatial grid is then resampled **bicubically with** ``align_corners=True`` (not recomputed), so a
    224-pixel grid of 14×14 tokens becomes, e.g., 32×32 tokens for 512-pixel chips.

    Args:
        pos_embed: ``[1, 1 + t·h·w, D]`` for ``grid_size``.
        grid_size: the ``(t, h, w)`` grid ``pos_embed`` was built for.
        new_grid: the ``(t, h, w)`` grid of the input.

    Returns:
        ``[1, 1 + t'·h'·w', D]``; ``pos_embed`` itself when the grids agree.
    """
    if tuple(new_grid) == tuple(grid_size):
        return pos_embed
    embed_dim = pos_embed.shape[-1]
    t_new, h_new, w_new = new_grid
    if t_new != grid_size[0]:
        source_grid = (t_new, grid_size[1], grid_size[2])
        source = get_3d_sincos_pos_embed(embed_dim, source_grid, add_cls_token=True, device=pos_embed.device)
        source = source.unsqueeze(0).to(pos_embed.dtype)
    else:
        source_grid, source = grid_size, pos_embed
    cls_embed, patch_embed = source[:, :1], source[:, 1:]
    patch_embed = patch_embed.reshape(*source_grid, embed_dim).permute(0, 3, 1, 2)
    patch_embed = F.interpolate(patch_embed, size=(h_new, w_new), mode="bicubic", align_corners=True)
    patch_embed = patch_embed.permute(0, 2, 3, 1).reshape(1, -1, embed_dim)
    return torch.cat([cls_embed, patch_embed], dim=1)
