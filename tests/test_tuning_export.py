"""Merging LoRA for export: same output, plain backbone, the pre-LoRA state-dict keys."""

from __future__ import annotations

import pytest
import torch
from helpers import sgd_step
from torch import nn

from geopeft.data.bands import HLS_BANDS
from geopeft.errors import ConfigError
from geopeft.models.build import build_segmentor
from geopeft.models.clay import ClayEncoder
from geopeft.models.prithvi import PrithviViT
from geopeft.spec import DecoderSpec, ModelSpec, TuningSpec
from geopeft.tuning import apply_tuning
from geopeft.tuning.export import fuse_qkv, merge_lora
from geopeft.tuning.lora import QKVSplit, split_qkv


def _trained_lora(name: str):
    torch.manual_seed(0)
    model = build_segmentor(ModelSpec(name, bands=HLS_BANDS), DecoderSpec("linear"), num_classes=3, img_size=32)
    initial = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    apply_tuning(model, TuningSpec("lora", {"alpha": 32}))  # scale 2, so a wrong scale would show
    for param_name, p in model.named_parameters():
        if ".lora_B." in param_name:
            nn.init.normal_(p, std=0.05)
    sgd_step(model)
    return model, initial


@pytest.mark.parametrize(("name", "cls"), [("prithvi_tiny", PrithviViT), ("clay_tiny", ClayEncoder)])
def test_merged_model_computes_the_same_with_the_original_keys(name, cls):
    model, initial = _trained_lora(name)
    x = torch.randn(2, 6, 32, 32)
    model.eval()
    with torch.no_grad():
        before = model(x)
        merge_lora(model)
        after = model(x)
    assert type(model.backbone) is cls
    merged = model.backbone.state_dict()
    assert {k: v.shape for k, v in merged.items()} == {k: v.shape for k, v in initial.items()}
    assert not any(isinstance(m, QKVSplit) for m in model.modules())
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    # The trained adapters are in the merged weights: exactly the adapted rows moved, k and proj did not.
    qkv = next(k for k in merged if k.endswith("qkv.weight"))
    d = merged[qkv].shape[1]
    for rows, moved in ((slice(0, d), True), (slice(d, 2 * d), False), (slice(2 * d, 3 * d), True)):
        assert torch.equal(merged[qkv][rows], initial[qkv][rows]) is not moved
    out_proj = next(k for k in merged if k.endswith(("attn.proj.weight", "to_out.weight")))
    assert torch.equal(merged[out_proj], initial[out_proj])


def test_fuse_qkv_inverts_split_qkv():
    torch.manual_seed(0)
    module = nn.Module()
    module.qkv = nn.Linear(8, 24)
    original = module.qkv.weight.detach().clone(), module.qkv.bias.detach().clone()
    assert split_qkv(module) == 1 and isinstance(module.qkv, QKVSplit)
    assert fuse_qkv(module) == 1 and type(module.qkv) is nn.Linear
    torch.testing.assert_close(module.qkv.weight, original[0], rtol=0, atol=0)
    torch.testing.assert_close(module.qkv.bias, original[1], rtol=0, atol=0)


def test_fuse_refuses_unmerged_adapters_and_merge_refuses_plain_models():
    model, _ = _trained_lora("prithvi_tiny")
    with pytest.raises(ConfigError, match=r"still wrapped by LoRA adapters; merge them first"):
        fuse_qkv(model.backbone)
    torch.manual_seed(0)
    plain = build_segmentor(ModelSpec("prithvi_tiny"), DecoderSpec("linear"), num_classes=3, img_size=32)
    apply_tuning(plain, TuningSpec("full"))
    with pytest.raises(ConfigError, match=r"model.pt: merge_lora: the backbone \(PrithviViT\) has no LoRA adapters"):
        merge_lora(plain, where="model.pt")
