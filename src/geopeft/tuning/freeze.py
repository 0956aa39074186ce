"""Methods that only choose what trains: full fine-tuning and linear probing.

BatchNorm in a frozen backbone (the DeCUR and UNet ResNet-50s): TerraTorch's linear probing only calls
``requires_grad_(False)`` on the backbone, so the affine parameters stop but the running statistics keep
updating whenever the segmentor is in train mode (architectures.md §3). geopeft does the same by default
(``bn_stats: update``). ``bn_stats: frozen`` instead holds every backbone BatchNorm in eval mode: a
forward pre-hook switches the layer to eval before each call, so ``model.train()`` cannot undo it, and the
layer normalises with, and keeps, the pre-trained statistics. The running statistics are part of the
checkpoint either way (:func:`~geopeft.tuning.registry.trainable_state_dict`). ViT backbones have no
BatchNorm, so the option changes nothing for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from geopeft.errors import ConfigError
from geopeft.models.segmentor import Segmentor
from geopeft.tuning.registry import register_tuning

__all__ = [
    "BN_STATS",
    "FullSettings",
    "LinearProbeSettings",
    "apply_full",
    "apply_linear_probe",
    "hold_batchnorm_eval",
]

#: Values of the linear probe's ``bn_stats`` option.
BN_STATS = ("update", "frozen")


@dataclass(frozen=True)
class FullSettings:
    """Full fine-tuning has no settings: every parameter trains."""


@dataclass(frozen=True)
class LinearProbeSettings:
    """Linear probing: the backbone is frozen, neck and decoder train.

    Args:
        bn_stats: ``update`` (TerraTorch's behaviour): a frozen backbone's BatchNorm running statistics
            keep updating in train mode; ``frozen``: they stay as built or loaded.
    """

    bn_stats: str = field(default="update", metadata={"help": "frozen backbone BatchNorm stats: update | frozen"})

    def __post_init__(self) -> None:
        if self.bn_stats not in BN_STATS:
            raise ConfigError(
                f"linear_probe option bn_stats must be one of {', '.join(BN_STATS)}, got {self.bn_stats!r}"
            )


def _to_eval(module: nn.Module, args: tuple[Any, ...]) -> None:
    """Forward pre-hook: put the module in eval mode before it runs."""
    module.train(False)


def hold_batchnorm_eval(module: nn.Module) -> int:
    """Keep every BatchNorm layer inside ``module`` in eval mode, even after ``model.train()``.

    Args:
        module: e.g. a frozen ResNet backbone.

    Returns:
        The number of BatchNorm layers held.
    """
    layers = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for layer in layers:
        layer.train(False)
        layer.register_forward_pre_hook(_to_eval)
    return len(layers)


@register_tuning("full", FullSettings)
def apply_full(model: Segmentor, settings: FullSettings, where: str) -> None:
    """Make every parameter trainable."""
    model.requires_grad_(True)


@register_tuning("linear_probe", LinearProbeSettings)
def apply_linear_probe(model: Segmentor, settings: LinearProbeSettings, where: str) -> None:
    """Freeze the backbone (TerraTorch's ``freeze_backbone: true``); neck and decoder stay trainable."""
    model.requires_grad_(True)
    model.backbone.requires_grad_(False)
    if settings.bn_stats == "frozen":
        hold_batchnorm_eval(model.backbone)
