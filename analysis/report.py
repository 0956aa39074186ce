r"""``geopeft report``: one PDF with every table and figure of a sweep.

:func:`build_report` writes every table (:func:`analysis.tables.write_all`) and figure
(:func:`analysis.plots.write_figures`, :func:`analysis.curves.write_curves`) into ``<sweep>/tables/``, then
``report.tex`` there (:mod:`analysis.document`), titled by the grid file's ``description`` and ``name``
(:func:`sweep_title`), which ``\input``\ s the tables and includes the figures, each under its section; a
comparison without any released number is a sentence that says so. With LaTeX on the machine (``latexmk``, else
``pdflatex`` run twice) it compiles ``report.pdf`` in a temporary directory and moves it into place; without
it, the ``.tex`` is written and the message says how to compile it. The document needs only the Debian
packages ``texlive-latex-base texlive-latex-recommended texlive-fonts-recommended`` (booktabs, geometry,
graphicx, float, caption, hyperref).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from analysis.compare import no_released_numbers, unreleased_models
from analysis.curves import write_curves
from analysis.document import report_source
from analysis.latex import escape_latex
from analysis.plots import write_figures
from analysis.tables import write_all
from geopeft.errors import GeopeftError
from geopeft.io import atomic_write_text, read_json
from geopeft.paths import SweepPaths

#: How to get LaTeX where it is missing.
INSTALL_HINT = (
    "apt-get install -y --no-install-recommends texlive-latex-base texlive-latex-recommended "
    "texlive-fonts-recommended latexmk"
)
#: Seconds one LaTeX run may take.
LATEX_TIMEOUT_S = 300


@dataclass(frozen=True)
class Report:
    """What :func:`build_report` produced.

    Args:
        tex: the report source.
        pdf: the compiled report, None when it was not compiled.
        message: how it was compiled, or how to compile it.
        notes: tables and figures left out, and why.
        files: every table and figure file written (name -> path).
    """

    tex: Path
    pdf: Path | None
    message: str
    notes: tuple[str, ...]
    files: dict[str, Path]


def latex_command() -> list[str] | None:
    """The command that compiles a document here (latexmk, else pdflatex), or None without LaTeX."""
    if shutil.which("latexmk") and shutil.which("pdflatex"):
        return ["latexmk", "-pdf", "-interaction=nonstopmode", "-halt-on-error"]
    if shutil.which("pdflatex"):
        return ["pdflatex", "-interaction=nonstopmode", "-halt-on-error"]
    return None


def compile_pdf(tex: Path, command: list[str]) -> Path:
    """Compile ``tex`` in a temporary directory beside it and move the PDF next to it.

    Raises:
        GeopeftError: LaTeX failed; the message names the log file kept beside the .tex.
    """
    build = Path(tempfile.mkdtemp(prefix=".latex-", dir=tex.parent))
    try:
        runs = 1 if command[0] == "latexmk" else 2  # pdflatex: a second run resolves references
        for _ in range(runs):
            out_flag = f"-outdir={build}" if command[0] == "latexmk" else f"-output-directory={build}"
            proc = subprocess.run(
                [*command, out_flag, tex.name],
                cwd=tex.parent,
                capture_output=True,
                text=True,
                timeout=LATEX_TIMEOUT_S,
                check=False,
                stdin=subprocess.DEVNULL,
            )
            if proc.returncode != 0:
                log = tex.with_suffix(".log")
                built_log = build / log.name
                atomic_write_text(log, built_log.read_text(errors="replace") if built_log.exists() else proc.stdout)
                raise GeopeftError(
                    f"{tex}: {command[0]} failed (exit {proc.returncode}); see {log} for the first LaTeX error"
                )
        pdf = tex.with_suffix(".pdf")
        os.replace(build / pdf.name, pdf)
        return pdf
    finally:
        shutil.rmtree(build, ignore_errors=True)


def sweep_title(root: Path) -> tuple[str, str]:
    """Title and subtitle of a sweep's report: from its grid file's ``description`` and ``name``.

    The manifest names the sweep and its grid file; the grid file is looked for as written (an absolute path, or
    relative to the working directory or to a folder above the sweep). Without a description the name is the
    title; without a manifest, the folder's name.
    """
    manifest = SweepPaths(root).manifest
    doc = read_json(manifest) if manifest.is_file() else {}
    name = str(doc.get("name") or root.name) if isinstance(doc, dict) else root.name
    grid = str(doc.get("grid_file") or "") if isinstance(doc, dict) else ""
    description = ""
    candidates = [Path(grid)] if Path(grid).is_absolute() else [Path.cwd() / grid, *(p / grid for p in root.parents)]
    for path in candidates if grid else []:
        if path.is_file():
            try:
                fields = yaml.safe_load(path.read_text())
            except yaml.YAMLError:
                break  # the grid changed into something unreadable: the manifest's name still titles it
            description = str(fields.get("description") or "").strip() if isinstance(fields, dict) else ""
            break
    if not description:
        return name, f"sweep {name}"
    return description[:1].upper() + description[1:], f"sweep {name} ({grid})"


def _summary(values: pd.DataFrame, status: dict[str, int], n_tables: int, n_figures: int) -> str:
    cells = sum(status.values())
    words = {"success": "successful"}
    states = ", ".join(f"{n} {escape_latex(words.get(s, s))}" for s, n in sorted(status.items()))
    own = values[~values["reused"]] if not values.empty else values
    counts = [
        (own[c].nunique(), w) for c, w in (("model", "backbone"), ("peft_type", "method"), ("dataset", "dataset"))
    ]
    counts.append((own["seed"].nunique(), "seed"))
    grid = ", ".join(f"{n} {w}{'s' if n != 1 else ''}" for n, w in counts)
    return (
        f"The sweep has {cells} cells ({states}): {grid}. This report has {n_tables} tables and {n_figures} "
        r"figures. Values are means over seeds $\pm$ their sample std; mIoU in percent; \textemdash{} marks a "
        r"cell without a result; bold is the best and underlined the second best of a column. The paper's numbers "
        r"are the authors' released CSVs (IBM/peft-geofm, \texttt{data/})."
    )


def _blocks(out: Path, stems: list[str]) -> dict[str, str]:
    r"""Each table's LaTeX in the report: its ``\input``, or a sentence for comparisons without a released number.

    The sentence names every backbone the authors have no number for; the first such comparison holds it.
    """
    blocks = {stem: f"\\input{{{stem}.tex}}\n" for stem in stems}
    empty: dict[str, list[str]] = {}
    for stem in stems:
        if stem.startswith("compare_") and (out / f"{stem}.csv").is_file():
            comparison = pd.read_csv(out / f"{stem}.csv")
            unreleased = unreleased_models(comparison)
            if unreleased and len(unreleased) == comparison["model"].nunique():
                empty[stem] = unreleased
    for i, stem in enumerate(empty):
        models = list(dict.fromkeys(m for names in empty.values() for m in names))
        blocks[stem] = no_released_numbers(models) + "\n\n" if i == 0 else ""
    return blocks


def build_report(root: str | Path, *, compile_latex: bool = True) -> Report:
    """Write every table and figure of a sweep and the report around them; compile it where LaTeX is.

    Args:
        root: the sweep directory.
        compile_latex: compile the PDF when LaTeX is installed (False: write the .tex only).

    Returns:
        The report's paths, the message to print and the notes.

    Raises:
        GeopeftError: the sweep has no cells, a result file is malformed, or LaTeX failed.
    """
    root = Path(root).resolve()  # LaTeX runs in the tables directory: every path absolute
    tables = write_all(root)
    out = next(iter(tables.files.values())).parent
    figures, fig_notes = write_figures(tables.stats, tables.values, out / "figures")
    cells = tables.tidy.drop_duplicates("cell_id")
    recorded = dict(zip(cells["cell_id"], [None if pd.isna(b) else int(b) for b in cells["best_epoch"]], strict=True))
    curves, curve_notes = write_curves(root, tables.values, recorded, out / "figures")
    figures += curves
    files = {**tables.files, **{f"figures/{f.path.name}": f.path for f in figures}}
    stems = [p.stem for p in tables.files.values() if p.suffix == ".tex"]
    notes = [*tables.notes, *fig_notes, *curve_notes]
    status = {str(k): int(v) for k, v in cells["status"].value_counts().items()}
    title, subtitle = sweep_title(root)
    blocks = _blocks(out, stems)
    n_tables = sum(b.startswith("\\input") for b in blocks.values())
    summary = _summary(tables.values, status, n_tables, len(figures))
    source = report_source(title, subtitle, summary, blocks, figures, notes, out)
    tex = out / "report.tex"
    atomic_write_text(tex, source)
    command = latex_command() if compile_latex else None
    if command is None:
        why = "not compiled (--no-compile)" if not compile_latex else "no LaTeX found (pdflatex)"
        message = f"{why}; install it ({INSTALL_HINT}) and run: cd {out} && latexmk -pdf report.tex"
        return Report(tex, None, message, tuple(notes), files)
    pdf = compile_pdf(tex, command)
    return Report(tex, pdf, f"compiled with {command[0]}: {pdf}", tuple(notes), files)
