"""Tuning registry: validation without peft, freeze rules, reports and the trained-state checkpoint."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from helpers import sgd_step

from geopeft.errors import ConfigError, WeightsError
from geopeft.models.build import build_segmentor
from geopeft.spec import DecoderSpec, ModelSpec, TuningSpec
from geopeft.tuning import (
    ParamReport,
    apply_tuning,
    load_trainable_state_dict,
    trainable_state_dict,
    tuning_names,
    validate_tuning,
)


def _tiny(seed: int = 0):
    torch.manual_seed(seed)
    return build_segmentor(ModelSpec("prithvi_tiny"), DecoderSpec("linear"), num_classes=3, img_size=64)


def test_registered_methods():
    assert {"full", "linear_probe", "lora", "vpt"} <= set(tuning_names())


def test_validate_tuning_does_not_import_peft():
    code = (
        "import sys\n"
        "from geopeft.spec import TuningSpec\n"
        "from geopeft.tuning.registry import validate_tuning\n"
        "validate_tuning(TuningSpec('lora', {'r': 8}))\n"
        "assert 'peft' not in sys.modules, 'peft was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (TuningSpec("qlora"), r"unknown tuning method 'qlora'; allowed: full, linear_probe, lora"),
        (TuningSpec("full", {"lr": 1}), r"unknown full option 'lr'; allowed: \(none\)"),
        (
            TuningSpec("lora", {"r": 8, "alpah": 3}),
            r"unknown lora option 'alpah'; allowed: alpha, dropout, freeze_backbone, r",
        ),
    ],
)
def test_validate_tuning_errors(spec, match):
    with pytest.raises(ConfigError, match=match):
        validate_tuning(spec, where="sweeps/paper.yaml")
    with pytest.raises(ConfigError, match=r"^sweeps/paper\.yaml: "):
        validate_tuning(spec, where="sweeps/paper.yaml")


def test_full_trains_everything_and_one_step_changes_all():
    model = _tiny()
    report = apply_tuning(model, TuningSpec("full"))
    total = sum(p.numel() for p in model.parameters())
    assert report == ParamReport(total, total)
    assert report.fraction == 1.0
    assert sgd_step(model) == {n for n, _ in model.named_parameters()}


def test_linear_probe_trains_only_the_decoder():
    model = _tiny()
    report = apply_tuning(model, TuningSpec("linear_probe"))
    assert report.trainable == 64 * 3 * 16 * 16 + 3
    assert sgd_step(model) == {"decoder.conv.weight", "decoder.conv.bias"}
    assert report.to_dict() == {"trainable": report.trainable, "total": report.total, "fraction": report.fraction}


@pytest.mark.parametrize("method", ["full", "lora", "linear_probe"])
def test_trainable_state_dict_round_trip(method):
    trained = _tiny()
    apply_tuning(trained, TuningSpec(method))
    sgd_step(trained)
    saved = {k: v.clone() for k, v in trainable_state_dict(trained).items()}
    fresh = _tiny()
    apply_tuning(fresh, TuningSpec(method))
    load_trainable_state_dict(fresh, saved)
    trained.eval()
    fresh.eval()
    x = torch.randn(1, 6, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), trained(x))
    trainable = {n for n, p in trained.named_parameters() if p.requires_grad}
    assert trainable <= set(saved)
    if method == "lora":
        assert set(saved) == trainable  # frozen base weights are not saved
    if method == "full":
        assert "backbone.pos_embed" in saved  # buffers of modules that train


def test_load_refuses_missing_and_unexpected_keys():
    model = _tiny()
    apply_tuning(model, TuningSpec("linear_probe"))
    saved = trainable_state_dict(model)
    with pytest.raises(WeightsError, match=r"ckpt.pt: .*missing decoder.conv.bias"):
        load_trainable_state_dict(model, {"decoder.conv.weight": saved["decoder.conv.weight"]}, where="ckpt.pt")
    with pytest.raises(WeightsError, match=r"unexpected backbone.norm.weight"):
        load_trainable_state_dict(model, {**saved, "backbone.norm.weight": torch.ones(64)})
    with pytest.raises(WeightsError, match="does not fit"):
        load_trainable_state_dict(model, {**saved, "decoder.conv.bias": torch.zeros(5)})
