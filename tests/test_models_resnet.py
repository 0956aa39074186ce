"""DeCUR ResNet-50: the CNN backbone contract, decoders on feature maps, parameter count and weight loading."""

from __future__ import annotations

import pytest
import torch
from weights_fixtures import R50, TINY, fake_state_dict, torchgeo_resnet_shapes

from geopeft.data.bands import HLS_BANDS, S2_BANDS
from geopeft.errors import ConfigError, WeightsError
from geopeft.models.build import build_segmentor, validate
from geopeft.models.registry import BackboneInfo, create_backbone, get_backbone, register_backbone
from geopeft.models.resnet import DECUR_BANDS, ResNetEncoder, load_decur_weights
from geopeft.spec import DecoderSpec, ModelSpec

DECODERS = ["linear", "fcn", "upernet", "unet"]
SIZES = [(64, 64), (128, 128), (100, 120)]


def resnet_param_count(in_chans, layers, widths, stem, expansion=4):
    """Parameters of a bottleneck ResNet without classifier, from the architecture (BN = weight + bias)."""
    total = in_chans * stem * 7 * 7 + 2 * stem
    inp = stem
    for blocks, w in zip(layers, widths, strict=True):
        out = expansion * w
        for b in range(blocks):
            total += inp * w + 2 * w  # conv1 1×1 + bn1
            total += w * w * 9 + 2 * w  # conv2 3×3 + bn2
            total += w * out + 2 * out  # conv3 1×1 + bn3
            if b == 0:
                total += inp * out + 2 * out  # downsample conv 1×1 + bn
            inp = out
    return total


def tiny_encoder(bands=DECUR_BANDS):
    return ResNetEncoder(bands, layers=TINY["layers"], channels=TINY["widths"])


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("backbone", ["resnet_tiny", "decur_resnet50"])
def test_forward_shapes(backbone, decoder, size):
    opts = (
        {"channels": 16}
        if decoder in ("fcn", "upernet")
        else {"channels": [32, 16, 8, 8]}
        if decoder == "unet"
        else {}
    )
    model = build_segmentor(ModelSpec(backbone), DecoderSpec(decoder, opts), num_classes=3, img_size=size[0]).eval()
    x = torch.randn(1, 13, *size)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, 3, *size)


