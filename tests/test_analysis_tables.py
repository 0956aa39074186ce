"""analysis.tables: LaTeX rendering (marks, ties, n, missing cells), write_tables, and a pdflatex build."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from test_analysis_collect import MIOU, make_sweep

from analysis.collect import collect
from analysis.stats import STATS, summarize
from analysis.tables import MISSING_CELL, column_marks, escape_latex, format_cell, latex_table, write_tables
from geopeft.errors import GeopeftError
from geopeft.paths import SweepPaths

PM = r" $\pm$ "


def body_rows(tex: str) -> dict[str, list[str]]:
    """Method -> cells of each data row (between \\midrule and \\bottomrule)."""
    lines = tex.splitlines()
    rows = lines[lines.index(r"\midrule") + 1 : lines.index(r"\bottomrule")]
    out = {}
    for line in rows:
        cells = [c.strip() for c in line.removesuffix(r"\\").split(" & ")]
        out[cells[1]] = cells[3:]
    return out


def hand_summary(means: dict[str, list[float]], n: dict[str, list[int]] | None = None) -> pd.DataFrame:
    """A summary with one column per listed region of dataset ``ds``; std 1.0 wherever a mean exists."""
    regions = [f"r{j}" for j in range(len(next(iter(means.values()))))]
    data: dict[tuple[str, str, str], list[float | int]] = {}
    for j, region in enumerate(regions):
        col = [means[m][j] for m in means]
        counts = [n[m][j] for m in means] if n else [0 if math.isnan(v) else 3 for v in col]
        data[("ds", region, "mean")] = col
        data[("ds", region, "std")] = [math.nan if math.isnan(v) else 1.0 for v in col]
        data[("ds", region, "n")] = counts
    index = pd.MultiIndex.from_tuples([("m", k, "linear") for k in means], names=["model", "method", "decoder"])
    frame = pd.DataFrame(data, index=index)
    frame.columns = pd.MultiIndex.from_tuples(list(data), names=["dataset", "region", "stat"])
    return frame


@pytest.fixture
def tex(tmp_path: Path) -> str:
    make_sweep(tmp_path)
    return latex_table(summarize(collect(tmp_path)), caption="mIoU", label="tab:miou")


def test_booktabs_structure(tex: str) -> None:
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\cmidrule(lr){4-5}"):
        assert rule in tex
    assert r"\begin{table}" in tex and r"\caption{mIoU}" in tex and r"\label{tab:miou}" in tex
    assert r"\multicolumn{2}{c}{sen1floods11}" in tex
    assert r"prithvi\_tiny" in tex and r"full\_ft" in tex
    assert "prithvi_tiny" not in tex


def test_marks_land_on_the_right_cells(tex: str) -> None:
    rows = body_rows(tex)
    # test: full_ft 78.0 > lora 72.0; bolivia: lora 62.0 > full_ft 54.0
    assert rows[r"full\_ft"] == [rf"\textbf{{78.0{PM}2.8}}", rf"\underline{{54.0{PM}5.7}}"]
    assert rows["lora"] == [rf"\underline{{72.0{PM}2.8}}", rf"\textbf{{62.0{PM}2.8}}"]
    assert rows["vpt"] == [MISSING_CELL, MISSING_CELL]
    assert "(n=" not in tex  # every cell with a value has the full 2 seeds


def test_fewer_seeds_show_n(tmp_path: Path) -> None:
    miou = {k: v for k, v in MIOU.items() if k != ("lora", 1)}
    make_sweep(tmp_path, miou)
    rows = body_rows(latex_table(summarize(collect(tmp_path)), caption="c", label="l"))
    assert rows["lora"] == [r"\underline{70.0} (n=1)", r"\textbf{60.0} (n=1)"]
    assert rows[r"full\_ft"][0] == rf"\textbf{{78.0{PM}2.8}}"


def test_ties_share_the_mark() -> None:
    summary = hand_summary(
        {"a": [80.0, 90.0, 5.0], "b": [80.0, 85.0, 5.0], "c": [75.0, 85.0, 5.0], "d": [70.0, 1.0, 5.0]}
    )
    rows = body_rows(latex_table(summary, caption="c", label="l"))
    col0 = [rows[m][0] for m in "abcd"]
    assert col0 == [rf"\textbf{{80.0{PM}1.0}}"] * 2 + [rf"\underline{{75.0{PM}1.0}}", f"70.0{PM}1.0"]
    col1 = [rows[m][1] for m in "abcd"]
    assert col1 == [rf"\textbf{{90.0{PM}1.0}}"] + [rf"\underline{{85.0{PM}1.0}}"] * 2 + [f"1.0{PM}1.0"]
    assert [rows[m][2] for m in "abcd"] == [f"5.0{PM}1.0"] * 4  # all tied: nothing to choose, no mark


def test_ties_are_decided_at_the_printed_precision() -> None:
    assert column_marks([80.04, 79.96, 79.0], decimals=1) == ["best", "best", "second"]
    assert column_marks([80.04, 79.96, 79.0], decimals=2) == ["best", "second", ""]
    assert column_marks([math.nan, 50.0, math.nan], decimals=1) == ["", "", ""]  # one value: no choice
    assert column_marks([8.0, 8.04, math.nan], decimals=1) == ["", "", ""]  # tied at the printed precision
    assert column_marks([8.0, 8.04, 7.0], decimals=2, higher_is_better=False) == ["second", "", "best"]
    assert column_marks([math.nan, math.nan], decimals=1) == ["", ""]


def test_lower_is_better() -> None:
    summary = hand_summary({"a": [0.3], "b": [0.1], "c": [0.2], "d": [math.nan]})
    rows = body_rows(latex_table(summary, caption="c", label="l", higher_is_better=False, decimals=2))
    assert rows["b"] == [rf"\textbf{{0.10{PM}1.00}}"]
    assert rows["c"] == [rf"\underline{{0.20{PM}1.00}}"]
    assert rows["a"] == [f"0.30{PM}1.00"]
    assert rows["d"] == [MISSING_CELL]


def test_unknown_region_header_is_a_dash() -> None:
    summary = hand_summary({"a": [math.nan]})
    summary.columns = pd.MultiIndex.from_tuples([("burn_scars", None, s) for s in STATS], names=summary.columns.names)
    tex = latex_table(summary, caption="c", label="l")
    header = tex.splitlines()[tex.splitlines().index(r"\toprule") + 3]
    assert header.strip().endswith(rf"{MISSING_CELL} \\")
    assert r"burn\_scars" in tex


def test_helpers() -> None:
    assert escape_latex("a_b&c%d$e#f{g}~h^i\\") == (
        r"a\_b\&c\%d\$e\#f\{g\}\textasciitilde{}h\textasciicircum{}i\textbackslash{}"
    )
    assert escape_latex(None) == MISSING_CELL and escape_latex(math.nan) == MISSING_CELL
    assert format_cell(71.23, 1.27, 2, 3, "best", 1) == rf"\textbf{{71.2{PM}1.3}} (n=2)"
    assert format_cell(math.nan, math.nan, 0, 3, "", 1) == MISSING_CELL


def test_rejects_a_frame_that_is_not_a_summary() -> None:
    with pytest.raises(GeopeftError, match=r"analysis\.stats\.summarize"):
        latex_table(pd.DataFrame({"a": [1.0]}), caption="c", label="l")


def test_write_tables(tmp_path: Path) -> None:
    make_sweep(tmp_path)
    written = write_tables(tmp_path)
    tables = SweepPaths(tmp_path).tables_dir
    assert {"tidy.csv", "miou_summary.csv", "miou.tex"} <= set(written)
    assert all(p.parent == tables and p.exists() for p in written.values())
    assert not list(tables.glob(".*"))  # no temporary files left behind
    back = pd.read_csv(written["miou_summary.csv"], header=[0, 1, 2], index_col=[0, 1, 2])
    assert back.loc[("prithvi_tiny", "full_ft", "linear"), ("sen1floods11", "bolivia", "mean")] == pytest.approx(54.0)
    assert r"\toprule" in written["miou.tex"].read_text()
    assert len(pd.read_csv(written["tidy.csv"])) == 60


def test_write_tables_on_an_empty_sweep(tmp_path: Path) -> None:
    SweepPaths(tmp_path).cells_dir.mkdir(parents=True)
    with pytest.raises(GeopeftError, match="no cells yet"):
        write_tables(tmp_path)


@pytest.mark.skipif(
    shutil.which("pdflatex") is None and not os.environ.get("CI"),
    reason="pdflatex is not installed (CI installs it in .ci/run, so there this test always runs)",
)
def test_pdflatex_compiles_the_table(tmp_path: Path) -> None:
    make_sweep(tmp_path)
    tex = write_tables(tmp_path)["miou.tex"].read_text()
    doc = tmp_path / "doc.tex"
    doc.write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n" + tex + "\\end{document}\n")
    proc = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert (tmp_path / "doc.pdf").exists()


def test_one_level_header_and_cmidrule_per_dataset(tmp_path: Path) -> None:
    make_sweep(tmp_path)
    df = collect(tmp_path)
    flat = latex_table(summarize(df, by=("method",), across=("region",)), caption="c", label="l")
    assert r"\begin{tabular}{lcc}" in flat and r"\cmidrule" not in flat
    assert body_rows_flat(flat)[r"full\_ft"] == [rf"\textbf{{78.0{PM}2.8}}", rf"\underline{{54.0{PM}5.7}}"]
    summary = hand_summary({"a": [1.0, 2.0, 3.0]})
    summary.columns = pd.MultiIndex.from_tuples(
        [(ds, r, s) for ds, r in [("d1", "test"), ("d1", "ood"), ("d2", "test")] for s in STATS],
        names=summary.columns.names,
    )
    tex = latex_table(summary, caption="c", label="l")
    assert r"\cmidrule(lr){4-5} \cmidrule(lr){6-6}" in tex
    assert r"\multicolumn{2}{c}{d1}" in tex


def body_rows_flat(tex: str) -> dict[str, list[str]]:
    """Like body_rows for a table with a single label column."""
    lines = tex.splitlines()
    rows = lines[lines.index(r"\midrule") + 1 : lines.index(r"\bottomrule")]
    cells = [[c.strip() for c in line.removesuffix(r"\\").split(" & ")] for line in rows]
    return {c[0]: c[1:] for c in cells}


def test_cells_of_an_earlier_grid_are_left_out_and_named(tmp_path: Path) -> None:
    import json
    from dataclasses import replace

    from analysis_fixtures import synthesise_paper_sweep, write_cell

    from analysis.tables import write_all

    specs = synthesise_paper_sweep(tmp_path)
    old = replace(specs[0], train=replace(specs[0].train, lr=1e-3))  # the grid's learning rate before an edit
    write_cell(tmp_path, old, {"test": 0.99}, 60.0, 3)
    cells = [{"cell_id": s.cell_id, "slug": s.slug, "spec": s.to_dict(), "in_grid": True} for s in specs]
    cells.append({"cell_id": old.cell_id, "slug": old.slug, "spec": old.to_dict(), "in_grid": False})
    SweepPaths(tmp_path).manifest.write_text(json.dumps({"cells": cells}))
    tables = write_all(tmp_path)
    assert old.cell_id not in set(tables.tidy["cell_id"]) and specs[0].cell_id in set(tables.tidy["cell_id"])
    assert "peft_table.tex" in tables.files, tables.notes  # the old cell does not knock out the paper tables
    [note] = [n for n in tables.notes if n.startswith("left out 1 finished cell")]
    assert old.slug in note and "no longer holds" in note
