r"""``geopeft tables``: every table of a sweep, as CSV and LaTeX, in ``<sweep>/tables/``.

:func:`write_all` collects the sweep (:mod:`analysis.collect`) and writes the tidy table, the per-region
mIoU summary (``miou_summary.csv`` keyed by spec names, ``miou.tex`` in the paper's labels from
:mod:`analysis.labels`, columns without any result left out) and every table of :mod:`analysis.writers` (the
paper's tables in the released layout, comparisons with the released numbers, ranks, IQM, deltas,
ablations). Rendering lives in :mod:`analysis.latex`; its names are re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.collect import SETTING_COLUMNS, collect, outside_grid, write_tidy
from analysis.labels import (
    DATASETS,
    REGION_LABELS,
    SETTING_LABELS,
    bands_label,
    dataset_label,
    dataset_title,
    decoder_label,
    method_label,
    model_label,
    order_key,
    setting_label,
)
from analysis.latex import MISSING_CELL, column_marks, drop_empty_columns, escape_latex, format_cell, latex_table
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
    """Rows of ``miou.tex``: model, method, decoder, and every other setting that tells seeds apart.

    A setting is added when it varies between cells that share the rows so far, a dataset and a seed (a learning
    rate searched per dataset varies only between datasets, so it splits no row); then no two cells share a row,
    a dataset and a seed.
    """
    keys = ["model", "method", "decoder"]
    cells = tidy.drop_duplicates("cell_id")
    for column in SETTING_COLUMNS:
        if column in (*keys, "backbone", "dataset") or cells[column].nunique(dropna=False) < 2:
            continue
        per_group = cells.groupby([*keys, "dataset", "seed"], dropna=False)[column].nunique(dropna=False)
        if int(per_group.max()) > 1:
            keys.append(column)
    return tuple(keys)


def _label(value: Any, labels: dict[str, str]) -> Any:
    return value if pd.isna(value) else labels.get(str(value), value)


def miou_latex(tidy: pd.DataFrame) -> str:
    """``miou.tex``: mIoU per region in the paper's labels, one row per :func:`miou_rows` of the labelled cells.

    The backbone's label holds its bands (``(6 bands)``) and metadata, the method's and the decoder's their options
    (``LoRA (r 4, α 4)``), so a setting is a column of its own only where these labels do not tell seeds apart.
    Datasets are in the paper's order; columns (dataset, region) without any result are left out.
    """
    titles = {d: dataset_title(dataset_label(d)) for d in tidy["dataset"].dropna().unique()}
    models = zip(tidy["backbone"], tidy["bands"], tidy["metadata"], strict=True)
    labelled = tidy.assign(
        model=[model_label(str(b), bands, meta) for b, bands, meta in models],
        method=[method_label(str(m), o) for m, o in zip(tidy["method"], tidy["tuning_options"], strict=True)],
        decoder=[decoder_label(d, o) for d, o in zip(tidy["decoder"], tidy["decoder_options"], strict=True)],
        dataset=[_label(d, titles) for d in tidy["dataset"]],
        region=[_label(r, REGION_LABELS) for r in tidy["region"]],
    )
    rows = list(miou_rows(labelled))
    labelled = labelled.assign(**{c: [setting_label(c, v) for v in labelled[c]] for c in rows[3:]})
    labelled = labelled.rename(columns={c: SETTING_LABELS[c] for c in rows})
    summary = drop_empty_columns(summarize(labelled, metric="miou", by=[SETTING_LABELS[c] for c in rows]))
    order = order_key(list(summary.columns.get_level_values(0)), tuple(title for _, title in DATASETS.values()))
    firsts = [order[str(c)] for c in summary.columns.get_level_values(0)]
    summary = summary.iloc[:, sorted(range(len(firsts)), key=firsts.__getitem__)]  # stable: regions keep their order
    return latex_table(summary, caption=MIOU_CAPTION, label="tab:miou")


def write_all(root: str | Path) -> Tables:
    """Collect a sweep and write every table into ``<root>/tables/`` (every file atomically).

    Files: ``tidy.csv`` (and ``tidy.parquet`` with pyarrow), ``miou_summary.csv`` (the numeric twin of the
    LaTeX table: read it back with ``pd.read_csv(path, header=[0, 1, 2], index_col=[0, 1, 2])``),
    ``miou.tex`` (mIoU per region, one row per :func:`miou_rows`, :func:`miou_latex`), and every table of
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
    atomic_write_text(tex, miou_latex(tidy))
    written[tex.name] = tex
    extra, notes = write_paper_tables(tidy, out_dir)
    earlier = outside_grid(root)
    if earlier:
        shown = ", ".join(earlier[:5]) + (f" and {len(earlier) - 5} more" if len(earlier) > 5 else "")
        notes = [
            *notes,
            f"left out {len(earlier)} finished cell(s) that the current grid file no longer holds (planned from an "
            f"earlier version of it): {shown}; put them back in the grid to tabulate them",
        ]
    values = cell_values(tidy)
    stats = main_stats(values, [])
    return Tables({**written, **extra}, tuple(notes), tidy, values, stats)


def write_tables(root: str | Path) -> dict[str, Path]:
    """Write every table of a sweep (:func:`write_all`) and return file name -> path."""
    return write_all(root).files