def test_stage_outputs_match_the_registered_channels_and_strides():
    info = get_backbone("resnet_tiny")
    assert (info.kind, info.patch_size, info.depth, info.embed_dim) == ("cnn", 32, 4, 256)
    encoder = create_backbone("resnet_tiny", bands=S2_BANDS, img_size=64)
    with torch.no_grad():
        maps = encoder(torch.randn(2, 13, 64, 96))
    assert [m.shape[1] for m in maps] == list(info.out_channels) == encoder.out_channels
    assert [(64 // m.shape[2], 96 // m.shape[3]) for m in maps] == [(s, s) for s in info.strides]
    decur = get_backbone("decur_resnet50")
    assert decur.out_channels == (256, 512, 1024, 2048)
    assert decur.strides == (4, 8, 16, 32)
    assert decur.default_bands == S2_BANDS


def test_decoders_read_the_maps_directly():
    linear = build_segmentor(ModelSpec("resnet_tiny"), DecoderSpec("linear"), num_classes=2, img_size=64)
    assert linear.decoder.conv.weight.shape == (256, 2, 32, 32)
    assert linear.decoder.conv.stride == (32, 32)
    assert list(linear.neck.parameters()) == []
    fcn = build_segmentor(ModelSpec("resnet_tiny"), DecoderSpec("fcn"), num_classes=2, img_size=64)
    assert fcn.decoder.upscaling_block[0][0].in_channels == 256
    for name in ("upernet", "unet"):
        model = build_segmentor(ModelSpec("resnet_tiny"), DecoderSpec(name), num_classes=2, img_size=64)
        assert list(model.neck.parameters()) == [], name
        maps = [torch.randn(1, c, 2, 2) for c in (32, 64, 128, 256)]
        assert all(a is b for a, b in zip(model.neck(maps, grid=(2, 2)), maps, strict=True))
    upernet = build_segmentor(ModelSpec("decur_resnet50"), DecoderSpec("upernet"), num_classes=2, img_size=64)
    assert [c.conv.in_channels for c in upernet.decoder.lateral_convs] == [256, 512, 1024]
    unet = build_segmentor(ModelSpec("decur_resnet50"), DecoderSpec("unet"), num_classes=2, img_size=64)
    assert unet.decoder.blocks[0].conv1[0].in_channels == 2048 + 1024


@pytest.mark.parametrize(
    ("decoder", "options", "option"),
    [
        ("linear", {"in_index": 4}, "in_index"),
        ("fcn", {"in_index": -5}, "in_index"),
        ("upernet", {"select_indices": [0, 1, 2, 4]}, "select_indices"),
        ("unet", {"select_indices": [3, 2, 1, 0]}, "select_indices"),
        ("upernet", {"select_indices": [0, 0, 1, 2]}, "select_indices"),
    ],
)
def test_incompatible_options_name_the_option_to_change(decoder, options, option):
    with pytest.raises(ConfigError, match=f"x.yaml: decoder {decoder} option {option}.*resnet_tiny"):
        validate(ModelSpec("resnet_tiny"), DecoderSpec(decoder, options), where="x.yaml")


def test_backbone_contract_validation():
    info = get_backbone("prithvi_tiny")
    assert (info.kind, info.out_channels, info.strides) == ("vit", (64,) * 4, (16,) * 4)
    with pytest.raises(ConfigError, match="kind must be one of"):
        BackboneInfo("x", ("RED",), 16, 8, 2, info.builder, kind="rnn")
    with pytest.raises(ConfigError, match="same non-zero length"):
        register_backbone(
            "bad_cnn", default_bands=("RED",), patch_size=32, kind="cnn", out_channels=(8, 16), strides=(4,)
        )


def test_decur_parameter_count_on_meta():
    expected = resnet_param_count(13, **R50)
    assert resnet_param_count(3, **R50) == 25_557_032 - (2048 * 1000 + 1000)  # torchvision resnet50 minus fc
    assert expected == 23_508_032 + 10 * 64 * 7 * 7 == 23_539_392
    with torch.device("meta"):
        model = create_backbone("decur_resnet50", bands=DECUR_BANDS, img_size=224)
        tiny = create_backbone("resnet_tiny", bands=DECUR_BANDS, img_size=64)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert sum(p.numel() for p in tiny.parameters()) == resnet_param_count(13, **TINY)
    assert model.conv1.weight.shape == (64, 13, 7, 7)
    assert not hasattr(model, "fc")


def test_loader_fills_every_tensor_of_the_full_model(tmp_path):
    shapes = torchgeo_resnet_shapes(13, num_classes=1000, **R50)
    state = fake_state_dict(shapes)
    path = tmp_path / "rn50_ssl4eo-s12_ms_decur_ep100.pth"
    torch.save(state, path)
    model = create_backbone("decur_resnet50", bands=DECUR_BANDS, img_size=64)
    assert set(model.state_dict()) == set(shapes) - {"fc.weight", "fc.bias"}
    load_decur_weights(model, path)
    for key, value in model.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            torch.testing.assert_close(value, state[key], msg=key)


@pytest.fixture
def tiny_file(tmp_path):
    state = fake_state_dict(torchgeo_resnet_shapes(13, **TINY))
    path = tmp_path / "decur.pth"
    torch.save(state, path)
    return path, state


def test_conv1_channels_are_selected_by_band_name(tiny_file):
    path, state = tiny_file
    bands = ("RED", "BLUE", "NIR_NARROW", "SWIR_2")
    model = load_decur_weights(tiny_encoder(bands), path)
    expected = state["conv1.weight"][:, [3, 1, 8, 12]]
    torch.testing.assert_close(model.conv1.weight.detach(), expected)
    twelve = [b for b in S2_BANDS if b != "CIRRUS"]
    model12 = load_decur_weights(tiny_encoder(twelve), path)
    assert model12.conv1.weight.shape[1] == 12
    torch.testing.assert_close(model12.conv1.weight[:, 10].detach(), state["conv1.weight"][:, 11])


def test_unknown_band_keeps_its_init_and_warns(tiny_file):
    path, state = tiny_file
    model = tiny_encoder((*HLS_BANDS, "VV"))
    init = model.conv1.weight[:, 6].detach().clone()
    with pytest.warns(UserWarning, match=r"\['VV'\]"):
        load_decur_weights(model, path)
    torch.testing.assert_close(model.conv1.weight[:, 6].detach(), init)
    torch.testing.assert_close(model.conv1.weight[:, 0].detach(), state["conv1.weight"][:, 1])


def test_missing_key_names_the_key_and_the_file(tiny_file):
    path, state = tiny_file
    del state["layer2.0.bn2.running_var"]
    torch.save(state, path)
    with pytest.raises(WeightsError, match=rf"{path}.*missing keys \['layer2.0.bn2.running_var'\]"):
        load_decur_weights(tiny_encoder(), path)


def test_batch_counters_and_fc_may_differ_but_nothing_else(tiny_file):
    path, state = tiny_file
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    state["fc.weight"] = torch.zeros(10, 256)
    state["fc.bias"] = torch.zeros(10)
    torch.save(state, path)
    load_decur_weights(tiny_encoder(), path)
    state["head.weight"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"unexpected keys \['head.weight'\]"):
        load_decur_weights(tiny_encoder(), path)


def test_wrong_shapes_and_files_raise(tiny_file, tmp_path):
    path, state = tiny_file
    with pytest.raises(WeightsError, match="does not exist; fetch it first"):
        load_decur_weights(tiny_encoder(), tmp_path / "nope.pth")
    state["conv1.weight"] = torch.zeros(64, 12, 7, 7)
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"conv1.weight has shape \(64, 12, 7, 7\)"):
        load_decur_weights(tiny_encoder(), path)
    state["conv1.weight"] = torch.zeros(64, 13, 7, 7)
    state["layer1.0.conv2.weight"] = torch.zeros(8, 8, 1, 1)
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"layer1.0.conv2.weight: file \(8, 8, 1, 1\)"):
        load_decur_weights(tiny_encoder(), path)
    torch.save([1, 2], path)
    with pytest.raises(WeightsError, match="not a state dict"):
        load_decur_weights(tiny_encoder(), path)


def test_wrong_channel_count_is_a_config_error():
    encoder = tiny_encoder(HLS_BANDS)
    with pytest.raises(ConfigError, match=r"expects \[B, 6, H, W\]"):
        encoder(torch.randn(1, 13, 32, 32))
