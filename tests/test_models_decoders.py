"""FCN, UperNet and UNet decoders, the pyramid neck, and the options of every decoder."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from geopeft.errors import ConfigError
from geopeft.models.build import build_segmentor, validate
from geopeft.models.decoders.fcn import FCNDecoder, LayerNorm2d
from geopeft.models.decoders.unet import UNetDecoder
from geopeft.models.decoders.upernet import UperNetDecoder
from geopeft.models.necks import LearnedInterpolateToPyramidal, TokensToPyramid, default_pyramid_indices
from geopeft.models.registry import get_backbone, get_decoder, settings_from_options
from geopeft.spec import DecoderSpec, ModelSpec

#: Narrow widths keep the CPU forward passes fast; the shapes do not depend on them.
SMALL = {
    "linear": {},
    "fcn": {"channels": 16},
    "upernet": {"channels": 16},
    "unet": {"channels": (32, 16, 16, 8)},
}


def _build(decoder: str, options: dict, size: int = 64, classes: int = 4):
    torch.manual_seed(0)
    return build_segmentor(
        ModelSpec("prithvi_tiny"), DecoderSpec(decoder, options), num_classes=classes, img_size=size
    )


def _heads(backbone: str, decoder: str, classes: int = 2, **options):
    info = get_decoder(decoder)
    settings = settings_from_options(info.settings_cls, options, f"decoder {decoder}")
    return info.builder(get_backbone(backbone), settings, classes)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("decoder", list(SMALL))
@pytest.mark.parametrize("size", [(64, 64), (128, 128), (100, 120)], ids=["64", "128", "100x120"])
def test_forward_shapes(decoder, size):
    model = _build(decoder, SMALL[decoder], size[0]).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 6, *size))
    assert out.shape == (2, 4, *size)


@pytest.mark.parametrize("decoder", ["fcn", "upernet", "unet"])
def test_paper_defaults_run(decoder):
    model = _build(decoder, {}, 32, classes=3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 6, 32, 32)).shape == (1, 3, 32, 32)


@pytest.mark.parametrize("decoder", list(SMALL))
def test_gradient_reaches_every_decoder_and_neck_parameter(decoder):
    model = _build(decoder, SMALL[decoder]).train()
    x, y = torch.randn(2, 6, 64, 64), torch.randint(0, 4, (2, 64, 64))
    F.cross_entropy(model(x), y).backward()
    params = [*model.neck.named_parameters(), *model.decoder.named_parameters()]
    assert params
    missing = [n for n, p in params if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []


def test_default_pyramid_indices_follow_the_paper():
    assert default_pyramid_indices(12) == (2, 5, 8, 11)
    assert default_pyramid_indices(24) == (5, 11, 17, 23)
    assert default_pyramid_indices(4) == (0, 1, 2, 3)
    assert default_pyramid_indices(2) == (0, 0, 0, 1)
    neck, _ = _heads("prithvi_eo_v2_300", "unet")
    assert neck.select.indices == (5, 11, 17, 23)
    neck, _ = _heads("prithvi_eo_v1_100", "upernet", select_indices=(3, 6, 9, -1))
    assert neck.select.indices == (3, 6, 9, -1)


def test_pyramid_neck_strides_and_channels():
    neck = LearnedInterpolateToPyramidal([768] * 4).eval()
    maps = [torch.randn(1, 768, 4, 6) for _ in range(4)]
    with torch.no_grad():
        out = neck(maps)
    assert [tuple(o.shape[1:]) for o in out] == [(192, 16, 24), (384, 8, 12), (768, 4, 6), (768, 2, 3)]
    assert neck.out_channels == (192, 384, 768, 768)
    torch.testing.assert_close(out[2], maps[2])
    torch.testing.assert_close(out[3], F.max_pool2d(maps[3], 2))
    # fpn1: ConvT 768→384 (k2) + BN(384) + ConvT 384→192 (k2); fpn2: ConvT 768→384 (k2); rest parameter-free.
    fpn1 = (768 * 384 * 4 + 384) + 2 * 384 + (384 * 192 * 4 + 192)
    fpn2 = 768 * 384 * 4 + 384
    assert _count(neck) == fpn1 + fpn2 == 2_655_936
    with pytest.raises(ConfigError, match="exactly 4"):
        LearnedInterpolateToPyramidal([768] * 3)


def test_upernet_parameter_count_on_a_vit_b_pyramid():
    levels, ch, scales, classes = (192, 384, 768, 768), 256, 4, 2

    def conv_module(cin: int, k: int) -> int:  # conv without bias + BatchNorm (weight, bias)
        return cin * ch * k * k + 2 * ch

    expected = (
        scales * conv_module(levels[-1], 1)  # PPM branches
        + conv_module(levels[-1] + scales * ch, 3)  # PSP bottleneck
        + sum(conv_module(c, 1) for c in levels[:-1])  # laterals
        + 3 * conv_module(ch, 3)  # FPN convs
        + conv_module(4 * ch, 3)  # fpn_bottleneck
        + ch * classes
        + classes  # 1×1 head
    )
    assert expected == 9_394_690
    decoder = UperNetDecoder(levels, classes)
    assert _count(decoder) == expected
    neck, built = _heads("prithvi_eo_v1_100", "upernet", classes)
    assert neck.out_channels == levels and neck.select.indices == (2, 5, 8, 11)
    assert _count(built) == expected


def test_upernet_output_is_at_the_finest_level():
    decoder = UperNetDecoder((8, 16, 32, 32), 3, channels=8).eval()
    maps = [torch.randn(2, c, 16 // 2**i, 20 // 2**i) for i, c in enumerate((8, 16, 32, 32))]
    with torch.no_grad():
        assert decoder(maps).shape == (2, 3, 16, 20)


def test_unet_blocks_mirror_smp_channels():
    decoder = UNetDecoder((192, 384, 768, 768), 2, (512, 256, 128, 64))
    firsts = [block.conv1[0] for block in decoder.blocks]
    assert [(c.in_channels, c.out_channels) for c in firsts] == [(1536, 512), (896, 256), (448, 128), (128, 64)]
    assert all(c.bias is None for c in firsts)
    maps = [torch.randn(2, c, 16 // 2**i, 16 // 2**i) for i, c in enumerate((192, 384, 768, 768))]
    with torch.no_grad():
        assert decoder.eval()(maps).shape == (2, 2, 32, 32)  # 4 × up-2 from the 2² top: twice the finest level


def test_fcn_blocks_and_layer_norm():
    decoder = FCNDecoder(768, 2)
    assert len(decoder.upscaling_block) == 4
    first = decoder.upscaling_block[0]
    assert isinstance(first[0], torch.nn.ConvTranspose2d) and first[0].stride == (2, 2)
    assert first[0].in_channels == 768 and first[1].out_channels == 512 and first[1].bias is not None
    norm = LayerNorm2d(5)
    x = torch.randn(2, 5, 3, 4)
    expected = F.layer_norm(x.permute(0, 2, 3, 1), (5,), eps=1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(norm(x), expected)
    neck, _ = _heads("prithvi_eo_v1_100", "fcn", in_index=-2)
    assert neck.indices == (-2,)


def test_pyramid_neck_on_tokens_reshapes_like_the_plain_neck():
    neck = TokensToPyramid((0, 1, 2, 3), 8)
    tokens = [torch.randn(1, 1 + 2 * 3, 8) for _ in range(4)]
    out = neck(tokens, grid=(2, 3))
    torch.testing.assert_close(out[2], tokens[2][:, 1:].reshape(1, 2, 3, 8).permute(0, 3, 1, 2))


@pytest.mark.parametrize(
    ("decoder", "options", "match"),
    [
        ("fcn", {"channel": 3}, r"unknown decoder fcn option 'channel'; allowed: channels, in_index, num_convs"),
        ("upernet", {"x": 1}, r"'x'; allowed: channels, pool_scales, select_indices"),
        ("unet", {"depth": 1}, r"'depth'; allowed: channels, select_indices"),
        ("fcn", {"channels": 0}, "fcn option channels must be a positive integer"),
        ("fcn", {"num_convs": True}, "fcn option num_convs must be a positive integer"),
        ("fcn", {"in_index": 1.0}, "fcn option in_index must be an integer"),
        ("upernet", {"pool_scales": ()}, "upernet option pool_scales"),
        ("upernet", {"select_indices": [1, 2, 3]}, "upernet option select_indices must be 4 block indices"),
        ("unet", {"channels": [64, -1]}, "unet option channels"),
        ("unet", {"select_indices": "2,5,8,11"}, "unet option select_indices"),
    ],
)
def test_bad_options_raise(decoder, options, match):
    with pytest.raises(ConfigError, match=match):
        validate(ModelSpec("prithvi_eo_v1_100"), DecoderSpec(decoder, options), where="grid.yaml")


@pytest.mark.parametrize(
    ("decoder", "options", "option"),
    [
        ("fcn", {"in_index": 12}, "in_index"),
        ("upernet", {"select_indices": [2, 5, 8, 12]}, "select_indices"),
        ("unet", {"select_indices": [-13, 5, 8, 11]}, "select_indices"),
    ],
)
def test_indices_outside_the_backbone_name_the_option(decoder, options, option):
    with pytest.raises(ConfigError, match=rf"^grid\.yaml: decoder {decoder} option {option} .*change decoder option"):
        validate(ModelSpec("prithvi_eo_v1_100"), DecoderSpec(decoder, options), where="grid.yaml")
    validate(ModelSpec("prithvi_eo_v2_300"), DecoderSpec(decoder, options))  # 24 blocks: fine


def test_default_indices_fit_every_vit_backbone():
    for backbone in ("prithvi_tiny", "prithvi_eo_v1_100", "prithvi_eo_v2_300", "clay_tiny", "clay_v1_base"):
        for decoder in ("fcn", "upernet", "unet"):
            validate(ModelSpec(backbone), DecoderSpec(decoder))


def test_linear_upsampling_below_the_stride_rescales_to_the_input_size():
    """``upsampling: 8`` on a patch-16 ViT: half-resolution logits, bilinearly rescaled (TerraTorch's rescale)."""
    model = _build("linear", {"upsampling": 8}, 64).eval()
    conv = model.decoder.conv
    assert conv.kernel_size == (8, 8) and conv.stride == (8, 8)
    x = torch.randn(1, 6, 64, 64)
    with torch.no_grad():
        out = model(x)
        half = model.decoder(model.neck(model.backbone(x), grid=(4, 4)))
    assert half.shape == (1, 4, 32, 32) and out.shape == (1, 4, 64, 64)
    torch.testing.assert_close(out, F.interpolate(half, size=(64, 64), mode="bilinear"))
    assert _build("linear", {}, 64).decoder.conv.stride == (16, 16)


@pytest.mark.parametrize("value", [-1, 1.5, True])
def test_linear_upsampling_must_be_a_non_negative_integer(value):
    with pytest.raises(ConfigError, match="decoder linear option upsampling"):
        validate(ModelSpec("prithvi_tiny"), DecoderSpec("linear", {"upsampling": value}))
