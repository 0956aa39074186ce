r"""``geopeft tables``: every table of a sweep, as CSV and LaTeX, in ``<sweep>/tables/``.

:func:`write_all` collects the sweep (:mod:`analysis.collect`) and writes the tidy table, the per-region
mIoU summary (``miou_summary.csv``, ``miou.tex``) and every table of :mod:`analysis.writers` (the
paper's tables in the released layout, comparisons with the released numbers, ranks, IQM, deltas,
ablations). Rendering lives in :mod:`analysis.latex`; its names are re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.collect import SETTING_COLUMNS, collect, write_tidy
from analysis.labels import bands_label
from analysis.latex import MISSING_CELL, column_marks, escape_latex, format_cell, latex_table
from analysis.paper import cell_values
from analysis.stats import summarize
from analysis.writers import main_stats, write_paper_tables
from geopeft.errors import GeopeftError
from geopeft.io import atomic_write_text
from geopeft.paths import SweepPaths

__all__ = [
    "MISSING_CELL",
    "Tables",
    "column_marks",
    "escape_latex",
    "format_cell",
    "latex_table",
    "write_all",
    "write_tables",
]

MIOU_CAPTION = (
    r"mIoU (\%) on each region (test: in-distribution; others: out-of-distribution), mean $\pm$ std over "
    r"seeds. Best mean per column in bold, second underlined; "
    r"(n=$k$): fewer seeds than the most complete cell; \textemdash{}: no result."
)


@dataclass(frozen=True)
class Tables:
    """What :func:`write_all` wrote and read.

    Args:
        files: file name -> path of every file written.
        notes: tables left out, and why.
        tidy: the tidy table.
        values: one row per cell with the paper's labels (:func:`analysis.paper.cell_values`).
        stats: the main runs' mean/std/n (:func:`analysis.paper.paper_stats`); None without a main run.
    """

    files: dict[str, Path]
    notes: tuple[str, ...]
    tidy: pd.DataFrame
    values: pd.DataFrame
    stats: pd.DataFrame | None


def miou_rows(tidy: pd.DataFrame) -> tuple[str, ...]:
    """Rows of ``miou.tex``: model, method, decoder, and every other setting that varies between cells."""
    fixed = ("model", "method", "decoder")
    cells = tidy.drop_duplicates("cell_id")
    varying = [
        c for c in SETTING_COLUMNS if c not in (*fixed, "backbone", "dataset") and cells[c].nunique(dropna=False) > 1
    ]
    return (*fixed, *varying)


def write_all(root: str | Path) -> Tables:
    """Collect a sweep and write every table into ``<root>/tables/`` (every file atomically).

    Files: ``tidy.csv`` (and ``tidy.parquet`` with pyarrow), ``miou_summary.csv`` (the numeric twin of the
    LaTeX table: read it back with ``pd.read_csv(path, header=[0, 1, 2], index_col=[0, 1, 2])``),
    ``miou.tex`` (mIoU per region, one row per :func:`miou_rows`), and every table of
    :func:`analysis.writers.write_paper_tables` (``<name>.csv`` and ``<name>.tex`` each).

    Args:
        root: the sweep directory.

    Returns:
        The files written, the notes on tables left out, and the frames they were made from.

    Raises:
        GeopeftError: the sweep has no cells, or a result file is malformed.
    """
    tidy = collect(root)
    if tidy.empty:
        raise GeopeftError(f"{root}: the sweep has no cells yet; run `geopeft sweep` first")
    out_dir = SweepPaths(Path(root)).tables_dir
    written = {p.name: p for p in write_tidy(tidy, out_dir)}
    summary = summarize(tidy.assign(bands=tidy["bands"].map(bands_label)), metric="miou", by=miou_rows(tidy))
    summary_csv = out_dir / "miou_summary.csv"
    atomic_write_text(summary_csv, summary.to_csv())
    written[summary_csv.name] = summary_csv
    tex = out_dir / "miou.tex"
    atomic_write_text(tex, latex_table(summary, caption=MIOU_CAPTION, label="tab:miou"))
    written[tex.name] = tex
    extra, notes = write_paper_tables(tidy, out_dir)
    values = cell_values(tidy)
    stats = main_stats(values, [])
    return Tables({**written, **extra}, tuple(notes), tidy, values, stats)


def write_tables(root: str | Path) -> dict[str, Path]:
    """Write every table of a sweep (:func:`write_all`) and return file name -> path."""
    return write_all(root).files
