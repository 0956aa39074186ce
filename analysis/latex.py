r"""LaTeX tables (booktabs, via pandas ``Styler.to_latex``) from a mean/std/n summary.

A cell reads ``mean $\pm$ std`` of the seeds, pre-formatted as a string, with ``(n=k)`` appended when it
has fewer seeds than the most complete cell of the table, and ``\textemdash{}`` (an em-dash) when it
has none. Marks are computed on the numeric means, per column:

* the best mean is bold (``\textbf``), the second best underlined (``\underline``);
* means are compared at the printed precision, so cells that print the same mean are tied, and every
  tied cell gets the same mark (dense ranking: after a tie for best, the next lower mean is second);
* marks need a choice: a column with fewer than two distinct printed means (one value, or all tied) has
  none, so that a column of equal numbers is never all bold.

:func:`decimals_needed` picks the decimals a column needs (two significant digits of its smallest mean),
and :func:`drop_empty_columns` removes the column groups without any result (used outside the paper's
fixed layouts).

The table needs ``\usepackage{booktabs}`` and nothing else (multi-column headers use the core
``\multicolumn``; repeated row labels are blanked instead of using ``multirow``). Row and column labels
are escaped for LaTeX (``a_b`` -> ``a\_b``, ``α`` -> ``$\alpha$``); the caption is LaTeX and is
passed through as given, and so is the ``\label`` key (underscores are valid there).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

import pandas as pd

from analysis.stats import STATS
from geopeft.errors import GeopeftError

#: What a cell without any seed shows (an em-dash).
MISSING_CELL = r"\textemdash{}"

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "α": r"$\alpha$",
    "σ": r"$\sigma$",
    "±": r"$\pm$",
    "×": r"$\times$",
}


def escape_latex(text: Any) -> str:
    """A label as LaTeX text: special characters escaped, a missing label as an em-dash."""
    if text is None or (isinstance(text, float) and math.isnan(text)) or text is pd.NA:
        return MISSING_CELL
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _split(summary: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The mean, std and n frames of a summary (columns: the ``across`` keys)."""
    cols = summary.columns
    if not isinstance(cols, pd.MultiIndex) or cols.nlevels < 2 or set(cols.get_level_values(-1)) != set(STATS):
        raise GeopeftError("latex_table: expected the frame from analysis.stats.summarize (columns (..., stat))")
    parts = []
    for stat in STATS:
        part = summary.xs(stat, axis=1, level=-1)
        if not isinstance(part, pd.DataFrame):
            raise GeopeftError(f"latex_table: the summary's {stat!r} columns do not form a table")
        parts.append(part)
    return parts[0], parts[1], parts[2]


def _rounded(value: float, decimals: int) -> float:
    """The mean as printed, read back: ties are decided on what the reader sees."""
    return float(f"{value:.{decimals}f}")


def column_marks(means: Sequence[float], decimals: int, higher_is_better: bool = True) -> list[str]:
    """Mark per entry of one column: ``best``, ``second`` or ``""`` (see the module docstring for ties).

    Args:
        means: numeric means, NaN where missing.
        decimals: printed decimals; means equal at this precision are tied.
        higher_is_better: False for metrics like loss, time or memory.
    """
    shown = [None if math.isnan(m) else _rounded(m, decimals) for m in means]
    distinct = sorted({s for s in shown if s is not None}, reverse=higher_is_better)
    if len(distinct) < 2:
        return [""] * len(shown)  # nothing to choose between
    best = distinct[0] if distinct else None
    second = distinct[1] if len(distinct) > 1 else None
    return ["" if s is None else "best" if s == best else "second" if s == second else "" for s in shown]


def decimals_needed(means: Sequence[float], least: int = 1, most: int = 3) -> int:
    """Decimals that show the smallest non-zero ``|mean|`` with two significant digits, within [least, most]."""
    finite = [abs(m) for m in means if not math.isnan(m) and m != 0]
    if not finite:
        return least
    need = 1 - math.floor(math.log10(min(finite)))  # 0.042 -> 3, 0.42 -> 2, 4.2 -> 1, 42 -> 0
    return max(least, min(most, need))


def drop_empty_columns(summary: pd.DataFrame) -> pd.DataFrame:
    """A summary without the column groups (all but the ``stat`` level) where no row has a result (n 0)."""
    empty = [key[:-1] for key in summary.columns if key[-1] == "n" and int(summary[key].sum()) == 0]
    return summary.drop(columns=[c for c in summary.columns if c[:-1] in empty])


def format_cell(mean: float, std: float, n: int, max_n: int, mark: str, decimals: int) -> str:
    r"""One table cell, e.g. ``\textbf{71.2 $\pm$ 1.3} (n=2)``; a cell without seeds is an em-dash."""
    if n == 0 or math.isnan(mean):
        return MISSING_CELL
    body = f"{mean:.{decimals}f}" if math.isnan(std) else f"{mean:.{decimals}f} $\\pm$ {std:.{decimals}f}"
    if mark == "best":
        body = rf"\textbf{{{body}}}"
    elif mark == "second":
        body = rf"\underline{{{body}}}"
    return f"{body} (n={n})" if n < max_n else body


