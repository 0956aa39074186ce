"""VPT-deep: prompt counts, initialisation, the reference per-block computation, and what one step trains."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import sgd_step
from torch import nn

from geopeft.data.bands import HLS_BANDS
from geopeft.errors import ConfigError
from geopeft.models.build import build_segmentor
from geopeft.models.registry import create_backbone
from geopeft.models.segmentor import Segmentor
from geopeft.spec import DecoderSpec, ModelSpec, TuningSpec
from geopeft.tuning import apply_tuning, load_trainable_state_dict, trainable_state_dict, validate_tuning
from geopeft.tuning.vpt import DeepPrompts, VptSettings, vpt_init_bound


def _tiny(name: str = "prithvi_tiny", seed: int = 0) -> Segmentor:
    torch.manual_seed(seed)
    return build_segmentor(ModelSpec(name, bands=HLS_BANDS), DecoderSpec("linear"), num_classes=3, img_size=32)


def _prompts(model: nn.Module) -> list[DeepPrompts]:
    return [m for m in model.modules() if isinstance(m, DeepPrompts)]


@pytest.mark.parametrize(
    ("backbone", "expected"),
    [("prithvi_eo_v1_100", 921_600), ("prithvi_eo_v2_300", 2_457_600), ("clay_v1_base", 921_600)],
)
def test_full_size_prompt_counts(backbone, expected):
    with torch.device("meta"):
        model = build_segmentor(ModelSpec(backbone), DecoderSpec("linear"), num_classes=2, img_size=224)
        plain_total = sum(p.numel() for p in model.backbone.parameters())
        report = apply_tuning(model, TuningSpec("vpt"))
    trainable = {n: p.numel() for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert sum(trainable.values()) == expected
    assert all(n.endswith(".vpt.embeddings") for n in trainable)
    decoder = sum(p.numel() for p in model.decoder.parameters())
    assert report.trainable == expected + decoder
    assert report.total == plain_total + expected + decoder


def test_defaults_are_the_papers():
    assert VptSettings() == VptSettings(num_tokens=100, dropout=0.1)


def test_initialisation_is_uniform_within_the_kmnp_bound():
    model = _tiny("prithvi_tiny")
    apply_tuning(model, TuningSpec("vpt"))
    bound = math.sqrt(6 / (3 * 16 * 16 + 64))
    assert vpt_init_bound(16, 64) == pytest.approx(bound)
    values = torch.cat([p.embeddings.detach().flatten() for p in _prompts(model)])
    assert values.numel() == 4 * 100 * 64
    assert values.abs().max() <= bound and values.abs().max() > 0.95 * bound
    assert abs(values.mean()) < 0.05 * bound
    clay = _tiny("clay_tiny")
    apply_tuning(clay, TuningSpec("vpt", {"num_tokens": 7}))
    clay_bound = math.sqrt(6 / (3 * 8 * 8 + 64))  # Clay's patch size 8
    assert all(p.embeddings.shape == (1, 7, 64) for p in _prompts(clay))
    assert max(p.embeddings.abs().max().item() for p in _prompts(clay)) <= clay_bound


def _block_input(backbone: nn.Module, host: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The tokens ``host`` receives when the (prompt-free) ``backbone`` encodes ``x``."""
    seen: list[torch.Tensor] = []
    handle = host.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    with torch.no_grad():
        backbone(x)
    handle.remove()
    return seen[0]


