"""LoRA: the qkv split, peft wrapping, trainable counts, and what one optimiser step changes."""

from __future__ import annotations

import re

import pytest
import torch
from helpers import sgd_step
from torch import nn

from geopeft.errors import ConfigError
from geopeft.models.build import build_segmentor
from geopeft.models.prithvi import HLS_BANDS
from geopeft.models.registry import create_backbone
from geopeft.spec import DecoderSpec, ModelSpec, TuningSpec
from geopeft.tuning import apply_tuning, validate_tuning
from geopeft.tuning.lora import LAYOUTS, LoraSettings, QKVSplit, split_qkv


def _tiny(num_classes: int = 3):
    torch.manual_seed(0)
    return build_segmentor(ModelSpec("prithvi_tiny"), DecoderSpec("linear"), num_classes=num_classes, img_size=64)


def test_split_qkv_linear_matches_fused():
    torch.manual_seed(0)
    fused = nn.Linear(64, 192)
    split = QKVSplit(fused)
    x = torch.randn(3, 17, 64)
    torch.testing.assert_close(split(x), fused(x), atol=1e-6, rtol=0)
    torch.testing.assert_close(split.k.weight, fused.weight[64:128])
    torch.testing.assert_close(split.v.bias, fused.bias[128:])
    assert split.q.weight.data_ptr() != fused.weight.data_ptr()  # copies, not views


def test_split_attention_computes_identically():
    torch.manual_seed(0)
    backbone = create_backbone("prithvi_tiny", bands=HLS_BANDS, img_size=64).eval()
    x = torch.randn(2, 6, 32, 48)
    with torch.no_grad():
        before = backbone(x)
        assert split_qkv(backbone) == 4
        after = backbone(x)
    assert isinstance(backbone.blocks[0].attn.qkv, QKVSplit)
    for a, b in zip(before, after, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_split_refuses_non_qkv_shapes():
    with pytest.raises(ConfigError, match="not d → 3d"):
        QKVSplit(nn.Linear(8, 16))


def test_zero_initialised_lora_leaves_output_unchanged():
    model = _tiny().eval()
    x = torch.randn(2, 6, 48, 40)
    with torch.no_grad():
        before = model(x)
        apply_tuning(model, TuningSpec("lora"))
        after = model(x)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
    assert type(model.backbone).__name__ == "PeftModel"


def test_lora_vit_b_trains_exactly_the_adapters():
    with torch.device("meta"):
        model = build_segmentor(ModelSpec("prithvi_eo_v1_100"), DecoderSpec("linear"), num_classes=2, img_size=224)
        report = apply_tuning(model, TuningSpec("lora"))
    backbone_trainable = sum(p.numel() for p in model.backbone.parameters() if p.requires_grad)
    assert backbone_trainable == 2_064_384 == 12 * (2 * 768 * 16 * 2 + 2 * (768 * 16 + 16 * 3072))
    decoder = 768 * 2 * 16 * 16 + 2
    assert report.trainable == backbone_trainable + decoder
    assert report.total == 86_237_184 + decoder + backbone_trainable
    names = [n for n, p in model.backbone.named_parameters() if p.requires_grad]
    assert all(".lora_A." in n or ".lora_B." in n for n in names)
    assert {n.split(".")[-4] for n in names} == {"q", "v", "fc1", "fc2"}


def test_lora_vit_l_count():
    with torch.device("meta"):
        model = build_segmentor(ModelSpec("prithvi_eo_v2_300"), DecoderSpec("linear"), num_classes=2, img_size=224)
        apply_tuning(model, TuningSpec("lora"))
    assert sum(p.numel() for p in model.backbone.parameters() if p.requires_grad) == 24 * 14 * 1024 * 16


def test_lora_options_are_passed_to_peft():
    model = _tiny()
    apply_tuning(model, TuningSpec("lora", {"r": 4, "alpha": 8, "target_modules": ["q", "k", "v"]}))
    config = model.backbone.peft_config["default"]
    assert (config.r, config.lora_alpha, config.lora_dropout) == (4, 8, 0.0)
    assert set(config.target_modules) == {"q", "k", "v"}
    trainable = sum(p.numel() for p in model.backbone.parameters() if p.requires_grad)
    assert trainable == 4 * 3 * (2 * 64 * 4)


def test_one_lora_step_changes_exactly_adapters_and_decoder():
    model = _tiny()
    apply_tuning(model, TuningSpec("lora"))
    for name, p in model.named_parameters():
        if ".lora_B." in name:  # non-zero B so that lora_A receives a gradient too
            nn.init.normal_(p, std=0.02)
    changed = sgd_step(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    frozen_grads = [n for n, p in model.named_parameters() if not p.requires_grad and p.grad is not None]
    assert changed == trainable
    assert frozen_grads == []
    assert all(".lora_A." in n or ".lora_B." in n or n.startswith("decoder.") for n in changed)
    assert {"decoder.conv.weight", "decoder.conv.bias"} <= changed
    assert sum(".lora_A." in n for n in changed) == sum(".lora_B." in n for n in changed) == 4 * 4


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"rank": 8}, r"unknown lora option 'rank'; allowed: alpha, dropout, freeze_backbone, r, target_modules"),
        ({"r": 0}, r"lora option r must be a positive integer"),
        ({"alpha": -1}, r"lora option alpha"),
        ({"dropout": 1.5}, r"lora option dropout"),
        ({"target_modules": "q"}, r"target_modules must be a list of module names"),
        ({"target_modules": ["q", ""]}, r"target_modules must be a list of module names"),
        ({"freeze_backbone": True}, r"freeze_backbone must be false, .* a frozen LoRA backbone trains nothing"),
    ],
)
def test_bad_lora_options(options, match):
    with pytest.raises(ConfigError, match=match):
        validate_tuning(TuningSpec("lora", options))
    with pytest.raises(ConfigError, match=match):
        apply_tuning(_tiny(), TuningSpec("lora", options))


