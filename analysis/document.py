r"""The LaTeX source of the report: title, summary, then one section per topic with its tables and figures.

Tables are set in footnote size, and one wider than the text is scaled to its width. Every table and figure sits
under its own section heading: the preamble loads ``float`` and makes ``H`` (here,
exactly) the placement of every ``table`` and ``figure``, so floats appear in the order of the source, after the
heading they are written under, never above it. :func:`float_order` reads that order back from a source (the
``\input`` tables expanded) so that tests can check it. The packages are all in the Debian packages
``texlive-latex-base``, ``texlive-latex-recommended`` and ``texlive-fonts-recommended``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from analysis.latex import escape_latex
from analysis.plots import FigureFile


@dataclass(frozen=True)
class Section:
    """One section of the report.

    Args:
        heading: the section title.
        intro: a paragraph before its floats (LaTeX).
        tables: the table files (stems) in order; missing ones are skipped.
        figures: the :attr:`~analysis.plots.FigureFile.section` of the figures that follow the tables ("": none).
    """

    heading: str
    intro: str
    tables: tuple[str, ...] = ()
    figures: str = ""


SECTIONS: tuple[Section, ...] = (
    Section(
        "Main results",
        r"Test mIoU of every backbone and PEFT method with the main decoder and no metadata, in the layout of the "
        r"paper's Tables 4 and 5, then as radar charts and bars.",
        ("peft_table", "ood_table"),
        "results",
    ),
    Section(
        "Comparison with the released numbers",
        r"Our means against the numbers the authors released (IBM/peft-geofm, \texttt{data/}).",
        ("compare_peft_table", "compare_ood_table"),
    ),
    Section(
        "Statistics across datasets",
        r"Rank, distance to full fine-tuning and interquartile mean summarise each method over the datasets.",
        ("average_rank", "delta_to_full_ft", "iqm"),
    ),
    Section(
        "Ablations",
        r"Full fine-tuning with other decoders, and with metadata fed to the backbone.",
        ("decoder", "metadata"),
    ),
    Section(
        "Cost",
        r"Wall time, epochs, memory, time per epoch and the share of it spent waiting for data, of the main runs.",
        ("epoch_and_time", "memory", "time", "data_wait"),
        "cost",
    ),
    Section(
        "Training curves",
        r"Validation loss and mIoU per epoch, from each cell's \texttt{metrics.jsonl}.",
        (),
        "curves",
    ),
    Section(
        "Every region",
        r"mIoU of every run on every region of its dataset, by setting.",
        ("miou",),
    ),
)

PREAMBLE = r"""\documentclass[10pt]{article}
\usepackage[landscape,margin=1.5cm]{geometry}
\usepackage{booktabs}
\usepackage{graphicx}
\usepackage{amsmath}
\usepackage{float}
\usepackage[font=small,skip=6pt]{caption}
\captionsetup[table]{position=top}
\usepackage[hidelinks]{hyperref}
\floatplacement{table}{H}
\floatplacement{figure}{H}
% Tables in footnote size, and a table wider than the text is scaled down to the text's width.
\newsavebox{\tablebox}
\let\plaintabular\tabular
\let\endplaintabular\endtabular
\renewenvironment{tabular}{\begin{lrbox}{\tablebox}\footnotesize\plaintabular}{\endplaintabular\end{lrbox}%
  \ifdim\wd\tablebox>\linewidth\resizebox{\linewidth}{!}{\usebox{\tablebox}}\else\usebox{\tablebox}\fi}
"""


def figure_source(fig: FigureFile, relative_to: Path) -> str:
    """One figure environment, placed here (``H``), the image fitted to the page."""
    path = fig.path.relative_to(relative_to).as_posix()
    return (
        "\\begin{figure}[H]\n\\centering\n"
        f"\\includegraphics[width=\\linewidth,height={fig.height:g}\\textheight,keepaspectratio]{{{path}}}\n"
        f"\\caption{{{fig.caption}}}\n\\end{{figure}}\n"
    )


def report_source(
    title: str,
    subtitle: str,
    summary: str,
    blocks: dict[str, str],
    figures: list[FigureFile],
    notes: list[str],
    figure_root: Path,
) -> str:
    r"""The LaTeX document.

    Args:
        title: the sweep's title (plain text).
        subtitle: what the sweep is (plain text), under the title.
        summary: the opening paragraph (LaTeX).
        blocks: table stem -> its LaTeX in the report (``\input{<stem>.tex}``, or a paragraph that replaces it).
        figures: every figure, placed in the section named by its ``section``, in the given order.
        notes: tables and figures left out, and why (plain text).
        figure_root: the directory the figure paths are written relative to (the .tex file's).
    """
    parts = [PREAMBLE, f"\\title{{{escape_latex(title)}}}\n\\author{{{escape_latex(subtitle)}}}\n\\date{{\\today}}\n"]
    parts.append("\\begin{document}\n\\maketitle\n\n" + summary + "\n")
    if notes:
        items = "\n".join(f"  \\item {escape_latex(n)}" for n in notes)
        parts.append(f"\\paragraph{{Left out.}}\n\\begin{{itemize}}\n{items}\n\\end{{itemize}}\n")
    for section in SECTIONS:
        body = [blocks[s] for s in section.tables if blocks.get(s)]
        own = [f for f in figures if section.figures and f.section == section.figures]
        if not body and not own:
            continue
        parts.append(f"\\clearpage\n\\section{{{section.heading}}}\n{section.intro}\n\n" + "".join(body))
        group = ""
        for fig in own:
            if fig.group and fig.group != group:
                group = fig.group
                parts.append(f"\\subsection{{{escape_latex(group)}}}\n")
            parts.append(figure_source(fig, figure_root))
    parts.append("\\end{document}\n")
    return "\n".join(parts)


_INPUT = re.compile(r"\\input\{([^}]+)\}")
_EVENT = re.compile(r"\\(section|subsection)\{|\\begin\{(table|figure)\}(\[[^\]]*\])?")


def float_order(source: str, directory: Path) -> list[tuple[str, str]]:
    r"""The sections and floats of a report in source order, ``\input`` files expanded (from ``directory``).

    Returns:
        ``("section", heading)``, ``("subsection", heading)``, and ``("table" | "figure", placement)`` per float,
        where placement is its ``[...]`` option ("" when it has none: the document's ``\floatplacement``).
    """
    expanded = _INPUT.sub(lambda m: (directory / m.group(1)).read_text(), source)
    events = []
    for match in _EVENT.finditer(expanded):
        if match.group(1):
            end = expanded.index("}", match.end())
            events.append((match.group(1), expanded[match.end() : end]))
        else:
            events.append((str(match.group(2)), (match.group(3) or "").strip("[]")))
    return events
