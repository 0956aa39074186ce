"""analysis.paper and analysis.robust: the released tables regenerated from synthesised result files."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from analysis_fixtures import assert_frames_equal_2dp, synthesise_paper_sweep, write_cell

from analysis.collect import collect
from analysis.labels import EPOCHS, TEST_MIOU, TOTAL_TIME
from analysis.paper import cell_values, paper_stats, paper_summary, read_released, released_layout
from analysis.robust import average_ranks, delta_to_full, iqm, iqm_bootstrap
from geopeft.errors import GeopeftError
from geopeft.io import atomic_write_json
from geopeft.paths import SweepPaths
from geopeft.spec import CellSpec, DecoderSpec, ModelSpec, TrainSpec, TuningSpec


@pytest.fixture(scope="module")
def paper(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame]:
    root = tmp_path_factory.mktemp("paper")
    synthesise_paper_sweep(root)
    values = cell_values(collect(root))
    return values, paper_stats(values)


@pytest.mark.parametrize("name", ["peft_table", "ood_table"])
def test_round_trip_regenerates_the_released_file(paper, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.csv"
    path.write_text(released_layout(paper[1], name).to_csv())
    ours = pd.read_csv(path, header=[0, 1, 2], index_col=[0, 1])
    assert_frames_equal_2dp(ours, read_released(name))
    # the header lines are the authors' own
    assert (
        path.read_text().splitlines()[:4]
        == (Path(__file__).parents[1] / "analysis/reference" / path.name).read_text().splitlines()[:4]
    )


def test_epoch_and_time_layout_and_values(paper) -> None:
    ours, released = released_layout(paper[1], "epoch_and_time"), read_released("epoch_and_time")
    assert list(ours.index) == list(released.index) and list(ours.columns) == list(released.columns)
    np.testing.assert_allclose(ours[TOTAL_TIME].to_numpy(), released[TOTAL_TIME].to_numpy(), atol=1e-9)
    # five integer epochs per cell: exact where the authors had 5 runs, within 0.1 for the 4-run cells
    np.testing.assert_allclose(ours[EPOCHS].to_numpy(), released[EPOCHS].to_numpy(), atol=0.1 + 1e-9)


def test_six_band_runs_stand_for_the_plain_rows_on_burn_scars(paper) -> None:
    values, stats = paper
    assert not ((values["model"] == "DeCUR") & (values["dataset"] == "burn_scars") & ~values["reused"]).any()
    table = released_layout(stats, "peft_table")
    assert table.loc[("DeCUR", "Full FT"), (TEST_MIOU, "mean", "burn_scars")] == pytest.approx(
        table.loc[("DeCUR (6 bands)", "Full FT"), (TEST_MIOU, "mean", "burn_scars")]
    )


def test_average_rank_is_the_papers(paper) -> None:
    ranks = average_ranks(paper[1]).set_index(["model", "peft_type"])["rank"]
    # spec §5.1, average rank within each backbone over the five datasets
    assert ranks["Prithvi 2.0 300M"].to_dict() == pytest.approx(
        {"Linear Prob.": 5.0, "VPT": 3.0, "LoRA": 1.4, "ViT Adapter": 3.8, "Full FT": 1.8}
    )
    assert ranks["Clay v1"].to_dict() == pytest.approx({"Linear Prob.": 4.0, "VPT": 3.0, "LoRA": 1.6, "Full FT": 1.4})
    assert ranks["Prithvi 1.0 100M"]["ViT Adapter"] == pytest.approx(2.2)


def test_ties_share_their_mean_rank() -> None:
    stats = pd.DataFrame(
        {
            "model": ["m"] * 3,
            "peft_type": ["LoRA", "VPT", "Full FT"],
            "metric": [TEST_MIOU] * 3,
            "dataset": ["d"] * 3,
            "mean": [50.0, 50.0, 60.0],
            "std": [1.0] * 3,
            "n": [3] * 3,
        }
    )
    ranks = average_ranks(stats).set_index("peft_type")["rank"]
    assert ranks.to_dict() == {"VPT": 2.5, "LoRA": 2.5, "Full FT": 1.0}


def test_delta_to_full_ft_is_the_papers(paper) -> None:
    deltas = delta_to_full(paper[1]).loc["Prithvi 2.0 300M"].round(2)
    assert list(deltas.columns) == [
        "sen1floods11",
        "burn_scars",
        "reBEN_7k",
        "m_cashew_plantation",
        "m_sa_crop_type",
        "mean",
    ]
    assert deltas.loc["LoRA"].tolist() == [-0.09, 0.48, 1.43, -3.05, 0.61, -0.12]
    assert deltas.loc["Linear Prob."].tolist() == [-2.05, -8.95, -6.17, -53.29, -12.48, -16.59]
    assert "Full FT" not in deltas.index


def test_iqm_and_its_stratified_bootstrap(paper) -> None:
    assert float(iqm(np.array([0.0, 1.0, 2.0, 3.0, 100.0, 4.0, 5.0, -50.0]))) == pytest.approx(2.5)  # trim 2 each end
    values = paper[0]
    table = iqm_bootstrap(values, n_boot=500).set_index(["model", "peft_type"])
    again = iqm_bootstrap(values, n_boot=500).set_index(["model", "peft_type"])
    pd.testing.assert_frame_equal(table, again)  # seeded
    assert ((table["ci_low"] <= table["iqm"]) & (table["iqm"] <= table["ci_high"])).all()
    assert table["iqm"].between(0, 1).all() and (table["runs"] == 25).all() and (table["datasets"] == 5).all()
    p300 = table.loc["Prithvi 2.0 300M"]["iqm"]
    assert p300["LoRA"] > p300["VPT"] > p300["Linear Prob."]
    raw = iqm_bootstrap(values, n_boot=50, normalize=False).set_index(["model", "peft_type"])
    assert raw.loc[("UNet (Rand.)", "Full FT"), "iqm"] > 1  # percent, not normalised


def spec(backbone: str, method: str, dataset: str, seed: int, lr: float = 1e-4) -> CellSpec:
    return CellSpec(
        model=ModelSpec(name=backbone),
        tuning=TuningSpec(method=method),
        decoder=DecoderSpec(name="linear"),
        dataset=dataset,
        train=TrainSpec(lr=lr),
        seed=seed,
    )


def test_tiny_models_get_their_rows_and_missing_cells_stay_empty(tmp_path: Path) -> None:
    specs = [spec("prithvi_tiny", "full", "sen1floods11", seed) for seed in (0, 1)]
    for s in specs:
        write_cell(tmp_path, s, {"test": 0.5, "bolivia": 0.4}, 60, 3)
    specs.append(spec("prithvi_tiny", "lora", "sen1floods11", 0))  # in the manifest, never run
    cells = [{"index": i, "cell_id": s.cell_id, "slug": s.slug, "spec": s.to_dict()} for i, s in enumerate(specs)]
    atomic_write_json(SweepPaths(tmp_path).manifest, {"cells": cells})
    stats = paper_stats(cell_values(collect(tmp_path)))
    table = released_layout(stats, "peft_table")
    assert list(table.index) == [("Prithvi tiny", "LoRA"), ("Prithvi tiny", "Full FT")]
    assert table.loc[("Prithvi tiny", "Full FT"), (TEST_MIOU, "mean", "sen1floods11")] == pytest.approx(50.0)
    assert math.isnan(table.loc[("Prithvi tiny", "LoRA"), (TEST_MIOU, "mean", "sen1floods11")])
    assert table[TEST_MIOU]["mean"]["burn_scars"].isna().all()  # the paper's columns stay, empty
    back = pd.read_csv(io.StringIO(table.to_csv()), header=[0, 1, 2], index_col=[0, 1])
    assert list(back.columns) == list(table.columns)
    summary = paper_summary(stats, "ood_table")
    assert summary.loc[("Prithvi tiny", "Full FT"), ("Sen1Floods11", "Bolivia", "mean")] == pytest.approx(40.0)
    assert summary.loc[("Prithvi tiny", "LoRA"), ("Sen1Floods11", "test", "n")] == 0


def test_two_cells_of_one_seed_are_refused(tmp_path: Path) -> None:
    for lr in (1e-4, 1e-3):
        write_cell(tmp_path, spec("prithvi_tiny", "full", "sen1floods11", 0, lr), {"test": 0.5}, 60, 3)
    with pytest.raises(GeopeftError, match=r"seed 0 appears more than once \(they differ in lr\)"):
        paper_stats(cell_values(collect(tmp_path)))
