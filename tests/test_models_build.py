"""Segmentor building, padding/cropping and spec validation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from geopeft.data.bands import S2_BANDS
from geopeft.errors import ConfigError
from geopeft.models import backbone_names, decoder_names
from geopeft.models.build import build_segmentor, resolve_bands, validate
from geopeft.models.prithvi import HLS_BANDS
from geopeft.models.registry import create_backbone, get_backbone, get_decoder
from geopeft.spec import DecoderSpec, ModelSpec


@pytest.fixture(scope="module")
def tiny6():
    torch.manual_seed(0)
    return build_segmentor(ModelSpec("prithvi_tiny"), DecoderSpec("linear"), num_classes=3, img_size=64).eval()


def test_registries_list_names():
    assert {"prithvi_tiny", "prithvi_eo_v1_100", "prithvi_eo_v2_300"} <= set(backbone_names())
    assert decoder_names() == ["fcn", "linear", "unet", "upernet"]


@pytest.mark.parametrize("bands", [(), S2_BANDS], ids=["hls6", "s2_13"])
@pytest.mark.parametrize("size", [(64, 64), (128, 128), (100, 120)])
def test_forward_shapes(bands, size):
    model = build_segmentor(
        ModelSpec("prithvi_tiny", bands=bands), DecoderSpec("linear"), num_classes=4, img_size=size[0]
    )
    x = torch.randn(2, len(bands) or 6, *size)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 4, *size)
    assert model.backbone.in_chans == (len(bands) or 6)


def test_padding_is_reflect_right_bottom_and_crop_returns_the_input_region(tiny6):
    x = torch.randn(1, 6, 100, 120)
    padded = F.pad(x, (0, 8, 0, 12), mode="reflect")
    with torch.no_grad():
        torch.testing.assert_close(tiny6(x), tiny6(padded)[..., :100, :120])


def test_linear_decoder_structure(tiny6):
    assert isinstance(tiny6.decoder.conv, torch.nn.ConvTranspose2d)
    assert tiny6.decoder.conv.weight.shape == (64, 3, 16, 16)
    assert tiny6.decoder.conv.stride == (16, 16)
    assert list(tiny6.neck.parameters()) == []
    feats = tiny6.neck([torch.randn(2, 1 + 6 * 8, 64)], grid=(6, 8))
    assert feats[0].shape == (2, 64, 6, 8)


def test_neck_reshapes_row_major_without_cls():
    tokens = torch.arange(1 + 2 * 3, dtype=torch.float32).reshape(1, 7, 1).expand(1, 7, 2)
    tiny = build_segmentor(ModelSpec("prithvi_tiny"), DecoderSpec("linear"), num_classes=2, img_size=32)
    (grid,) = tiny.neck([tokens], grid=(2, 3))
    assert grid[0, 0].tolist() == [[1, 2, 3], [4, 5, 6]]


def test_metadata_is_accepted_and_unused_keys_ignored(tiny6):
    x = torch.randn(1, 6, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(tiny6(x, {"location_coords": torch.zeros(1, 2)}), tiny6(x))


def test_resolve_bands():
    assert resolve_bands(ModelSpec("prithvi_eo_v2_300")) == HLS_BANDS
    assert resolve_bands(ModelSpec("prithvi_tiny", bands=("RED", "NIR_NARROW"))) == ("RED", "NIR_NARROW")


def test_too_many_channels_is_a_clear_error(tiny6):
    with pytest.raises(ConfigError, match="built for 6 bands but the input has 13"):
        tiny6(torch.randn(1, 13, 32, 32))


def test_tiny_image_cannot_be_reflect_padded(tiny6):
    with pytest.raises(ConfigError, match="too small"):
        tiny6(torch.randn(1, 6, 5, 32))


@pytest.mark.parametrize(
    ("model", "decoder", "match"),
    [
        (
            ModelSpec("prithvi_huge"),
            DecoderSpec("linear"),
            r"unknown backbone 'prithvi_huge'; allowed: .*prithvi_tiny",
        ),
        (
            ModelSpec("prithvi_tiny"),
            DecoderSpec("upernet9"),
            r"unknown decoder 'upernet9'; allowed: fcn, linear, unet, upernet",
        ),
        (
            ModelSpec("prithvi_tiny"),
            DecoderSpec("linear", {"channels": 3}),
            r"unknown decoder linear option 'channels'; allowed: in_index",
        ),
        (
            ModelSpec("prithvi_tiny"),
            DecoderSpec("linear", {"in_index": 4}),
            r"in_index 4 is out of range .* allowed: -4 .. 3",
        ),
        (ModelSpec("prithvi_tiny"), DecoderSpec("linear", {"in_index": "last"}), r"in_index must be an integer"),
        (ModelSpec("prithvi_tiny", weights="v1"), DecoderSpec("linear"), r"unknown model.weights 'v1'; allowed: none"),
        (ModelSpec("prithvi_tiny", bands=("RED", "RED")), DecoderSpec("linear"), r"\['RED'\] more than once"),
    ],
)
def test_validate_rejects_with_key_and_allowed_values(model, decoder, match):
    with pytest.raises(ConfigError, match=match):
        validate(model, decoder, where="sweeps/x.yaml")
    with pytest.raises(ConfigError, match=r"^sweeps/x\.yaml: "):
        validate(model, decoder, where="sweeps/x.yaml")
    with pytest.raises(ConfigError, match=match):
        build_segmentor(model, decoder, num_classes=2, img_size=64)


def test_validate_accepts_good_specs():
    validate(ModelSpec("prithvi_eo_v2_300"), DecoderSpec("linear", {"in_index": -1}))


def test_bad_sizes_and_lookups():
    with pytest.raises(ConfigError, match="num_classes"):
        build_segmentor(ModelSpec("prithvi_tiny"), DecoderSpec("linear"), num_classes=0, img_size=64)
    with pytest.raises(ConfigError, match="img_size"):
        build_segmentor(ModelSpec("prithvi_tiny"), DecoderSpec("linear"), num_classes=2, img_size=8)
    with pytest.raises(ConfigError, match="unknown backbone 'x'"):
        get_backbone("x")
    with pytest.raises(ConfigError, match="unknown decoder 'x'"):
        get_decoder("x")
    with pytest.raises(ConfigError, match="non-empty list"):
        create_backbone("prithvi_tiny", bands=(), img_size=64)
