"""DeCUR ResNet-50 (torchgeo ``ResNet50_Weights.SENTINEL2_ALL_DECUR``) and the ResNet encoder it shares with baselines.

The architecture is timm's ResNet-50 (torchgeo's ``resnet50`` *is* ``timm.create_model("resnet50")``) with
``in_chans = len(bands)`` and no classifier. :class:`ResNetEncoder` keeps timm's stem and stage modules
under their own names (``conv1``, ``bn1``, ``act1``, ``maxpool``, ``layer1`` … ``layer4``), so its state
dict keys are exactly torchgeo's minus ``fc.*``. ``forward`` returns the outputs of the chosen stages,
finest first, as TerraTorch's ``ResNetEncoderWrapper`` does with ``forward_intermediates``: stage 0 is
``act1`` (64 ch, stride 2) and stages 1–4 are ``layer1`` … ``layer4`` (256/512/1024/2048 ch at strides
4/8/16/32). The paper uses ``backbone_out_indices [1, 2, 3, 4]``.

Weights (:func:`load_decur_weights`): a local torchgeo-style state dict (``conv1.weight [64, 13, 7, 7]``,
``bn1.*``, ``layer1..4.*``, ``fc.*``). It is strict in spirit (torchgeo ``resnet50``, STYLE §2): every model
key must be in the file except the ``num_batches_tracked`` counters (BatchNorm with a fixed momentum never
reads them), and the file may only add ``fc.weight``/``fc.bias``. ``conv1`` input channels are picked by band
name from :data:`DECUR_BANDS` (TerraTorch's ``select_patch_embed_weights``): a 12-band dataset without
``CIRRUS`` leaves that kernel slice unused; a band DeCUR never saw keeps its random initialisation (with a
warning), as in TerraTorch.

BatchNorm under a frozen backbone: nothing here freezes anything. The BatchNorm layers are plain
``nn.BatchNorm2d`` and follow ``train()``/``eval()``; ``requires_grad_(False)`` (TerraTorch's linear probing,
since the wrapper defines no ``freeze()``) stops the affine parameters but **not** the running statistics,
which keep updating while the segmentor is in train mode. That is the reference behaviour [INF, spec §3];
whether a geopeft linear probe keeps it or puts the backbone's BatchNorm in eval mode is the tuning layer's
decision, not this module's.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from timm.models.resnet import Bottleneck, ResNet
from torch import Tensor, nn

from geopeft.data.bands import S2_BANDS
from geopeft.errors import ConfigError, WeightsError
from geopeft.models.registry import register_backbone
from geopeft.models.weights.files import read_weights_file

__all__ = [
    "DECUR_BANDS",
    "IGNORED_KEYS",
    "RESNET50_LAYERS",
    "ResNetEncoder",
    "load_decur_weights",
]

#: DeCUR's 13 input channels, S2 L1C B01, B02, B03, B04, B05, B06, B07, B08, B8A, B09, B10, B11, B12 (spec §3),
#: under TerraTorch's band names.
DECUR_BANDS: tuple[str, ...] = S2_BANDS

#: Blocks per stage of a ResNet-50.
RESNET50_LAYERS: tuple[int, ...] = (3, 4, 6, 3)

#: Checkpoint keys the encoder has no use for (the classifier); the only extra keys a file may hold.
IGNORED_KEYS: frozenset[str] = frozenset({"fc.weight", "fc.bias"})

#: Suffix of the BatchNorm batch counters, the only model keys a file may lack.
OPTIONAL_SUFFIX = ".num_batches_tracked"

#: Output channels of timm's plain ResNet stem (``conv1``/``act1``).
STEM_WIDTH = 64

#: The stage names, index 0 = stem activation, 1..4 = residual stages.
STAGES: tuple[str, ...] = ("act1", "layer1", "layer2", "layer3", "layer4")


class ResNetEncoder(nn.Module):
    """A timm ResNet without classifier, returning the outputs of ``out_indices`` (finest first).

    Args:
        bands: input band names (``in_chans = len(bands)``).
        layers: bottleneck blocks per stage (ResNet-50: ``(3, 4, 6, 3)``).
        channels: bottleneck widths per stage (ResNet-50: ``(64, 128, 256, 512)``; outputs are ×4). The
            stem (``conv1``) always has 64 channels: timm's plain stem ignores ``stem_width``.
        out_indices: stages to return, 0 = ``act1`` (stride 2), 1..4 = ``layer1``..``layer4``.
    """

    def __init__(
        self,
        bands: Sequence[str],
        *,
        layers: Sequence[int] = RESNET50_LAYERS,
        channels: Sequence[int] = (64, 128, 256, 512),
        out_indices: Sequence[int] = (1, 2, 3, 4),
    ) -> None:
        super().__init__()
        indices = tuple(out_indices)
        if not indices or any(not 0 <= i < len(STAGES) for i in indices) or list(indices) != sorted(set(indices)):
            raise ConfigError(f"ResNetEncoder: out_indices must be increasing stages in 0..4, got {indices!r}")
        self.bands = tuple(bands)
        self.in_chans = len(self.bands)
        self.out_indices = indices
        net = ResNet(
            block=Bottleneck,  # type: ignore[arg-type]  # timm annotates an instance; it takes the class
            layers=tuple(layers),
            channels=tuple(channels),
            in_chans=self.in_chans,
            num_classes=0,
            global_pool="",
        )
        self.conv1 = net.get_submodule("conv1")
        self.bn1 = net.get_submodule("bn1")
        self.act1 = net.get_submodule("act1")
        self.maxpool = net.get_submodule("maxpool")
        self.layer1 = net.get_submodule("layer1")
        self.layer2 = net.get_submodule("layer2")
        self.layer3 = net.get_submodule("layer3")
        self.layer4 = net.get_submodule("layer4")
        widths = (STEM_WIDTH, *(c * Bottleneck.expansion for c in channels))
        strides = (2, 4, 8, 16, 32)
        self.out_channels = [widths[i] for i in indices]
        self.strides = [strides[i] for i in indices]

    def forward(self, x: Tensor) -> list[Tensor]:
        """``[B, C, H, W]`` → the ``out_indices`` stage outputs ``[B, C_i, H/s_i, W/s_i]``, finest first."""
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ConfigError(
                f"ResNetEncoder expects [B, {self.in_chans}, H, W] images (bands {list(self.bands)}), got "
                f"{tuple(x.shape)}; check model.bands against the dataset's bands"
            )
        out: list[Tensor] = []
        x = self.act1(self.bn1(self.conv1(x)))
        if 0 in self.out_indices:
            out.append(x)
        x = self.maxpool(x)
        for stage in range(1, len(STAGES)):
            if stage > self.out_indices[-1]:
                break
            x = getattr(self, STAGES[stage])(x)
            if stage in self.out_indices:
                out.append(x)
        return out


def select_conv1(
    weight: Tensor, init: Tensor, bands: Sequence[str], ckpt_bands: Sequence[str] = DECUR_BANDS
) -> tuple[Tensor, list[str]]:
    """Pick and reorder ``conv1`` input channels by band name (TerraTorch ``select_patch_embed_weights``).

    Args:
        weight: the checkpoint kernel ``[64, len(ckpt_bands), k, k]``.
        init: the model's own kernel ``[64, len(bands), k, k]``, used for bands not in ``ckpt_bands``.
        bands: the model's input bands, in channel order.
        ckpt_bands: the checkpoint's input bands, in channel order.

    Returns:
        The new kernel and the bands that kept their initialisation.
    """
    out = init.clone()
    unmatched: list[str] = []
    for i, band in enumerate(bands):
        if band in ckpt_bands:
            out[:, i] = weight[:, ckpt_bands.index(band)]
        else:
            unmatched.append(band)
    return out, unmatched


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    raw: Mapping[str, Any] = read_weights_file(path, "DeCUR")
    if isinstance(raw, Mapping) and "state_dict" in raw and isinstance(raw["state_dict"], Mapping):
        raw = raw["state_dict"]
    if not isinstance(raw, Mapping) or not all(isinstance(v, Tensor) for v in raw.values()):
        raise WeightsError(f"DeCUR weights {path} hold a {type(raw).__name__}, not a state dict of tensors")
    return {str(k): v for k, v in raw.items()}


def load_decur_weights(model: ResNetEncoder, path: str | Path) -> ResNetEncoder:
    """Load a torchgeo-style DeCUR ResNet-50 state dict from ``path`` into ``model``.

    Args:
        model: the encoder to fill in place (any band subset of :data:`DECUR_BANDS`).
        path: a local ``rn50_ssl4eo-s12_ms_decur_ep100-*.pth`` (read with ``weights_only=True``; no download).

    Returns:
        ``model``.

    Raises:
        WeightsError: the file is missing or unreadable, a model key is missing (other than the
            BatchNorm counters), the file has keys beyond ``fc.*``, ``conv1`` does not have one input
            channel per DeCUR band, or another shape differs; the keys and the file are named.
    """
    path = Path(path)
    state = _read_state_dict(path)
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state and not k.endswith(OPTIONAL_SUFFIX))
    unexpected = sorted(k for k in state if k not in own and k not in IGNORED_KEYS)
    if missing or unexpected:
        raise WeightsError(
            f"DeCUR weights {path} do not match a ResNet-50 encoder: missing keys {missing}, unexpected keys "
            f"{unexpected} (only {sorted(IGNORED_KEYS)} may be extra); is it the torchgeo DeCUR state dict?"
        )
    conv1 = state["conv1.weight"]
    if conv1.ndim != 4 or conv1.shape[1] != len(DECUR_BANDS):
        raise WeightsError(
            f"DeCUR weights {path}: conv1.weight has shape {tuple(conv1.shape)}, expected "
            f"[64, {len(DECUR_BANDS)}, 7, 7] (one input channel per band of {list(DECUR_BANDS)})"
        )
    filtered = {k: v for k, v in state.items() if k in own}
    filtered["conv1.weight"], unmatched = select_conv1(conv1, own["conv1.weight"], model.bands)
    bad = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in filtered.items()
        if v.shape != own[k].shape
    ]
    if bad:
        raise WeightsError(f"DeCUR weights {path}: shapes differ from the model: {'; '.join(bad)}")
    if unmatched:
        warnings.warn(
            f"DeCUR weights {path}: bands {unmatched} are not among DeCUR's {list(DECUR_BANDS)}; their conv1 "
            "channels keep their random initialisation",
            stacklevel=2,
        )
    model.load_state_dict(filtered, strict=False)
    return model


# The builders take the chip size for the registry contract; a CNN works at any size that is a multiple
# of 32 (the segmentor pads to it), so they do not use it.


@register_backbone(
    "resnet_tiny",
    default_bands=DECUR_BANDS,
    patch_size=32,
    kind="cnn",
    out_channels=(32, 64, 128, 256),
    strides=(4, 8, 16, 32),
)
def resnet_tiny(*, bands: tuple[str, ...], img_size: int) -> nn.Module:
    """A tiny ResNet-50-shaped encoder for tests: one bottleneck per stage, widths 8/16/32/64 (×4 out).

    Same module names, strides and stage outputs as :func:`decur_resnet50` (the stem keeps timm's 64
    channels); ≈ 0.2 M parameters with 13 bands.
    """
    return ResNetEncoder(bands, layers=(1, 1, 1, 1), channels=(8, 16, 32, 64))


@register_backbone(
    "decur_resnet50",
    default_bands=DECUR_BANDS,
    patch_size=32,
    kind="cnn",
    out_channels=(256, 512, 1024, 2048),
    strides=(4, 8, 16, 32),
)
def decur_resnet50(*, bands: tuple[str, ...], img_size: int) -> nn.Module:
    """DeCUR's ResNet-50 (timm ``resnet50``, no ``fc``), returning ``layer1`` … ``layer4`` (stages 1–4)."""
    return ResNetEncoder(bands)
