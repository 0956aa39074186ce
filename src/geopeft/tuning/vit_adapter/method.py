"""The ``vit_adapter`` tuning method: wrap a Prithvi backbone in ViT-Adapter and rebuild neck and decoder.

study.md §2 "ViT-Adapter" and architectures.md §6: ``freeze_backbone: true`` (the ViT is frozen; the
adapter's ``level_embed``, ``spm``, ``interactions``, ``up`` and ``norm1..4`` train, as do the neck and the
decoder), Prithvi models only. The adapter outputs four maps at strides 4, 8, 16, 32 with ``D`` channels
each, so the segmentor's neck and decoder are rebuilt for that CNN-like contract (``necks: []`` in the
paper: on such a backbone the decoders' necks only select maps) through the segmentor's ``head_builder``.

BatchNorm: the reference uses ``SyncBatchNorm``. The adapter is built with ``BatchNorm2d``, and converted
with ``nn.SyncBatchNorm.convert_sync_batchnorm`` when the method is applied inside an initialised
``torch.distributed`` process group of more than one process (so under DDP the process group must exist
before :func:`~geopeft.tuning.registry.apply_tuning`); alone it stays plain BatchNorm, which computes the
same thing on one process.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import cast

import torch.distributed as dist
from timm.models.vision_transformer import Block
from torch import nn

from geopeft.errors import ConfigError
from geopeft.models.prithvi import PrithviViT
from geopeft.models.registry import backbone_names, get_backbone
from geopeft.models.segmentor import Segmentor
from geopeft.tuning.registry import register_tuning
from geopeft.tuning.vit_adapter.adapter import (
    PATCH_SIZE,
    STRIDES,
    ViTAdapterBackbone,
    check_interaction_indexes,
    default_interaction_indexes,
)

#: The paper's overhead of ViT-Adapter over the backbone, "up to ~13.8 %" (study.md §1, UNCONFIRMED).
PAPER_OVERHEAD = 0.138


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def supported_backbones() -> list[str]:
    """Registered backbones ViT-Adapter can wrap: the Prithvi family with patch size 16."""
    return [n for n in backbone_names() if n.startswith("prithvi") and get_backbone(n).patch_size == PATCH_SIZE]


@dataclass(frozen=True)
class ViTAdapterSettings:
    """ViT-Adapter settings (``prithvi_adapter_cfgs``, architectures.md §6; defaults are the paper's).

    Args:
        interaction_indexes: ``[start, end]`` block runs, one per interaction; ``None`` = four equal runs
            (``[[0,2],[3,5],[6,8],[9,11]]`` for 12 blocks, ``[[0,5],[6,11],[12,17],[18,23]]`` for 24).
        deform_num_heads: deformable attention heads; ``None`` = the ViT's attention heads (12 for ViT-B,
            16 for ViT-L, as in the paper).
        n_points: sampling points per head and level.
        deform_ratio: value width of the deformable attention over D.
        init_values: initial injector gate ``γ`` (0: the adapter leaves the ViT path unchanged at init).
        conv_inplane: width of the spatial prior module.
        use_extra_extractor: two extra extractors after the last interaction.
        add_vit_feature: add the resized ViT maps to the adapter's outputs.
    """

    interaction_indexes: tuple[tuple[int, int], ...] | None = field(
        default=None, metadata={"help": "[start, end] block runs per interaction (null = 4 equal runs)"}
    )
    deform_num_heads: int | None = field(
        default=None, metadata={"help": "deformable attention heads (null = the ViT's heads)"}
    )
    n_points: int = field(default=4, metadata={"help": "sampling points per head and level"})
    deform_ratio: float = field(default=0.5, metadata={"help": "value width over D"})
    init_values: float = field(default=0.0, metadata={"help": "initial injector gate"})
    conv_inplane: int = field(default=64, metadata={"help": "spatial prior module width"})
    use_extra_extractor: bool = field(default=True, metadata={"help": "2 extra extractors on the last interaction"})
    add_vit_feature: bool = field(default=True, metadata={"help": "add the ViT maps to the outputs"})

    def __post_init__(self) -> None:
        indexes = self.interaction_indexes
        if indexes is not None:
            if not isinstance(indexes, list | tuple) or not all(
                isinstance(p, list | tuple) and len(p) == 2 and all(_is_int(i) for i in p) for p in indexes
            ):
                raise ConfigError(
                    "vit_adapter option interaction_indexes must be a list of [start, end] block index pairs, "
                    f"e.g. [[0, 2], [3, 5], [6, 8], [9, 11]], or null; got {indexes!r}"
                )
            object.__setattr__(self, "interaction_indexes", tuple((p[0], p[1]) for p in indexes))
        heads = self.deform_num_heads
        if heads is not None and (not _is_int(heads) or heads < 1):
            raise ConfigError(f"vit_adapter option deform_num_heads must be a positive integer or null, got {heads!r}")
        for name in ("n_points", "conv_inplane"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ConfigError(f"vit_adapter option {name} must be a positive integer, got {value!r}")
        if not _is_number(self.deform_ratio) or not 0 < self.deform_ratio <= 1:
            raise ConfigError(f"vit_adapter option deform_ratio must lie in (0, 1], got {self.deform_ratio!r}")
        if not _is_number(self.init_values):
            raise ConfigError(f"vit_adapter option init_values must be a number, got {self.init_values!r}")
        for name in ("use_extra_extractor", "add_vit_feature"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"vit_adapter option {name} must be true or false, got {getattr(self, name)!r}")

    def check_backbone(self, name: str, where: str = "") -> None:
        """Plan-time check that the method fits the backbone ``name`` (a patch-16 Prithvi; indexes in range).

        Args:
            name: backbone registry name.
            where: file or cell, prepended to messages.
        """
        prefix = f"{where}: " if where else ""
        if name not in supported_backbones():
            raise ConfigError(
                f"{prefix}tuning method vit_adapter works on Prithvi backbones with patch size {PATCH_SIZE} only, "
                f"not {name}; use one of {', '.join(supported_backbones())} or another tuning method"
            )
        depth = get_backbone(name).depth
        try:
            check_interaction_indexes(self.indexes(depth), depth)
        except ConfigError as exc:
            raise ConfigError(f"{prefix}{exc}") from None

    def indexes(self, depth: int) -> tuple[tuple[int, int], ...]:
        """The interaction indexes for a ViT of ``depth`` blocks (given, or the default)."""
        return self.interaction_indexes or default_interaction_indexes(depth)


def _vit_heads(vit: PrithviViT) -> int:
    """The ViT's attention heads (timm's ``Attention.num_heads`` of its first block)."""
    heads = cast(Block, vit.blocks[0]).attn.num_heads
    if not isinstance(heads, int):
        raise ConfigError("vit_adapter: cannot read the ViT's attention heads; set option deform_num_heads")
    return heads


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@register_tuning("vit_adapter", ViTAdapterSettings)
def apply_vit_adapter(model: Segmentor, settings: ViTAdapterSettings, where: str) -> None:
    """Replace the backbone with :class:`ViTAdapterBackbone`, rebuild neck and decoder, freeze the ViT.

    Raises:
        ConfigError: the backbone is not a patch-16 single-frame Prithvi, the segmentor cannot rebuild its
            decoder, or the settings do not fit the ViT.
    """
    prefix = f"{where}: " if where else ""
    vit = model.backbone
    if not isinstance(vit, PrithviViT):
        raise ConfigError(
            f"{prefix}tuning method vit_adapter needs a Prithvi backbone, got {type(vit).__name__}; "
            f"use one of {', '.join(supported_backbones())}"
        )
    if model.head_builder is None or model.backbone_info is None:
        raise ConfigError(
            f"{prefix}tuning method vit_adapter must rebuild the decoder, but this segmentor was not made by "
            "build_segmentor; build it with geopeft.models.build_segmentor"
        )
    heads = settings.deform_num_heads or _vit_heads(vit)
    try:
        adapter = ViTAdapterBackbone(
            vit,
            interaction_indexes=settings.indexes(len(vit.blocks)),
            heads=heads,
            points=settings.n_points,
            ratio=settings.deform_ratio,
            init_values=settings.init_values,
            conv_inplane=settings.conv_inplane,
            use_extra_extractor=settings.use_extra_extractor,
            add_vit_feature=settings.add_vit_feature,
        )
    except ConfigError as exc:
        raise ConfigError(f"{prefix}{exc}") from None
    dim = vit.embed_dim
    info = dataclasses.replace(
        model.backbone_info,
        kind="cnn",
        patch_size=STRIDES[-1],
        embed_dim=dim,
        depth=len(STRIDES),
        out_channels=(dim,) * len(STRIDES),
        strides=STRIDES,
    )
    neck, decoder = model.head_builder(info)
    model.requires_grad_(True)
    vit.requires_grad_(False)
    backbone: nn.Module = adapter
    if _distributed():
        backbone = nn.SyncBatchNorm.convert_sync_batchnorm(adapter)  # type: ignore[no-untyped-call]
    model.backbone = backbone
    model.neck = neck
    model.decoder = decoder
    model.backbone_info = info
    model.patch_size = info.patch_size
