r"""``geopeft report``: one PDF with every table and figure of a sweep.

:func:`build_report` writes every table (:func:`analysis.tables.write_all`) and figure
(:func:`analysis.plots.write_figures`) into ``<sweep>/tables/``, then ``report.tex`` there, which
``\input``\ s the tables and includes the figures. With LaTeX on the machine (``latexmk``, else
``pdflatex`` run twice) it compiles ``report.pdf`` in a temporary directory and moves it into place; without
it, the ``.tex`` is written and the message says how to compile it. The document needs only the Debian
packages ``texlive-latex-base texlive-latex-recommended texlive-fonts-recommended`` (booktabs, geometry,
graphicx, etoolbox, hyperref).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from analysis.latex import escape_latex
from analysis.plots import write_figures
from analysis.tables import write_all
from geopeft.errors import GeopeftError
from geopeft.io import atomic_write_text

#: How to get LaTeX where it is missing.
INSTALL_HINT = (
    "apt-get install -y --no-install-recommends texlive-latex-base texlive-latex-recommended "
    "texlive-fonts-recommended latexmk"
)
#: Seconds one LaTeX run may take.
LATEX_TIMEOUT_S = 300

#: Sections of the report: title and the table files (stems) in order; missing ones are skipped.
SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("The paper's tables", ("peft_table", "ood_table", "epoch_and_time")),
    ("Comparison with the released numbers", ("compare_peft_table", "compare_ood_table")),
    ("Statistics across datasets", ("average_rank", "delta_to_full_ft", "iqm")),
    ("Ablations and cost", ("decoder", "metadata", "memory", "time")),
    ("Every region", ("miou",)),
)

PREAMBLE = r"""\documentclass[10pt]{article}
\usepackage[landscape,margin=1.5cm]{geometry}
\usepackage{booktabs}
\usepackage{graphicx}
\usepackage{amsmath}
\usepackage{etoolbox}
\usepackage[hidelinks]{hyperref}
\AtBeginEnvironment{tabular}{\footnotesize}
\setcounter{totalnumber}{4}
\setcounter{topnumber}{3}
"""


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


def report_source(title: str, summary: str, tables: list[str], figures: list[str], notes: list[str]) -> str:
    """The LaTeX document: sections of the given table stems, then the figures (paths relative to the .tex)."""
    parts = [PREAMBLE, f"\\title{{geopeft report: {escape_latex(title)}}}\n\\date{{\\today}}\n"]
    parts.append("\\begin{document}\n\\maketitle\n\n" + summary + "\n")
    if notes:
        items = "\n".join(f"  \\item {escape_latex(n)}" for n in notes)
        parts.append(f"\\paragraph{{Left out.}}\n\\begin{{itemize}}\n{items}\n\\end{{itemize}}\n")
    for heading, stems in SECTIONS:
        present = [s for s in stems if s in tables]
        if present:
            parts.append(f"\\clearpage\n\\section{{{heading}}}\n" + "".join(f"\\input{{{s}.tex}}\n" for s in present))
    if figures:
        parts.append("\\clearpage\n\\section{Figures}\n")
        for i, fig in enumerate(figures):
            caption = escape_latex(Path(fig).stem.replace("_", " "))
            parts.append(
                "\\begin{figure}[p]\n\\centering\n"
                f"\\includegraphics[width=\\linewidth,height=0.8\\textheight,keepaspectratio]{{{fig}}}\n"
                f"\\caption{{{caption}}}\n\\end{{figure}}\n" + ("\\clearpage\n" if i % 2 == 1 else "")
            )
    parts.append("\\end{document}\n")
    return "\n".join(parts)


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


def _summary(tables_status: dict[str, int], n_tables: int, n_figures: int) -> str:
    cells = ", ".join(f"{n} {escape_latex(s)}" for s, n in sorted(tables_status.items()))
    return (
        f"Cells: {cells}. {n_tables} tables and {n_figures} figures. Values are means over seeds "
        r"(sample std, $n$ seeds); mIoU in percent; \textemdash{} marks a cell without a result. "
        r"The paper's numbers are the authors' released CSVs (IBM/peft-geofm, \texttt{data/})."
    )


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
    tables = write_all(root)
    out = next(iter(tables.files.values())).parent
    figures, fig_notes = write_figures(tables.stats, tables.values, out / "figures")
    files = {**tables.files, **{f"figures/{p.name}": p for p in figures}}
    stems = [p.stem for p in tables.files.values() if p.suffix == ".tex"]
    notes = [*tables.notes, *fig_notes]
    status = tables.tidy.drop_duplicates("cell_id")["status"].value_counts().to_dict()
    source = report_source(
        Path(root).resolve().name,
        _summary({str(k): int(v) for k, v in status.items()}, len(stems), len(figures)),
        stems,
        [f"figures/{p.name}" for p in figures],
        notes,
    )
    tex = out / "report.tex"
    atomic_write_text(tex, source)
    command = latex_command() if compile_latex else None
    if command is None:
        why = "not compiled (--no-compile)" if not compile_latex else "no LaTeX found (pdflatex)"
        message = f"{why}; install it ({INSTALL_HINT}) and run: cd {out} && latexmk -pdf report.tex"
        return Report(tex, None, message, tuple(notes), files)
    pdf = compile_pdf(tex, command)
    return Report(tex, pdf, f"compiled with {command[0]}: {pdf}", tuple(notes), files)
