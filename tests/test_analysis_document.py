"""The report reads like a paper: title from the grid file, every float under its section, the paper's labels only,
times in the unit they need, empty comparisons that say why, captions that say what is plotted."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from analysis_fixtures import synthesise_demo_sweep, synthesise_paper_sweep

from analysis.collect import collect
from analysis.document import SECTIONS, float_order
from analysis.labels import DATASETS, DECODERS, METHODS, MODELS
from analysis.latex import decimals_needed, drop_empty_columns
from analysis.report import Report, build_report, sweep_title
from analysis.stats import summarize


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Report:
    root = tmp_path_factory.mktemp("demo") / "sweep"
    root.mkdir()
    synthesise_demo_sweep(root)
    return build_report(root, compile_latex=False)


@pytest.fixture(scope="module")
def paper(tmp_path_factory: pytest.TempPathFactory) -> Report:
    root = tmp_path_factory.mktemp("paper")
    synthesise_paper_sweep(root)
    return build_report(root, compile_latex=False)


def section_of_floats(report: Report) -> list[tuple[str, str]]:
    """(section heading, label or figure file) of every float; raises when a float comes before any section."""
    section = ""
    out = []
    source = report.tex.read_text()
    events = float_order(source, report.tex.parent)
    labels = iter(re.findall(r"\\label\{([^}]+)\}|\\includegraphics\[[^\]]*\]\{([^}]+)\}", _expanded(report)))
    for kind, text in events:
        if kind == "section":
            section = text
        elif kind in ("table", "figure"):
            assert section, f"a {kind} comes before the first section heading"
            label, graphic = next(labels)
            out.append((section, label or graphic))
    return out


def _expanded(report: Report) -> str:
    return re.sub(
        r"\\input\{([^}]+)\}", lambda m: (report.tex.parent / m.group(1)).read_text(), report.tex.read_text()
    )


@pytest.mark.parametrize("which", ["demo", "paper"])
def test_every_float_is_placed_here_under_its_own_section(which: str, request: pytest.FixtureRequest) -> None:
    report = request.getfixturevalue(which)
    source = report.tex.read_text()
    assert r"\floatplacement{table}{H}" in source and r"\floatplacement{figure}{H}" in source
    events = float_order(source, report.tex.parent)
    floats = [(kind, where) for kind, where in events if kind in ("table", "figure")]
    assert floats and all(where in ("", "H") for _, where in floats)  # H: exactly here, in source order
    placed = dict((label, section) for section, label in section_of_floats(report))
    home = {f"tab:{stem}": s.heading for s in SECTIONS for stem in s.tables}
    for label, section in placed.items():
        if label.startswith("tab:"):
            assert home[label] == section, label
    figures = {Path(label).stem: section for label, section in placed.items() if not label.startswith("tab:")}
    assert figures.get("bars_sen1floods11") == "Main results" and figures.get("memory_miou") == "Cost"
    if which == "demo":
        assert figures["curves_sen1floods11_prithvi_tiny"] == "Training curves"


def test_the_float_check_catches_a_float_above_its_heading(tmp_path: Path) -> None:
    (tmp_path / "t.tex").write_text("\\begin{table}\n\\label{tab:t}\n\\end{table}\n")
    source = "\\begin{document}\n\\input{t.tex}\n\\section{Results}\n\\begin{figure}[t]\n\\end{figure}\n"
    assert float_order(source, tmp_path) == [("table", ""), ("section", "Results"), ("figure", "t")]


def raw_names(report: Report) -> set[str]:
    """Every spec name of the sweep and of the registries that analysis labels (escaped as LaTeX writes them)."""
    tidy = collect(report.tex.parent.parent)
    names = {str(v) for c in ("backbone", "method", "decoder", "dataset") for v in tidy[c].dropna().unique()}
    names |= {m.backbone for m in MODELS} | set(METHODS) | set(DECODERS) | set(DATASETS)
    return {n.replace("_", r"\_") for n in names}


@pytest.mark.parametrize("which", ["demo", "paper"])
def test_no_spec_name_or_option_json_in_any_generated_tex(which: str, request: pytest.FixtureRequest) -> None:
    report = request.getfixturevalue(which)
    names = raw_names(report)
    tex_files = sorted(report.tex.parent.glob("*.tex"))
    assert len(tex_files) > 10
    for path in tex_files:
        text = path.read_text()
        assert r"\{" not in text, f"{path.name}: an option dict"
        for name in (n for n in names if r"\_" in n):  # anywhere, captions included
            assert name not in text, f"{path.name}: {name}"
        lines = text.splitlines()
        if r"\toprule" not in lines:
            continue
        cells = [c for line in lines[lines.index(r"\toprule") : lines.index(r"\bottomrule")] for c in line.split("&")]
        for name in names:  # table cells: not even a plain name like lora, full or linear
            hits = [c for c in cells if re.search(rf"(?<![\w\\]){re.escape(name)}(?!\w)", c)]
            assert not hits, f"{path.name}: {name} in {hits[:3]}"


def test_the_checks_see_raw_names(demo: Report) -> None:
    assert {r"prithvi\_tiny", "lora", "fcn", r"m\_cashew\_plantation"} <= raw_names(demo)
    table = (demo.tex.parent / "miou.tex").read_text()
    assert r"LoRA (r 8, $\alpha$ 8)" in table and "FCN (ch. 16, num convs 4)" in table
    assert "Prithvi tiny TL +time +location" in table


def test_the_title_comes_from_the_grid_file(demo: Report, tmp_path: Path) -> None:
    source = demo.tex.read_text()
    assert r"\title{Tiny Prithvi, full FT vs LoRA on synthetic Sen1Floods11}" in source
    assert r"\author{sweep demo (" in source and r"\title{sweep}" not in source  # not the output folder's name
    (tmp_path / "cells").mkdir()
    assert sweep_title(tmp_path) == (tmp_path.name, f"sweep {tmp_path.name}")  # no manifest: the folder


def test_times_below_a_minute_are_seconds_with_the_decimals_they_need(demo: Report, paper: Report) -> None:
    seconds = (demo.tex.parent / "epoch_and_time.tex").read_text()
    assert r"\multicolumn{5}{c}{Time (s)}" in seconds and "3.5 $\\pm$ 0.7" in seconds
    assert r"\textbf{" not in seconds.split(r"\midrule")[1]  # equal times and epochs: nothing marked
    minutes = (paper.tex.parent / "epoch_and_time.tex").read_text()
    assert r"\multicolumn{5}{c}{Time (min)}" in minutes
    assert not re.search(r"(?<![\d.])0\.0 \$\\pm\$ 0\.0", seconds + minutes)  # a column of 0.0 +- 0.0
    assert [decimals_needed(v) for v in ([42.0, 7.3], [0.42], [0.042, 3.0], [0.0001], [0.0, float("nan")])] == [
        1,
        2,
        3,
        3,
        1,
    ]


def test_columns_without_results_are_dropped_outside_the_paper_tables(demo: Report) -> None:
    out = demo.tex.parent
    assert "Burn Scars" in (out / "peft_table.tex").read_text()  # the paper's layout keeps its columns
    for stem in ("memory", "time", "decoder", "metadata", "delta_to_full_ft", "miou"):
        text = (out / f"{stem}.tex").read_text()
        assert "Sen1Floods11" in text and "Burn Scars" not in text and "m-SA-Crop" not in text, stem
    summary = summarize(collect(out.parent), by=("model", "method", "decoder"), across=("dataset", "region"))
    for stat, value in (("mean", float("nan")), ("std", float("nan")), ("n", 0)):
        summary[("burn_scars", "test", stat)] = value
    kept = drop_empty_columns(summary)
    assert list(kept.columns) == [c for c in summary.columns if c[0] != "burn_scars"]


def test_an_empty_comparison_says_why(demo: Report) -> None:
    source = demo.tex.read_text()
    assert r"\input{compare_peft_table.tex}" not in source and r"\input{compare_ood_table.tex}" not in source
    assert source.count("released no number for Prithvi tiny (backbones beyond the paper)") == 1
    table = (demo.tex.parent / "compare_peft_table.tex").read_text()  # what `geopeft tables` writes
    assert "textemdash" not in table.split(r"\toprule")[1] and "released no number for Prithvi tiny" in table


def test_captions_say_what_is_plotted(demo: Report) -> None:
    source = demo.tex.read_text()
    assert (
        r"\caption{Test mIoU (\%) by backbone and method, Sen1Floods11; bars: mean over 2 seeds, whiskers: std.}"
        in source
    )
    assert r"Training curves of Prithvi tiny on Sen1Floods11: validation loss (left) and validation mIoU" in source
    assert "one panel per dataset (Sen1Floods11)" in source
    assert r"\section{Training curves}" in source and r"\subsection{Sen1Floods11}" in source
