"""Activation checkpointing of a backbone's transformer blocks (``train.activation_checkpointing: true``).

Parameter-efficient methods save the gradients and AdamW state of the frozen weights, but not the activations:
backpropagating into LoRA matrices, prompts or adapters between the blocks still needs every block's
intermediate tensors, so activation memory is that of full fine-tuning. With checkpointing, a block keeps only
its input during the forward pass and recomputes its internals in the backward pass (about one extra forward of
the backbone per step), which is where the memory saving of a PEFT method becomes visible.

The units are the blocks of every ViT encoder: timm's ``Block`` (Prithvi, ViT-B/16, and so inside a ViT-Adapter)
and Clay's ``Attention`` and ``FeedForward``. Each keeps its class, parameters, state-dict keys and hooks (VPT's
prompt hooks run once, outside the recomputed part); only its ``forward`` is rebound to one that runs the class
forward under :func:`torch.utils.checkpoint.checkpoint` (non-reentrant, RNG state restored, so dropout masks
are the same in the recomputation). It is a bound method, so ``copy.deepcopy`` (ZeRO-3's training copy)
rebinds it to the copy. Without gradients (evaluation) the block runs as before.

Convolutional backbones (DeCUR's ResNet-50, the UNet baseline) are refused: their BatchNorm layers would update
their running statistics a second time in the recomputation.
"""

from __future__ import annotations

import types
from typing import Any

import torch
from timm.models.vision_transformer import Block
from torch import nn
from torch.utils.checkpoint import checkpoint

from geopeft.errors import ConfigError
from geopeft.models.clay import Attention, FeedForward

#: Module classes whose forward is checkpointed as one unit.
UNITS: tuple[type[nn.Module], ...] = (Block, Attention, FeedForward)


def _checkpointed_forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """The class forward, checkpointed while gradients are recorded."""
    forward = type(self).forward
    if not torch.is_grad_enabled():
        return forward(self, *args, **kwargs)
    return checkpoint(forward, self, *args, use_reentrant=False, **kwargs)


def checkpoint_blocks(model: nn.Module, where: str = "") -> int:
    """Checkpoint every transformer block of ``model`` (after tuning, before a strategy wraps it); their number.

    Raises:
        ConfigError: ``model`` has no transformer block (a convolutional backbone), or it is checkpointed already.
    """
    prefix = f"{where}: " if where else ""
    units = [m for m in model.modules() if isinstance(m, UNITS)]
    if not units:
        raise ConfigError(
            f"{prefix}train.activation_checkpointing applies to ViT backbones (Prithvi, Clay, ViT-B/16); this model "
            "has no transformer block (a convolutional backbone's BatchNorm statistics would be updated twice); "
            "set it to false"
        )
    if any("forward" in vars(unit) for unit in units):
        raise ConfigError(f"{prefix}the model's blocks are checkpointed already; build a fresh model")
    for unit in units:
        unit.forward = types.MethodType(_checkpointed_forward, unit)
    return len(units)
