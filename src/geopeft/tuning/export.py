"""Export a LoRA-tuned segmentor with a plain backbone: adapters merged in, q/k/v fused back into qkv.

TerraTorch never merges LoRA (architectures.md §4.4), so its checkpoints only load into a model rebuilt
with the same ``peft_config``. :func:`merge_lora` does the two steps the spec lists for a plain ViT:

1. ``W += (alpha / r) · B · A`` for every adapted Linear (``peft``'s ``merge_and_unload``);
2. each :class:`~geopeft.tuning.lora.QKVSplit` becomes one ``Linear(d, 3d)`` again, its weight and bias the
   concatenation of ``q``, ``k`` and ``v`` on dim 0.

The backbone then has the module names, and so the state-dict keys, it had before LoRA was applied, and
computes what the LoRA model computed (up to float rounding).
"""

from __future__ import annotations

import torch
from torch import nn

from geopeft.errors import ConfigError
from geopeft.models.segmentor import Segmentor
from geopeft.tuning.lora import QKVSplit

__all__ = ["fuse_qkv", "merge_lora"]


def _fused(split: QKVSplit, name: str) -> nn.Linear:
    """One ``Linear(d, 3d)`` holding ``split``'s q, k and v row blocks in that order."""
    parts = (split.q, split.k, split.v)
    if any(type(part) is not nn.Linear for part in parts):
        raise ConfigError(f"{name}: q, k, v are still wrapped by LoRA adapters; merge them first (merge_lora does)")
    q = split.q
    fused = nn.Linear(
        q.in_features, 3 * q.out_features, bias=q.bias is not None, device=q.weight.device, dtype=q.weight.dtype
    )
    with torch.no_grad():
        fused.weight.copy_(torch.cat([part.weight for part in parts], dim=0))
        if fused.bias is not None:
            fused.bias.copy_(torch.cat([part.bias for part in parts if part.bias is not None], dim=0))
    fused.requires_grad_(q.weight.requires_grad)
    return fused


def fuse_qkv(module: nn.Module) -> int:
    """Replace every :class:`QKVSplit` inside ``module`` by the fused Linear it came from, in place.

    Args:
        module: a backbone whose q, k and v are plain Linears (no adapters).

    Returns:
        The number of layers fused.

    Raises:
        ConfigError: a split still holds LoRA-wrapped layers.
    """
    found = [(name, child) for name, child in module.named_modules() if isinstance(child, QKVSplit)]
    for name, child in found:
        parent_name, _, attr = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, attr, _fused(child, name))
    return len(found)


def merge_lora(model: Segmentor, where: str = "") -> Segmentor:
    """Merge the LoRA adapters of ``model.backbone`` into its weights and unwrap it, in place.

    The neck and decoder are untouched. The adapters are gone afterwards: export a copy if training
    goes on.

    Args:
        model: a segmentor tuned with ``lora``.
        where: file or cell, prepended to messages.

    Returns:
        ``model``, whose ``backbone`` is the plain backbone class again.

    Raises:
        ConfigError: the backbone is not wrapped by LoRA.
    """
    from peft import PeftModel  # imported here: importing peft takes seconds

    if not isinstance(model.backbone, PeftModel):
        prefix = f"{where}: " if where else ""
        raise ConfigError(
            f"{prefix}merge_lora: the backbone ({type(model.backbone).__name__}) has no LoRA adapters; "
            "only a model tuned with method lora can be merged"
        )
    plain = model.backbone.merge_and_unload()
    assert isinstance(plain, nn.Module)  # for mypy: peft returns the unwrapped base model
    fuse_qkv(plain)
    model.backbone = plain
    return model