def _row_labels(index: pd.Index) -> list[list[str]]:
    """Escaped row labels; a label equal to the row above (with the same parents) is left blank."""
    tuples = [t if isinstance(t, tuple) else (t,) for t in index]
    out = []
    for r, t in enumerate(tuples):
        labels = []
        for level, value in enumerate(t):
            same = r > 0 and tuples[r - 1][: level + 1] == t[: level + 1] and level < len(t) - 1
            labels.append("" if same else escape_latex(value))
        out.append(labels)
    return out


def _cmidrules(col_keys: list[tuple[Any, ...]], offset: int) -> str:
    r"""``\cmidrule(lr){a-b}`` under each top-level column group (1-based column numbers)."""
    rules = []
    start = 0
    for i in range(1, len(col_keys) + 1):
        if i == len(col_keys) or col_keys[i][0] != col_keys[start][0]:
            rules.append(rf"\cmidrule(lr){{{offset + start + 1}-{offset + i}}}")
            start = i
    return " ".join(rules)


def latex_table(
    summary: pd.DataFrame,
    *,
    caption: str,
    label: str,
    higher_is_better: bool = True,
    decimals: int | Sequence[int] = 1,
) -> str:
    r"""Render a summary as a booktabs LaTeX table (see the module docstring for marks, ties, missing cells).

    Args:
        summary: the frame from :func:`analysis.stats.summarize`.
        caption: the caption, as LaTeX.
        label: the ``\label`` key, e.g. ``tab:miou``.
        higher_is_better: False when the smallest mean is best (loss, time, memory).
        decimals: decimals of mean and std, for every column or one per column (mean column order).

    Returns:
        The ``table`` environment, ``\toprule``/``\midrule``/``\bottomrule`` included.

    Raises:
        GeopeftError: ``summary`` does not have the shape that :func:`~analysis.stats.summarize` returns, or
            has no rows.
    """
    means, stds, ns = _split(summary)
    if means.empty or means.shape[1] == 0:
        raise GeopeftError("latex_table: the summary has no rows or columns; nothing to tabulate")
    col_keys = [k if isinstance(k, tuple) else (k,) for k in means.columns]
    mean_arr, std_arr = means.to_numpy(dtype=float), stds.to_numpy(dtype=float)
    n_arr = ns.to_numpy(dtype="int64")
    max_n = int(n_arr.max())
    places = [decimals] * means.shape[1] if isinstance(decimals, int) else list(decimals)
    if len(places) != means.shape[1]:
        raise GeopeftError(f"latex_table: {len(places)} decimals given for {means.shape[1]} columns")
    cells: list[list[str]] = [[] for _ in range(len(means))]
    for j, places_j in enumerate(places):
        col_means = [float(v) for v in mean_arr[:, j]]
        marks = column_marks(col_means, places_j, higher_is_better)
        for i, mark in enumerate(marks):
            cells[i].append(format_cell(col_means[i], float(std_arr[i, j]), int(n_arr[i, j]), max_n, mark, places_j))
    return render_table(summary.index, cells, col_keys, caption=caption, label=label)


def render_table(
    index: pd.Index, cells: list[list[str]], col_keys: list[tuple[Any, ...]], *, caption: str, label: str
) -> str:
    r"""A booktabs ``table`` of ready-made LaTeX cells: escaped row labels, grouped column headers.

    Args:
        index: row labels (a MultiIndex gives several label columns; its names head them).
        cells: one list of LaTeX cell strings per row, one string per column key.
        col_keys: column header tuples (equal leading parts are merged into ``\multicolumn`` groups with a
            ``\cmidrule`` under each top-level group).
        caption: the caption, as LaTeX.
        label: the ``\label`` key.

    Raises:
        GeopeftError: there are no rows or no columns.
    """
    if not cells or not col_keys:
        raise GeopeftError(f"{label}: the table has no rows or columns; nothing to tabulate")
    depth = len(col_keys[0])
    names = [str(n) for n in index.names]
    header: list[tuple[Hashable, ...]] = [(escape_latex(n), *[""] * (depth - 1)) for n in names]
    header += [tuple(escape_latex(v) for v in k) for k in col_keys]
    body = [labels + row for labels, row in zip(_row_labels(index), cells, strict=True)]
    frame = pd.DataFrame(body, columns=pd.MultiIndex.from_tuples(header) if depth > 1 else [h[0] for h in header])
    styler = frame.style.hide(axis="index")
    latex = styler.to_latex(
        hrules=True,
        column_format="l" * len(names) + "c" * len(col_keys),
        multicol_align="c",
        caption=caption,
        label=label,
        position_float="centering",
    )
    if depth > 1:
        lines = latex.splitlines()
        top = lines.index(r"\toprule")
        lines.insert(top + 2, _cmidrules(col_keys, len(names)))
        latex = "\n".join(lines) + "\n"
    return latex
