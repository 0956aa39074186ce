"""Every full-size backbone runs one forward pass at its native chip size; the baselines run every decoder (issue 5).

Each backbone is built with random weights and its default bands and run once on a 224² chip (batch 1, inference
mode): the number of features and their shapes must match its :class:`~geopeft.models.registry.BackboneInfo`
(``[1, 1 + tokens, D]`` for a ViT, ``[1, C_i, 224/s_i, 224/s_i]`` for a CNN) and every value must be finite. The
TL variants must also react to their temporal and location coordinates. ``vit_b16`` and ``unet_resnet50`` have no
tiny variant, so they also run the 128/256/512 × decoder grid of ``test_models_sizes.py`` here. Models are freed
between tests; the 600M Prithvi needs about 2.5 GB in float32. About a minute on one CPU core.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
import torch
from helpers import NARROW_DECODERS
from torch import nn

from geopeft.models.build import build_segmentor
from geopeft.models.registry import (
    backbone_names,
    create_backbone,
    get_backbone,
    get_decoder,
    settings_from_options,
)
from geopeft.models.segmentor import Segmentor
from geopeft.spec import DecoderSpec, ModelSpec

pytestmark = pytest.mark.slow

FULL_SIZE = (
    "prithvi_eo_v1_100",
    "prithvi_eo_v2_100_tl",
    "prithvi_eo_v2_300",
    "prithvi_eo_v2_300_tl",
    "prithvi_eo_v2_600",
    "prithvi_eo_v2_600_tl",
    "clay_v1_base",
    "decur_resnet50",
    "vit_b16",
    "unet_resnet50",
)
TL = tuple(name for name in FULL_SIZE if name.endswith("_tl"))
CHIP = 224
BASELINES = ("vit_b16", "unet_resnet50")
SIZES = (128, 256, 512)
CLASSES = 3
#: Narrow decoder widths: the shapes do not depend on them.
NARROW = NARROW_DECODERS


@pytest.fixture(autouse=True)
def _free_memory() -> Iterator[None]:
    yield
    gc.collect()


def _coords() -> dict[str, torch.Tensor]:
    return {
        "temporal_coords": torch.tensor([[[2020.0, 150.0]]]),
        "location_coords": torch.tensor([[46.8, 8.2]]),
    }


def test_every_full_size_backbone_is_listed():
    assert set(FULL_SIZE) == {name for name in backbone_names() if "tiny" not in name}


@pytest.mark.parametrize("name", FULL_SIZE)
def test_one_forward_pass_matches_the_registered_features(name):
    info = get_backbone(name)
    torch.manual_seed(0)
    model = create_backbone(name, bands=info.default_bands, img_size=CHIP).eval()
    x = torch.randn(1, len(info.default_bands), CHIP, CHIP)
    with torch.inference_mode():
        features = model(x)
    assert len(features) == info.depth
    if info.kind == "vit":
        tokens = (CHIP // info.patch_size) ** 2
        expected = [(1, 1 + tokens, info.embed_dim)] * info.depth
    else:
        expected = [(1, c, CHIP // s, CHIP // s) for c, s in zip(info.out_channels, info.strides, strict=True)]
    assert [tuple(f.shape) for f in features] == expected
    assert all(torch.isfinite(f).all() for f in features)
    if name in TL:  # the same model, so the 600M one is built once
        assert set(model.metadata_keys) == set(_coords())
        with torch.inference_mode():
            with_coords = model(x, **_coords())[-1]
        assert with_coords.shape == features[-1].shape
        assert torch.isfinite(with_coords).all()
        assert not torch.allclose(with_coords, features[-1])
    del model, features


class _Replay(nn.Module):
    """Stands in for a backbone whose features on the one test image are already computed."""

    def __init__(self, features: list[torch.Tensor]) -> None:
        super().__init__()
        self.features = features

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        return self.features


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s}px")
@pytest.mark.parametrize("backbone", BASELINES)
def test_baselines_cover_the_chip_at_every_paper_size(backbone, size):
    """The backbone runs once per size; each decoder is built as build_segmentor does and reads its features."""
    info = get_backbone(backbone)
    torch.manual_seed(0)
    model = build_segmentor(ModelSpec(backbone), DecoderSpec("linear"), num_classes=CLASSES, img_size=size).eval()
    x = torch.randn(1, len(info.default_bands), size, size)
    with torch.inference_mode():
        replay = _Replay(model.backbone(x))  # every paper size is a multiple of 16 and 32: nothing to pad
        for decoder in NARROW:
            spec = get_decoder(decoder)
            neck, head = spec.builder(
                info, settings_from_options(spec.settings_cls, NARROW[decoder], decoder), CLASSES
            )
            logits = Segmentor(replay, neck, head, patch_size=info.patch_size).eval()(x)
            assert logits.shape == (1, CLASSES, size, size), decoder
            assert torch.isfinite(logits).all(), decoder
    del model, replay
