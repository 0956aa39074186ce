"""analysis.compare: per-cell deltas against the released tables, in paper stds, flagged above 2 std."""

from __future__ import annotations

from pathlib import Path

import pytest
from analysis_fixtures import synthesise_paper_sweep

from analysis.collect import collect
from analysis.compare import COLUMNS, compare, comparison_latex, format_delta, unreleased_models
from analysis.labels import OOD_MIOU, TEST_MIOU
from analysis.latex import MISSING_CELL
from analysis.paper import cell_values, paper_stats, read_released


@pytest.fixture(scope="module")
def stats(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("cmp")
    synthesise_paper_sweep(root)
    return paper_stats(cell_values(collect(root)))


def test_the_round_trip_has_no_delta(stats) -> None:
    comp = compare(stats, "peft_table")
    assert tuple(comp.columns) == COLUMNS and len(comp) == 29 * 5
    assert comp["delta"].abs().max() < 1e-9 and not comp["flagged"].any()
    ood = compare(stats, "ood_table")
    assert set(ood["metric"]) == {TEST_MIOU, OOD_MIOU} and len(ood) == 23 * 4


def test_a_shifted_cell_is_flagged_in_paper_stds(stats) -> None:
    released = read_released("peft_table").copy()
    key, col = ("Prithvi 2.0 300M", "LoRA"), (TEST_MIOU, "mean", "burn_scars")
    std = released.loc[key, (TEST_MIOU, "std", "burn_scars")]
    released.loc[key, col] -= 3 * std  # the paper now reads 3 std below ours
    comp = compare(stats, "peft_table", released).set_index(["model", "peft_type", "metric", "dataset"])
    row = comp.loc[(*key, TEST_MIOU, "burn_scars")]
    assert row["delta"] == pytest.approx(3 * std) and row["delta_std"] == pytest.approx(3.0) and row["flagged"]
    assert comp["flagged"].sum() == 1
    tex = comparison_latex(comp.reset_index(), caption="c", label="tab:c")
    assert tex.count(r"$^\dagger$") == 1 and r"\textbf{$+" + f"{3 * std:.2f}" + r"$ ($+3.0\sigma$)}$^\dagger$" in tex


def test_rows_the_paper_lacks_are_named_not_dashed(stats) -> None:
    renamed = stats.assign(model=stats["model"].replace({"Prithvi 2.0 300M": "Prithvi tiny"}))
    comp = compare(renamed, "peft_table")
    tiny = comp[comp["model"] == "Prithvi tiny"]
    assert len(tiny) == 25 and tiny["paper_mean"].isna().all() and tiny["ours_mean"].notna().all()
    assert unreleased_models(comp) == ["Prithvi tiny"]
    tex = comparison_latex(comp, caption="c", label="tab:c")
    assert not any(line.startswith("Prithvi tiny") for line in tex.splitlines())  # no row of dashes
    assert "Not in the paper, so left out: Prithvi tiny." in tex
    assert any(line.startswith("Prithvi 1.0 100M") for line in tex.splitlines())
    assert format_delta(float("nan"), float("nan"), False) == MISSING_CELL
    assert format_delta(-0.5, -0.25, False) == r"$-0.50$ ($-0.2\sigma$)"


def test_a_comparison_without_released_numbers_says_why(stats) -> None:
    tiny = stats[stats["model"].isin(["Prithvi 2.0 300M", "Clay v1"])]
    tiny = tiny.assign(model=tiny["model"].replace({"Prithvi 2.0 300M": "Prithvi tiny", "Clay v1": "Clay tiny"}))
    comp = compare(tiny, "peft_table")
    assert unreleased_models(comp) == ["Prithvi tiny", "Clay tiny"]  # in table order
    tex = comparison_latex(comp, caption="c", label="tab:c")
    assert MISSING_CELL not in tex and r"\toprule" in tex and r"\label{tab:c}" in tex
    assert "released no number for Prithvi tiny, Clay tiny (backbones beyond the paper)" in tex


def test_csv_twin_reads_back(stats, tmp_path: Path) -> None:
    import pandas as pd

    comp = compare(stats, "ood_table")
    path = tmp_path / "c.csv"
    path.write_text(comp.to_csv(index=False))
    back = pd.read_csv(path)
    assert list(back.columns) == list(COLUMNS) and back["delta"].abs().max() < 1e-9
