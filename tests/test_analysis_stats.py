"""analysis.stats.summarize against hand-computed means, stds and counts."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from test_analysis_collect import DATASET, make_spec, make_sweep, write_result

from analysis.collect import collect
from analysis.stats import STATS, is_percent_metric, summarize
from geopeft.errors import GeopeftError


def row(method: str) -> tuple[str, str, str]:
    return ("prithvi_tiny", method, "linear")


@pytest.fixture
def tidy(tmp_path: Path) -> pd.DataFrame:
    make_sweep(tmp_path)
    return collect(tmp_path)


def test_shape_and_order(tidy: pd.DataFrame) -> None:
    s = summarize(tidy)
    assert list(s.index.names) == ["model", "method", "decoder"]
    assert list(s.columns.names) == ["dataset", "region", "stat"]
    # paper method order (VPT, LoRA, Full FT), the test region before the OOD one
    assert list(s.index) == [row("vpt"), row("lora"), row("full_ft")]
    assert list(s.columns) == [(DATASET, r, stat) for r in ("test", "bolivia") for stat in STATS]
    assert s[(DATASET, "test", "n")].dtype == "int64"


def test_hand_computed_values(tidy: pd.DataFrame) -> None:
    s = summarize(tidy)
    expected = {
        # (method, region): (mean, std) in percent; lora seed 2 failed, so n = 2 everywhere
        ("lora", "test"): (72.0, math.sqrt(8)),  # 70, 74
        ("lora", "bolivia"): (62.0, math.sqrt(8)),  # 60, 64
        ("full_ft", "test"): (78.0, math.sqrt(8)),  # 80, 76
        ("full_ft", "bolivia"): (54.0, math.sqrt(32)),  # 50, 58
    }
    for (method, region), (mean, std) in expected.items():
        assert s.loc[row(method), (DATASET, region, "mean")] == pytest.approx(mean)
        assert s.loc[row(method), (DATASET, region, "std")] == pytest.approx(std)
        assert s.loc[row(method), (DATASET, region, "n")] == 2


def test_missing_cell_is_nan_with_n_zero(tidy: pd.DataFrame) -> None:
    s = summarize(tidy)
    for region in ("test", "bolivia"):
        assert math.isnan(s.loc[row("vpt"), (DATASET, region, "mean")])
        assert math.isnan(s.loc[row("vpt"), (DATASET, region, "std")])
        assert s.loc[row("vpt"), (DATASET, region, "n")] == 0


def test_single_seed_has_nan_std(tmp_path: Path) -> None:
    make_sweep(tmp_path, {("lora", 0): {"test": 0.7, "bolivia": 0.6}, ("full_ft", 0): {"test": 0.8}})
    s = summarize(collect(tmp_path))
    assert s.loc[row("lora"), (DATASET, "test", "mean")] == pytest.approx(70.0)
    assert math.isnan(s.loc[row("lora"), (DATASET, "test", "std")])
    assert s.loc[row("lora"), (DATASET, "test", "n")] == 1
    # full_ft never had a bolivia region: that pair is kept, NaN with n 0
    assert s.loc[row("full_ft"), (DATASET, "bolivia", "n")] == 0
    assert math.isnan(s.loc[row("full_ft"), (DATASET, "bolivia", "mean")])


def test_loss_is_not_scaled_and_other_metrics_are(tidy: pd.DataFrame) -> None:
    assert summarize(tidy, metric="loss").loc[row("lora"), (DATASET, "test", "mean")] == pytest.approx(0.3)
    assert summarize(tidy, metric="accuracy").loc[row("lora"), (DATASET, "test", "mean")] == pytest.approx(90.0)
    assert summarize(tidy, metric="iou_1").loc[row("lora"), (DATASET, "test", "mean")] == pytest.approx(62.0)
    assert is_percent_metric("iou_3") and not is_percent_metric("loss")


def test_other_groupings(tidy: pd.DataFrame) -> None:
    s = summarize(tidy, by=("method",), across=("region",))
    assert list(s.index) == ["vpt", "lora", "full_ft"]
    assert s.loc["full_ft", ("bolivia", "mean")] == pytest.approx(54.0)


def test_errors(tidy: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(GeopeftError, match="metric 'f1' not in the table"):
        summarize(tidy, metric="f1")
    with pytest.raises(GeopeftError, match="not in the table"):
        summarize(tidy, by=("no_such_column",))
    with pytest.raises(GeopeftError, match="several cells share"):
        summarize(tidy, across=("dataset",))  # pools test and bolivia: two values per seed
    # two cells differing only in lr are not seeds of one group
    other = make_spec("lora", 0)
    other = type(other)(
        model=other.model, tuning=other.tuning, decoder=other.decoder, dataset=other.dataset,
        train=type(other.train)(lr=1e-3), seed=0,
    )  # fmt: skip
    root = tmp_path / "lr"
    make_sweep(root)
    write_result(root, other, {"test": 0.1, "bolivia": 0.1})
    from geopeft.io import atomic_write_json, read_json
    from geopeft.paths import SweepPaths

    manifest = read_json(SweepPaths(root).manifest)
    manifest["cells"].append({"index": 6, "cell_id": other.cell_id, "slug": other.slug, "spec": other.to_dict()})
    atomic_write_json(SweepPaths(root).manifest, manifest)
    df = collect(root)
    with pytest.raises(GeopeftError, match="add it to by"):
        summarize(df)
    assert summarize(df, by=("model", "method", "decoder", "lr")).shape[0] == 4
