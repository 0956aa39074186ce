"""VPT-deep: learnable prompt tokens inserted after CLS before every ViT block and removed after it.

As TerraTorch's ``backbone_vpt`` (architectures.md §5): each block ``i`` owns ``num_tokens`` prompts
``[1, N, D]``, initialised uniform in ``±sqrt(6 / (3·p² + D))`` with ``p`` the patch size (16 for Prithvi,
8 for Clay). Before the block the prompts, after dropout, go right after CLS (``[CLS, P_i, patches]``);
after it the ``N`` prompt outputs are dropped, so every block sees fresh prompts, the features keep their
``1 + h·w`` tokens and the final norm is applied after removal. The backbone is frozen (TL ``scale``
parameters included); only the prompts, the neck and the decoder train.

The backbone code is not touched: each host module gets a :class:`DeepPrompts` child ``vpt`` and a forward
pre-hook (insert) and forward hook (remove), so the module names of the backbone, and its weight loading,
are unchanged. The host is Prithvi's ``blocks[i]`` (a timm ``Block``). For Clay it is the attention
``transformer.layers[i][0]``, because Clay's ``Transformer`` loop unpacks each layer into attention and
feed-forward and adds the residuals itself; its feed-forward (LayerNorm, Linear, GELU, Linear) works on
each token alone, so dropping the prompt outputs after the attention gives the CLS and patch tokens the
reference computes by dropping them after the feed-forward (``tests/test_tuning_vpt.py`` checks this).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from geopeft.errors import ConfigError
from geopeft.models.catalog import meta_backbone
from geopeft.models.clay import ClayEncoder
from geopeft.models.prithvi import PrithviViT
from geopeft.models.segmentor import Segmentor
from geopeft.tuning.registry import register_tuning

__all__ = ["DeepPrompts", "VptSettings", "apply_vpt", "prompt_hosts", "vpt_init_bound"]


@dataclass(frozen=True)
class VptSettings:
    """VPT-deep settings (the paper's values by default).

    Args:
        num_tokens: prompt tokens per block.
        dropout: dropout on the prompts before they are inserted.
    """

    num_tokens: int = field(default=100, metadata={"help": "prompt tokens per block"})
    dropout: float = field(default=0.1, metadata={"help": "dropout on the prompts"})

    def __post_init__(self) -> None:
        n = self.num_tokens
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigError(f"vpt option num_tokens must be a positive integer, got {n!r}")
        p = self.dropout
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0 <= p < 1:
            raise ConfigError(f"vpt option dropout must lie in [0, 1), got {p!r}")

    def check_backbone(self, name: str, where: str = "") -> None:
        """Plan-time check that backbone ``name`` can host prompts (:func:`prompt_hosts`, on the meta device)."""
        prompt_hosts(meta_backbone(name), where)


def vpt_init_bound(patch_size: int, embed_dim: int) -> float:
    """Half-width of the uniform prompt initialisation, ``sqrt(6 / (3·p² + D))`` (the KMnP VPT code)."""
    return math.sqrt(6.0 / (3 * patch_size * patch_size + embed_dim))


class DeepPrompts(nn.Module):
    """One block's prompts and the two hooks that insert them before the block and remove them after it.

    Args:
        num_tokens: prompt tokens ``N``.
        embed_dim: token width ``D``.
        patch_size: the backbone's patch size, for the initialisation.
        dropout: dropout on the prompts.
        device: where to create the prompts (the backbone's device).
    """

    def __init__(
        self, num_tokens: int, embed_dim: int, patch_size: int, dropout: float, device: torch.device | None = None
    ) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.embeddings = nn.Parameter(torch.empty(1, num_tokens, embed_dim, device=device))
        self.dropout = nn.Dropout(dropout)
        bound = vpt_init_bound(patch_size, embed_dim)
        nn.init.uniform_(self.embeddings, -bound, bound)

    def insert(self, host: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """Forward pre-hook: ``[B, 1 + T, D]`` → ``[B, 1 + N + T, D]`` with the prompts after CLS."""
        if not args or not isinstance(args[0], Tensor) or args[0].ndim != 3:
            raise ConfigError(
                f"VPT: {type(host).__name__} must be called with the tokens [B, 1 + T, D] as first positional argument"
            )
        x = args[0]
        prompts = self.dropout(self.embeddings).to(x.dtype).expand(x.shape[0], -1, -1)
        return (torch.cat([x[:, :1], prompts, x[:, 1:]], dim=1), *args[1:])

    def remove(self, host: nn.Module, args: tuple[Any, ...], output: Tensor) -> Tensor:
        """Forward hook: drop the ``N`` prompt outputs, ``[B, 1 + N + T, D]`` → ``[B, 1 + T, D]``."""
        return torch.cat([output[:, :1], output[:, 1 + self.num_tokens :]], dim=1)


def prompt_hosts(backbone: nn.Module, where: str = "") -> list[nn.Module]:
    """The modules that get prompts, one per block: Prithvi's blocks, Clay's attention layers.

    Raises:
        ConfigError: any other backbone (VPT is implemented for Prithvi and Clay only, as in TerraTorch).
    """
    if isinstance(backbone, PrithviViT):
        return list(backbone.blocks)
    if isinstance(backbone, ClayEncoder):
        hosts: list[nn.Module] = []
        for layer in backbone.transformer.layers:
            assert isinstance(layer, nn.ModuleList)  # for mypy: [Attention, FeedForward]
            hosts.append(layer[0])
        return hosts
    prefix = f"{where}: " if where else ""
    raise ConfigError(
        f"{prefix}vpt is implemented for Prithvi and Clay backbones (as in TerraTorch), not for "
        f"{type(backbone).__name__}; use method full or linear_probe for it"
    )


@register_tuning("vpt", VptSettings)
def apply_vpt(model: Segmentor, settings: VptSettings, where: str) -> None:
    """Freeze the backbone and give every block its prompts; neck and decoder stay trainable.

    Raises:
        ConfigError: the backbone is neither Prithvi nor Clay, or already has prompts.
    """
    backbone = model.backbone
    hosts = prompt_hosts(backbone, where)
    assert isinstance(backbone, (PrithviViT, ClayEncoder))  # prompt_hosts refused every other backbone
    if any(hasattr(host, "vpt") for host in hosts):
        prefix = f"{where}: " if where else ""
        raise ConfigError(f"{prefix}vpt: the backbone already has prompts; build a fresh model")
    model.requires_grad_(True)
    backbone.requires_grad_(False)
    device = next(backbone.parameters()).device
    for host in hosts:
        prompts = DeepPrompts(settings.num_tokens, backbone.embed_dim, backbone.patch_size, settings.dropout, device)
        host.vpt = prompts
        host.register_forward_pre_hook(prompts.insert)
        host.register_forward_hook(prompts.remove)
