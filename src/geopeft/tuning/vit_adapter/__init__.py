"""ViT-Adapter for the Prithvi family in pure PyTorch; importing the package registers ``vit_adapter``.

* :mod:`~geopeft.tuning.vit_adapter.msda` — multi-scale deformable attention on ``F.grid_sample``;
* :mod:`~geopeft.tuning.vit_adapter.modules` — spatial prior module, injector, extractor, interaction block;
* :mod:`~geopeft.tuning.vit_adapter.adapter` — the backbone that runs the ViT with the interactions;
* :mod:`~geopeft.tuning.vit_adapter.method` — the settings and the tuning method.
"""

from __future__ import annotations

from geopeft.tuning.vit_adapter.adapter import ViTAdapterBackbone
from geopeft.tuning.vit_adapter.method import ViTAdapterSettings, apply_vit_adapter, supported_backbones
from geopeft.tuning.vit_adapter.msda import MSDeformAttn, ms_deform_attn_core

__all__ = [
    "MSDeformAttn",
    "ViTAdapterBackbone",
    "ViTAdapterSettings",
    "apply_vit_adapter",
    "ms_deform_attn_core",
    "supported_backbones",
]
