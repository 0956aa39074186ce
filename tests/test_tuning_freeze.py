"""Freeze rules on a CNN: linear probing and BatchNorm running statistics (reference: they keep updating)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from geopeft.errors import ConfigError
from geopeft.models.build import build_segmentor
from geopeft.models.resnet import DECUR_BANDS
from geopeft.spec import DecoderSpec, ModelSpec, TuningSpec
from geopeft.tuning import apply_tuning, load_trainable_state_dict, trainable_state_dict, validate_tuning
from geopeft.tuning.freeze import hold_batchnorm_eval


def _resnet(seed: int = 0, decoder: str = "linear"):
    torch.manual_seed(seed)
    return build_segmentor(ModelSpec("resnet_tiny"), DecoderSpec(decoder), num_classes=3, img_size=64)


def _step(model: nn.Module) -> set[str]:
    """``model.train()`` and one SGD step on a 13-band 64² batch; the names of the parameters it changed."""
    torch.manual_seed(1)
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    x, y = torch.randn(2, len(DECUR_BANDS), 64, 64) * 3 + 1, torch.randint(0, 3, (2, 64, 64))
    nn.functional.cross_entropy(model(x), y).backward()
    optimiser.step()
    return {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}


def _backbone_bn(model: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]


def _stats(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.backbone.state_dict().items() if "running_" in k}


def test_linear_probe_keeps_updating_backbone_batchnorm_stats_by_default():
    model = _resnet()
    apply_tuning(model, TuningSpec("linear_probe"))
    before = _stats(model)
    changed = _step(model)
    assert changed and all(n.startswith("decoder.") for n in changed)  # no backbone weight moved
    after = _stats(model)
    assert before and all(not torch.equal(before[k], after[k]) for k in before)  # every running stat moved
    assert all(bn.training for bn in _backbone_bn(model))


def test_frozen_bn_stats_survive_model_train():
    model = _resnet(decoder="unet")  # a decoder with BatchNorm of its own
    apply_tuning(model, TuningSpec("linear_probe", {"bn_stats": "frozen"}))
    before = _stats(model)
    model.train()  # the hook puts each backbone BatchNorm back in eval before it runs
    changed = _step(model)
    assert changed and all(n.startswith("decoder.") for n in changed)
    after = _stats(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(bn.training for bn in _backbone_bn(model))
    decoder_bn = [m for m in model.decoder.modules() if isinstance(m, nn.BatchNorm2d)]
    assert decoder_bn and all(m.training for m in decoder_bn)  # only the backbone's are held


def test_hold_batchnorm_eval_counts_layers():
    module = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.Sequential(nn.BatchNorm1d(3)))
    assert hold_batchnorm_eval(module) == 2
    module.train()
    module[1](torch.randn(4, 2, 3, 3))
    assert not module[1].training and module[1].num_batches_tracked.item() == 0


def test_checkpoint_holds_the_running_stats_of_a_frozen_backbone():
    trained = _resnet()
    apply_tuning(trained, TuningSpec("linear_probe"))
    _step(trained)
    saved = {k: v.clone() for k, v in trainable_state_dict(trained).items()}
    assert {f"backbone.{k}" for k in _stats(trained)} <= set(saved)
    assert not any(k.startswith("backbone.") and k.endswith((".weight", ".bias")) for k in saved)
    fresh = _resnet()
    apply_tuning(fresh, TuningSpec("linear_probe"))
    load_trainable_state_dict(fresh, saved)
    x = torch.randn(1, len(DECUR_BANDS), 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), trained.eval()(x))


def test_full_fine_tuning_trains_every_resnet_parameter():
    model = _resnet()
    report = apply_tuning(model, TuningSpec("full"))
    assert report.trainable == report.total
    changed = _step(model)
    # Every parameter gets a gradient; timm's zero-initialised last BatchNorm of each bottleneck blocks the
    # first step from reaching the convolutions before it, so not every weight moves yet.
    assert all(p.grad is not None for p in model.parameters())
    assert {n.split(".")[0] for n in changed} == {"backbone", "decoder"}
    assert "backbone.conv1.weight" in changed


def test_bad_bn_stats():
    with pytest.raises(ConfigError, match=r"bn_stats must be one of update, frozen, got 'eval'"):
        validate_tuning(TuningSpec("linear_probe", {"bn_stats": "eval"}))
