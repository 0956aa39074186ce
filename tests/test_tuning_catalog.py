"""``geopeft models --peft METHOD``: per-backbone trainable counts on the meta device."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from geopeft.errors import ConfigError
from geopeft.spec import TuningSpec
from geopeft.tuning import catalog
from geopeft.tuning.catalog import backbone_report, format_peft_table, peft_table
from geopeft.tuning.registry import ParamReport
from hpc.cli import app

VIT_B = 86_237_184  # Prithvi EO 1.0 100M, as `geopeft models` prints it


@pytest.mark.parametrize(
    ("method", "trainable", "added"),
    [("lora", 2_064_384, 2_064_384), ("vpt", 921_600, 921_600), ("linear_probe", 0, 0), ("full", VIT_B, 0)],
)
def test_backbone_report_vit_b(method, trainable, added):
    report = backbone_report("prithvi_eo_v1_100", TuningSpec(method))
    assert report == ParamReport(trainable, VIT_B + added)


def test_lora_share_of_vit_b_is_about_2_4_percent():
    report = backbone_report("prithvi_eo_v1_100", TuningSpec("lora"))
    assert 100 * report.trainable / VIT_B == pytest.approx(2.39, abs=0.01)  # of the pre-trained backbone
    assert 100 * report.fraction == pytest.approx(2.34, abs=0.01)  # of the backbone with its adapters


def test_table_marks_backbones_the_method_does_not_apply_to(monkeypatch):
    monkeypatch.setattr(catalog, "backbone_names", lambda: ["resnet_tiny", "prithvi_eo_v2_300"])
    rows = peft_table("vpt")
    assert rows[0].report is None and "vpt is implemented for Prithvi and Clay" in rows[0].reason
    assert rows[1].report is not None and rows[1].report.trainable == 2_457_600
    text = format_peft_table("vpt", rows)
    assert "resnet_tiny              n/a" in text
    assert "prithvi_eo_v2_300  2,457,600  306,343,936  0.80" in text


def test_unknown_method_is_refused_before_building():
    with pytest.raises(ConfigError, match=r"--peft qlora: unknown tuning method 'qlora'"):
        peft_table("qlora")


def test_cli_models_peft(monkeypatch):
    monkeypatch.setattr(catalog, "backbone_names", lambda: ["clay_v1_base", "decur_resnet50"])
    runner = CliRunner()
    result = runner.invoke(app, ["models", "--peft", "lora"])
    assert result.exit_code == 0, result.output
    assert "clay_v1_base    2,064,384  94,166,528  2.19" in result.output
    assert "decur_resnet50: lora applies to ViT backbones" in result.output
    bad = runner.invoke(app, ["models", "--peft", "qlora"])
    assert bad.exit_code == 2 and bad.output.startswith("error: --peft qlora: unknown tuning method")
