"""The paper's baselines: ViT-B/16 (timm vit_base_patch16_224 architecture) and the U-Net with a ResNet-50 encoder."""

from __future__ import annotations

import pytest
import torch
from test_models_resnet import R50, resnet_param_count

from geopeft.data.bands import HLS_BANDS
from geopeft.errors import ConfigError
from geopeft.models.build import build_segmentor
from geopeft.models.registry import create_backbone, get_backbone
from geopeft.spec import DecoderSpec, ModelSpec

SMP_DECODER_CHANNELS = [256, 128, 64, 32, 16]


def vit_param_count(in_chans, img_size, patch=16, dim=768, depth=12, mlp_ratio=4):
    """Parameters of a timm ViT with CLS, qkv bias, final norm and no head, from the architecture."""
    tokens = 1 + (img_size // patch) ** 2
    patch_embed = in_chans * patch * patch * dim + dim
    hidden = mlp_ratio * dim
    block = 2 * (2 * dim)  # norm1, norm2
    block += dim * 3 * dim + 3 * dim  # qkv (with bias)
    block += dim * dim + dim  # proj
    block += dim * hidden + hidden + hidden * dim + dim  # mlp fc1, fc2
    return patch_embed + dim + tokens * dim + depth * block + 2 * dim


def unet_decoder_param_count(encoder_channels, channels, num_classes):
    """SMP UnetDecoder (batch norm, no centre) on encoder maps finest first, plus a 1×1 head."""
    levels = encoder_channels[::-1]
    skips = [*levels[1:], *([0] * len(channels))][: len(channels)]
    total, inp = 0, levels[0]
    for skip, out in zip(skips, channels, strict=True):
        total += (inp + skip) * out * 9 + 2 * out + out * out * 9 + 2 * out
        inp = out
    return total + channels[-1] * num_classes + num_classes


def test_vit_b16_parameter_count_on_meta():
    expected = vit_param_count(6, 224)
    assert expected == 86_388_480  # ViT-B/16 "86M" with a 6-band patch embedding and no head
    with torch.device("meta"):
        model = create_backbone("vit_b16", bands=HLS_BANDS, img_size=224)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert model.pos_embed.shape == (1, 197, 768)


def test_vit_b16_architecture_matches_timm_vit_base():
    with torch.device("meta"):
        model = create_backbone("vit_b16", bands=HLS_BANDS, img_size=64)
    assert model.patch_embed.proj.weight.shape == (768, 6, 16, 16)
    assert len(model.blocks) == 12
    assert model.blocks[0].attn.num_heads == 12
    assert model.blocks[0].attn.qkv.bias is not None
    assert model.blocks[0].norm1.eps == model.norm.eps == 1e-6
    assert model.cls_token.shape == (1, 1, 768)
    info = get_backbone("vit_b16")
    assert (info.kind, info.patch_size, info.embed_dim, info.depth) == ("vit", 16, 768, 12)


def test_vit_b16_returns_every_block_with_cls_and_the_last_normed():
    torch.manual_seed(0)
    model = create_backbone("vit_b16", bands=HLS_BANDS, img_size=64).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 6, 48, 64))
        assert len(out) == 12
        assert all(o.shape == (1, 1 + 3 * 4, 768) for o in out)
        torch.testing.assert_close(out[-1], model.norm(model.blocks[-1](out[-2])))
    with pytest.raises(ConfigError, match=r"expects \[B, 6, H, W\]"):
        model(torch.randn(1, 13, 32, 32))


@pytest.mark.parametrize("decoder", ["linear", "fcn", "upernet", "unet"])
def test_vit_b16_forward_with_every_decoder(decoder):
    model = build_segmentor(ModelSpec("vit_b16"), DecoderSpec(decoder), num_classes=2, img_size=100).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 6, 100, 120))
    assert out.shape == (1, 2, 100, 120)
    if decoder == "linear":
        assert model.decoder.conv.stride == (16, 16)


@pytest.mark.parametrize("size", [(64, 64), (100, 120)], ids=["64", "100x120"])
def test_unet_resnet50_is_smp_unet_shaped(size):
    info = get_backbone("unet_resnet50")
    assert (info.kind, info.default_bands) == ("cnn", HLS_BANDS)
    assert info.out_channels == (64, 256, 512, 1024, 2048)
    assert info.strides == (2, 4, 8, 16, 32)
    spec = DecoderSpec("unet", {"channels": SMP_DECODER_CHANNELS})
    model = build_segmentor(ModelSpec("unet_resnet50"), spec, num_classes=2, img_size=size[0]).eval()
    with torch.no_grad():
        maps = model.backbone(torch.randn(1, 6, 64, 64))
        out = model(torch.randn(1, 6, *size))
    assert [m.shape[1:] for m in maps] == [
        (c, 64 // s, 64 // s) for c, s in zip(info.out_channels, info.strides, strict=True)
    ]
    assert out.shape == (1, 2, *size)
    # the last decoder block has no skip and brings the map back to stride 1, as SMP's Unet
    assert model.decoder.blocks[-1].conv1[0].in_channels == 32
    encoder = resnet_param_count(6, **R50)
    decoder = unet_decoder_param_count(info.out_channels, SMP_DECODER_CHANNELS, 2)
    assert sum(p.numel() for p in model.parameters()) == encoder + decoder
    assert 32_000_000 < encoder + decoder < 33_000_000  # spec: ≈ 32 M
