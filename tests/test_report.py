"""analysis.report / ``geopeft report``: every table and figure in one PDF; without LaTeX, the .tex."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from analysis_fixtures import synthesise_paper_sweep
from test_analysis_collect import make_sweep
from typer.testing import CliRunner

import analysis.report as report_module
from analysis.latex import MISSING_CELL
from analysis.report import build_report
from hpc.cli import app

# In CI LaTeX is installed by .ci/run, so these tests must run there; elsewhere they need pdflatex.
needs_latex = pytest.mark.skipif(
    shutil.which("pdflatex") is None and not os.environ.get("CI"), reason="pdflatex is not installed"
)


def body(tex: str) -> list[list[str]]:
    lines = tex.splitlines()
    rows = lines[lines.index(r"\midrule") + 1 : lines.index(r"\bottomrule")]
    return [[c.strip() for c in line.removesuffix(r"\\").split(" & ")] for line in rows]


@pytest.fixture(scope="module")
def paper_report(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("paper_report")
    synthesise_paper_sweep(root)
    return build_report(root, compile_latex=shutil.which("pdflatex") is not None or bool(os.environ.get("CI")))


@needs_latex
def test_the_report_compiles_with_every_table_and_figure(paper_report) -> None:
    assert paper_report.pdf is not None and paper_report.pdf.read_bytes()[:5] == b"%PDF-"
    source = paper_report.tex.read_text()
    tables = sorted(p.stem for p in paper_report.tex.parent.glob("*.tex") if p.name != "report.tex")
    expected = ["peft_table", "ood_table", "epoch_and_time", "compare_peft_table", "compare_ood_table"]
    expected += ["average_rank", "delta_to_full_ft", "iqm", "decoder", "metadata", "memory", "time", "data_wait"]
    expected += ["miou"]
    assert tables == sorted(expected)
    for stem in tables:  # every generated table is in the compiled document
        assert f"\\input{{{stem}.tex}}" in source
    figures = [p for p in paper_report.files.values() if p.suffix == ".pdf"]
    bars = {f"bars_{d}" for d in ("sen1floods11", "burn_scars", "reben_7k", "m_cashew_plantation", "m_sa_crop_type")}
    assert {p.stem for p in figures} == {"radar", "memory_miou", *bars}  # the fixture writes no metrics.jsonl
    assert all(p.with_suffix(".png").exists() for p in figures)
    for fig in figures:
        assert f"figures/{fig.name}" in source
    assert any("radar UNet (Rand.)" in n for n in paper_report.notes)  # one method only: no radar


def test_marks_land_on_the_right_cells(paper_report) -> None:
    rows = body((paper_report.tex.parent / "peft_table.tex").read_text())
    labels = []
    model = ""
    for r in rows:
        model = r[0] or model
        labels.append((model, r[1]))
    cells = {label: r[2:] for label, r in zip(labels, rows, strict=True)}
    # columns in the paper's order: Sen1Floods11, Burn Scars, reBEN 7k, m-Cashew, m-SA-Crop
    assert cells[("UNet (Rand.)", "Full FT")][0] == r"\textbf{90.75 $\pm$ 0.53}"
    assert cells[("Clay v1 (6 bands)", "Full FT")][0] == r"\underline{90.42 $\pm$ 0.10}"
    assert cells[("Prithvi 2.0 300M", "LoRA")][1] == r"\textbf{93.33 $\pm$ 0.64}"
    assert cells[("Prithvi 2.0 100M", "Full FT")][1] == r"\underline{92.96 $\pm$ 0.33}"
    assert cells[("Prithvi 2.0 300M", "LoRA")][4] == r"\textbf{40.35 $\pm$ 0.44}"
    # reBEN 7k: Prithvi 2.0 300M LoRA 38.84 is best; Clay v1 LoRA and Full FT both print 38.67: tied second
    assert cells[("Prithvi 2.0 300M", "LoRA")][2] == r"\textbf{38.84 $\pm$ 0.23}"
    assert cells[("Clay v1", "LoRA")][2] == r"\underline{38.67 $\pm$ 0.48}"
    assert cells[("Clay v1", "Full FT")][2] == r"\underline{38.67 $\pm$ 0.41}"
    assert sum(c[2].startswith(r"\underline") for c in cells.values()) == 2
    ranks = body((paper_report.tex.parent / "epoch_and_time.tex").read_text())
    assert ranks[2][2] == r"\textbf{4.2 $\pm$ 0.0}"  # the least time is bold (DeCUR (6 bands) LP)


@needs_latex
def test_demo_shaped_sweep_report_with_failed_and_missing_cells(tmp_path: Path) -> None:
    make_sweep(tmp_path)  # prithvi_tiny on sen1floods11: lora, full_ft, a failed and a missing cell
    built = build_report(tmp_path)
    assert built.pdf is not None and built.pdf.exists()
    peft = body((tmp_path / "tables" / "peft_table.tex").read_text())
    # full_ft is not a registry name, so it keeps its own label, after the paper's methods
    assert [r[:2] for r in peft] == [["Prithvi tiny", "VPT"], ["", "LoRA"], ["", "full\\_ft"]]
    assert peft[0][2:] == [MISSING_CELL] * 5  # the missing vpt cell
    assert peft[1][3:] == [MISSING_CELL] * 4  # datasets the sweep has not run
    assert any("radar" in n for n in built.notes)
    assert not list((tmp_path / "tables").glob(".latex-*"))  # the build directory is cleaned up


def test_without_latex_the_tex_is_written_and_the_message_says_how(tmp_path: Path, monkeypatch) -> None:
    make_sweep(tmp_path)
    monkeypatch.setattr(report_module.shutil, "which", lambda name: None)
    built = build_report(tmp_path)
    assert built.pdf is None and built.tex.exists() and not built.tex.with_suffix(".pdf").exists()
    assert "no LaTeX found" in built.message and "latexmk -pdf report.tex" in built.message
    assert "texlive-latex-recommended" in built.message
    skipped = build_report(tmp_path, compile_latex=False)
    assert skipped.pdf is None and "--no-compile" in skipped.message


def test_cli_report_and_tables(tmp_path: Path) -> None:
    make_sweep(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["report", str(tmp_path), "--no-compile"])
    assert result.exit_code == 0, result.output
    assert "report source:" in result.output and "note: radar" in result.output
    result = runner.invoke(app, ["tables", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "peft_table.csv:" in result.output and "compare_peft_table.tex:" in result.output
    result = runner.invoke(app, ["report", str(tmp_path / "nowhere"), "--no-compile"])
    assert result.exit_code == 2 and "error:" in result.output


def test_cli_and_analysis_import_no_matplotlib() -> None:
    code = (
        "import json, sys, hpc.cli, analysis, analysis.report, analysis.plots; print(json.dumps(sorted(sys.modules)))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    modules = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not [m for m in modules if m.split(".")[0] in ("matplotlib", "torch")]