def test_default_settings_are_the_papers():
    assert LoraSettings() == LoraSettings(r=16, alpha=16, dropout=0.0, target_modules=(), freeze_backbone=False)
    assert [(lay.qkv, lay.targets) for lay in LAYOUTS] == [
        ("qkv", ("q", "v", "fc1", "fc2")),
        ("to_qkv", ("q", "v", "net.1", "net.3")),
    ]


def test_lora_clay_targets_split_to_qkv_and_feedforward():
    with torch.device("meta"):
        model = build_segmentor(ModelSpec("clay_v1_base"), DecoderSpec("linear"), num_classes=2, img_size=224)
        apply_tuning(model, TuningSpec("lora"))
    names = [n for n, p in model.backbone.named_parameters() if p.requires_grad]
    assert sum(p.numel() for p in model.backbone.parameters() if p.requires_grad) == 2_064_384
    adapted = {re.sub(r".*layers\.\d+\.", "", n.split(".lora_")[0]) for n in names}
    assert adapted == {"0.to_qkv.q", "0.to_qkv.v", "1.net.1", "1.net.3"}  # the spec's targets
    assert len(names) == 12 * 4 * 2
    assert model.backbone.peft_config["default"].target_modules == {"q", "v", "net.1", "net.3"}


def test_lora_clay_keeps_the_output_and_trains_adapters():
    torch.manual_seed(0)
    model = build_segmentor(ModelSpec("clay_tiny", bands=HLS_BANDS), DecoderSpec("linear"), num_classes=3, img_size=32)
    x = torch.randn(2, 6, 32, 32)
    with torch.no_grad():
        before = model.eval()(x)
        apply_tuning(model, TuningSpec("lora"))
        torch.testing.assert_close(model(x), before, atol=1e-5, rtol=0)
    split = model.backbone.base_model.model.transformer.layers[0][0].to_qkv
    assert isinstance(split, QKVSplit) and split.k.bias is None  # Clay's to_qkv has no bias
    for name, p in model.named_parameters():
        if ".lora_B." in name:
            nn.init.normal_(p, std=0.02)
    changed = sgd_step(model)
    assert changed == {n for n, p in model.named_parameters() if p.requires_grad}
    assert sum(".lora_A." in n for n in changed) == 2 * 4


def test_lora_refuses_a_backbone_without_qkv():
    torch.manual_seed(0)
    model = build_segmentor(ModelSpec("resnet_tiny"), DecoderSpec("linear"), num_classes=2, img_size=64)
    with pytest.raises(ConfigError, match=r"cell y: lora applies to ViT backbones .* ResNetEncoder has none"):
        apply_tuning(model, TuningSpec("lora"), where="cell y")


def test_target_that_matches_nothing_is_named():
    with pytest.raises(ConfigError, match=r"\['qkv_linear'\] match no Linear .* end in: fc1, fc2, k, proj, q, v"):
        apply_tuning(_tiny(), TuningSpec("lora", {"target_modules": ["q", "qkv_linear"]}), where="cell abc")


def test_lora_twice_is_refused():
    model = _tiny()
    apply_tuning(model, TuningSpec("lora"))
    with pytest.raises(ConfigError, match="already wrapped"):
        apply_tuning(model, TuningSpec("lora"))


def test_autocast_shares_one_cast_and_keeps_the_values():
    torch.manual_seed(0)
    fused = nn.Linear(64, 192)
    split = QKVSplit(fused)
    x = torch.randn(3, 17, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = split(x)
        assert out.dtype == torch.bfloat16
        torch.testing.assert_close(out, fused(x), atol=0, rtol=0)  # autocast's own cast, done once
    model = _tiny().eval()
    apply_tuning(model, TuningSpec("lora"))
    for name, p in model.named_parameters():
        if ".lora_B." in name:
            nn.init.normal_(p, std=0.02)
    x = torch.randn(2, 6, 32, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        shared = model(x)
        for module in model.modules():  # peft's default path: cast back to float32, autocast casts again
            if hasattr(module, "cast_input_dtype_enabled"):
                module.cast_input_dtype_enabled = True
                module._forward_pre_hooks.clear()
        default = model(x)
    torch.testing.assert_close(shared, default, atol=0, rtol=0)
