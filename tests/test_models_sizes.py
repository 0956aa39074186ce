"""Every tiny backbone × every decoder at the paper's chip sizes 128², 256² and 512² (issue 5).

The tiny backbones stand in for the full-size ones with the same code paths (patch 16 ViT, patch 16 ViT with the
TL encoders, Clay's patch 8 ViT with the dynamic embedding, a bottleneck ResNet). The decoders run with narrow
widths (:data:`NARROW`), the smallest that still have every layer of the paper's layout: the shapes do not
depend on the widths, and at 512² the paper's widths (512-channel FCN blocks, 256-channel UperNet) would make the
file take minutes on one CPU core instead of seconds. ``vit_b16`` and ``unet_resnet50`` have no tiny variant and
are covered in ``test_models_full_size.py`` (slow). Shape-only checks use batch 1 under ``no_grad``; the
backward check uses batch 2 (a 1×1 pool level with batch 1 gives batch norm a single value per channel).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import NARROW_DECODERS

from geopeft.models import backbone_names, decoder_names
from geopeft.models.build import build_segmentor, resolve_bands
from geopeft.models.registry import get_backbone
from geopeft.spec import DecoderSpec, ModelSpec

TINY = ("prithvi_tiny", "prithvi_tiny_tl", "clay_tiny", "resnet_tiny")
SIZES = (128, 256, 512)
CLASSES = 3

#: Narrow decoder widths: the shapes do not depend on them.
NARROW = NARROW_DECODERS


def _segmentor(backbone: str, decoder: str, img_size: int) -> torch.nn.Module:
    torch.manual_seed(0)
    spec = DecoderSpec(decoder, NARROW[decoder])
    return build_segmentor(ModelSpec(backbone), spec, num_classes=CLASSES, img_size=img_size)


def _metadata(batch: int) -> dict[str, torch.Tensor]:
    """Metadata for every backbone at once; the segmentor passes each backbone only its own keys."""
    return {
        "temporal_coords": torch.tensor([[[2019.0, 120.0]]]).repeat(batch, 1, 1),
        "location_coords": torch.tensor([[38.5, -121.7]]).repeat(batch, 1),
        "time": torch.rand(batch, 4),
        "latlon": torch.rand(batch, 4),
        "gsd": torch.tensor(30.0),
    }


def _channels(backbone: str) -> int:
    return len(resolve_bands(ModelSpec(backbone)))


def test_the_grid_covers_every_tiny_backbone_and_every_decoder():
    registered = set(backbone_names())
    small = {name for name in registered if "tiny" in name}
    assert small == set(TINY), f"new tiny backbone(s) {sorted(small ^ set(TINY))}: add them to TINY"
    assert set(NARROW) == set(decoder_names())


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s}px")
@pytest.mark.parametrize("decoder", list(NARROW))
@pytest.mark.parametrize("backbone", TINY)
def test_logits_cover_the_chip_at_every_paper_size(backbone, decoder, size):
    model = _segmentor(backbone, decoder, size).eval()
    with torch.no_grad():
        logits = model(torch.randn(1, _channels(backbone), size, size))
    assert logits.shape == (1, CLASSES, size, size)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("decoder", list(NARROW))
@pytest.mark.parametrize("backbone", TINY)
def test_backward_reaches_every_neck_and_decoder_parameter(backbone, decoder):
    model = _segmentor(backbone, decoder, 128).train()
    x, y = torch.randn(2, _channels(backbone), 128, 128), torch.randint(0, CLASSES, (2, 128, 128))
    logits = model(x, _metadata(2))
    assert logits.shape == (2, CLASSES, 128, 128)
    F.cross_entropy(logits, y).backward()
    head = [*model.neck.named_parameters(), *model.decoder.named_parameters()]
    assert head, "the decoder has no parameters"
    missing = [n for n, p in head if p.requires_grad and (p.grad is None or not torch.any(p.grad != 0))]
    assert missing == []
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert any(n.startswith("backbone.") and torch.any(g != 0) for n, g in grads.items())


@pytest.mark.parametrize("backbone", TINY)
def test_tall_chip_that_is_no_patch_multiple_is_cropped_back(backbone):
    """120×100 (taller than wide) pads to a patch multiple; the logits are the padded image's, cropped back."""
    height, width, patch = 120, 100, get_backbone(backbone).patch_size
    model = _segmentor(backbone, "unet", height).eval()
    x = torch.randn(1, _channels(backbone), height, width)
    padded = F.pad(x, (0, -width % patch, 0, -height % patch), mode="reflect")
    assert padded.shape[-2:] != x.shape[-2:]
    with torch.no_grad():
        logits, full = model(x), model(padded)
    assert logits.shape == (1, CLASSES, height, width)
    assert full.shape == (1, CLASSES, *padded.shape[-2:])
    torch.testing.assert_close(logits, full[..., :height, :width])