def _insert(x: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
    return torch.cat([x[:, :1], prompts.expand(x.shape[0], -1, -1), x[:, 1:]], dim=1)


def _drop(x: torch.Tensor, n: int) -> torch.Tensor:
    return torch.cat([x[:, :1], x[:, 1 + n :]], dim=1)


def test_prithvi_matches_the_reference_block_loop():
    torch.manual_seed(0)
    plain = create_backbone("prithvi_tiny", bands=HLS_BANDS, img_size=32).eval()
    tuned = Segmentor(
        create_backbone("prithvi_tiny", bands=HLS_BANDS, img_size=32), nn.Identity(), nn.Identity(), patch_size=16
    )
    tuned.backbone.load_state_dict(plain.state_dict())
    apply_tuning(tuned, TuningSpec("vpt", {"num_tokens": 5}))
    tuned.eval()
    x = torch.randn(2, 6, 32, 48)
    tokens = _block_input(plain, plain.blocks[0], x)
    expected = []
    with torch.no_grad():
        for block, prompts in zip(plain.blocks, _prompts(tuned), strict=True):
            tokens = _drop(block(_insert(tokens, prompts.embeddings)), 5)
            expected.append(tokens)
        expected[-1] = plain.norm(tokens)
        got = tuned.backbone(x)
    assert [f.shape for f in got] == [(2, 1 + 2 * 3, 64)] * 4
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_clay_matches_the_reference_layer_loop():
    """Prompts inserted before attention and dropped after the feed-forward, as TerraTorch's Clay."""
    torch.manual_seed(0)
    plain = create_backbone("clay_tiny", bands=HLS_BANDS, img_size=32).eval()
    tuned = Segmentor(
        create_backbone("clay_tiny", bands=HLS_BANDS, img_size=32), nn.Identity(), nn.Identity(), patch_size=8
    )
    tuned.backbone.load_state_dict(plain.state_dict())
    apply_tuning(tuned, TuningSpec("vpt", {"num_tokens": 3}))
    tuned.eval()
    x = torch.randn(2, 6, 16, 24)
    tokens = _block_input(plain, plain.transformer.layers[0][0], x)
    expected = []
    with torch.no_grad():
        for (attn, ff), prompts in zip(plain.transformer.layers, _prompts(tuned), strict=True):
            tokens = _insert(tokens, prompts.embeddings)
            tokens = attn(tokens) + tokens
            tokens = _drop(ff(tokens) + tokens, 3)
            expected.append(tokens)
        expected[-1] = plain.transformer.norm(tokens)
        got = tuned.backbone(x)
    assert [f.shape for f in got] == [(2, 1 + 2 * 3, 64)] * 2
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_prompt_dropout_acts_in_train_mode_only():
    model = _tiny()
    apply_tuning(model, TuningSpec("vpt", {"dropout": 0.5}))
    x = torch.randn(1, 6, 32, 32)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))
        model.train()
        assert not torch.equal(model(x), model(x))


@pytest.mark.parametrize("backbone", ["prithvi_tiny", "prithvi_tiny_tl", "clay_tiny"])
def test_one_vpt_step_changes_exactly_prompts_and_decoder(backbone):
    model = _tiny(backbone)
    apply_tuning(model, TuningSpec("vpt"))
    changed = sgd_step(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert changed == trainable
    assert [n for n, p in model.named_parameters() if not p.requires_grad and p.grad is not None] == []
    depth = 4 if backbone.startswith("prithvi") else 2
    assert sum(n.endswith(".vpt.embeddings") for n in changed) == depth
    assert changed - {n for n in changed if n.endswith(".vpt.embeddings")} == {
        "decoder.conv.weight",
        "decoder.conv.bias",
    }


def test_vpt_state_round_trip():
    trained = _tiny(seed=0)
    apply_tuning(trained, TuningSpec("vpt"))
    sgd_step(trained)
    saved = {k: v.clone() for k, v in trainable_state_dict(trained).items()}
    assert {k for k in saved if k.startswith("backbone.")} == {f"backbone.blocks.{i}.vpt.embeddings" for i in range(4)}
    fresh = _tiny(seed=0)
    apply_tuning(fresh, TuningSpec("vpt"))
    load_trainable_state_dict(fresh, saved)
    x = torch.randn(1, 6, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), trained.eval()(x))


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"tokens": 8}, r"unknown vpt option 'tokens'; allowed: dropout, num_tokens"),
        ({"num_tokens": 0}, r"num_tokens must be a positive integer"),
        ({"dropout": 1.0}, r"dropout must lie in \[0, 1\)"),
    ],
)
def test_bad_vpt_options(options, match):
    with pytest.raises(ConfigError, match=match):
        validate_tuning(TuningSpec("vpt", options))


def test_vpt_refuses_other_backbones_and_twice():
    torch.manual_seed(0)
    resnet = build_segmentor(ModelSpec("resnet_tiny"), DecoderSpec("linear"), num_classes=2, img_size=64)
    with pytest.raises(ConfigError, match=r"cell x: vpt is implemented for Prithvi and Clay .* not for ResNetEncoder"):
        apply_tuning(resnet, TuningSpec("vpt"), where="cell x")
    model = _tiny()
    apply_tuning(model, TuningSpec("vpt"))
    with pytest.raises(ConfigError, match="already has prompts"):
        apply_tuning(model, TuningSpec("vpt"))


def test_prompts_need_positional_tokens():
    model = _tiny()
    apply_tuning(model, TuningSpec("vpt"))
    with pytest.raises(ConfigError, match="first positional"):
        model.backbone.blocks[0](x=torch.zeros(1, 5, 64))
