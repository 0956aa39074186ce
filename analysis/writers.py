"""Write every table of a sweep beyond the tidy table: paper tables, statistics, comparisons, ablations.

Each table is written as a CSV (its numeric twin) and a LaTeX file, atomically, into one directory:

==========================  ==============================================================================
``peft_table``              test mIoU, the released ``peft_table.csv`` layout (Table 4)
``ood_table``               test and OOD mIoU, the released ``ood_table.csv`` layout (Table 5)
``epoch_and_time``          minutes per run and epochs, the released ``epoch_and_time.csv`` layout
``compare_<table>``         ours minus the released table, per cell, in paper stds (``peft``, ``ood``)
``average_rank``            each method's mean rank within its backbone over the datasets
``iqm``                     IQM of normalised test mIoU with 95 % stratified-bootstrap CIs (GEO-Bench)
``delta_to_full_ft``        each method minus full fine-tuning, per dataset and on average
``decoder``, ``metadata``   the ablations; ``memory``, ``time``: peak memory and seconds per epoch
==========================  ==============================================================================

A table that has nothing to show (no cell of the sweep fits it) is left out with a note; so is one whose
cells cannot be told apart (two cells of one table cell share a seed): the note says why.

The LaTeX uses the paper's labels only (:mod:`analysis.labels`; the CSVs keep the spec names of the ablations'
decoders and metadata): the options of the methods of the main runs are a sentence of each caption
(``Options: LoRA r 4, α 4.``), wall times below a minute are shown in seconds, decimals follow the numbers
(:func:`~analysis.latex.decimals_needed`), and the tables beyond the released layouts drop the columns without
any result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from functools import partial
from pathlib import Path

import pandas as pd

from analysis.ablations import ABLATIONS, Ablation, ablation_summary
from analysis.compare import COMPARED, compare, comparison_caption, comparison_latex
from analysis.labels import (
    DECODERS,
    METHODS,
    PEFT_ORDER,
    dataset_title,
    metadata_label,
    options_label,
    order_key,
    peft_label,
)
from analysis.latex import (
    column_marks,
    decimals_needed,
    drop_empty_columns,
    escape_latex,
    latex_table,
    render_table,
)
from analysis.paper import LAYOUTS, cell_values, paper_stats, paper_summary, released_layout
from analysis.robust import average_ranks, delta_to_full, iqm_bootstrap
from geopeft.errors import GeopeftError
from geopeft.io import atomic_write_text

Written = dict[str, Path]
#: The header of the wall-time columns of ``epoch_and_time`` (minutes), and the one when every run was shorter.
MINUTES, SECONDS = "Time (min)", "Time (s)"


def _write(out: Path, stem: str, csv: str, tex: str, written: Written) -> None:
    for suffix, text in ((".csv", csv), (".tex", tex)):
        path = out / f"{stem}{suffix}"
        atomic_write_text(path, text)
        written[path.name] = path


def _attempt(stem: str, notes: list[str], make: Callable[[], None]) -> None:
    """Run one table's writer; a GeopeftError becomes a note instead of stopping the other tables."""
    try:
        make()
    except GeopeftError as exc:
        notes.append(f"{stem}: not written ({exc})")


def write_paper_tables(tidy: pd.DataFrame, out_dir: str | Path) -> tuple[Written, list[str]]:
    """Write every table listed in the module docstring into ``out_dir``.

    Args:
        tidy: the table from :func:`analysis.collect.collect`.
        out_dir: the directory (created when missing).

    Returns:
        File name -> path of every file written, and the notes on tables left out.
    """
    out = Path(out_dir)
    written: Written = {}
    notes: list[str] = []
    values = cell_values(tidy)
    if values.empty or not values["main"].any():
        notes.append("paper tables: no cell of the main experiments (no metadata, main decoder); none written")
        stats = None
    else:
        stats = main_stats(values, notes)
    note = options_note(values)
    if stats is not None:
        for name in LAYOUTS:
            _attempt(name, notes, partial(_write_paper, stats, name, out, written, note))
        for name in COMPARED:
            _attempt(f"compare_{name}", notes, partial(_write_comparison, stats, name, out, written))
        _attempt("average_rank", notes, partial(_write_ranks, stats, out, written, note))
        _attempt("delta_to_full_ft", notes, partial(_write_deltas, stats, out, written, note))
        _attempt("iqm", notes, partial(_write_iqm, values, out, written, note))
    for ablation in ABLATIONS:
        _attempt(ablation.name, notes, partial(_write_ablation, values, ablation, out, written, note))
    return written, notes


def options_note(values: pd.DataFrame) -> str:
    """A caption sentence with the options of each method of the main runs (`` Options: LoRA r 4, α 4.``), LaTeX.

    Empty when no method of the main runs has options.
    """
    main = values[values["main"]] if not values.empty else values
    order = order_key(list(main["method"].dropna().astype(str)), tuple(METHODS)) if not main.empty else {}
    parts = []
    for method in sorted(order, key=order.__getitem__):
        used = sorted({options_label(o) for o in main.loc[main["method"] == method, "tuning_options"]} - {""})
        if used:
            parts.append(f"{peft_label(method)} {' or '.join(used)}")
    return escape_latex(f" Options: {'; '.join(parts)}.") if parts else ""


def in_seconds_when_short(summary: pd.DataFrame) -> pd.DataFrame:
    """``epoch_and_time``'s wall times in seconds (header :data:`SECONDS`) when every mean is below a minute."""
    minutes = [c for c in summary.columns if c[0] == MINUTES]
    means = [float(v) for c in minutes if c[-1] == "mean" for v in summary[c] if not math.isnan(float(v))]
    if not means or max(means) >= 1.0:
        return summary
    out = summary.copy()
    for c in minutes:
        if c[-1] != "n":
            out[c] = out[c] * 60.0
    keys: list[tuple[Hashable, ...]] = [(SECONDS, *c[1:]) if c[0] == MINUTES else tuple(c) for c in out.columns]
    out.columns = pd.MultiIndex.from_tuples(keys)
    return out


def _column_decimals(summary: pd.DataFrame, least: int) -> list[int]:
    """:func:`~analysis.latex.decimals_needed` of every mean column of a summary."""
    return [decimals_needed([float(v) for v in summary[c]], least) for c in summary.columns if c[-1] == "mean"]


def main_stats(values: pd.DataFrame, notes: list[str]) -> pd.DataFrame | None:
    """:func:`~analysis.paper.paper_stats` of the main runs, or None (with a note) when they cannot be told apart."""
    try:
        return paper_stats(values) if values["main"].any() else None
    except GeopeftError as exc:
        notes.append(f"paper tables, ranks, IQM and comparisons: not written ({exc})")
        return None


def _write_paper(stats: pd.DataFrame, name: str, out: Path, written: Written, note: str) -> None:
    layout = LAYOUTS[name]
    summary = paper_summary(stats, name)
    timed = name == "epoch_and_time"  # times and epochs: as many decimals as the numbers need
    summary = in_seconds_when_short(summary) if timed else summary
    tex = latex_table(
        summary,
        caption=layout.caption + note,
        label=f"tab:{name}",
        higher_is_better=layout.higher_is_better,
        decimals=_column_decimals(summary, layout.decimals) if timed else layout.decimals,
    )
    _write(out, name, released_layout(stats, name).to_csv(), tex, written)


def _write_comparison(stats: pd.DataFrame, name: str, out: Path, written: Written) -> None:
    comp = compare(stats, name)
    tex = comparison_latex(comp, caption=comparison_caption(name), label=f"tab:compare_{name}")
    _write(out, f"compare_{name}", comp.to_csv(index=False), tex, written)


def _write_ablation(values: pd.DataFrame, ablation: Ablation, out: Path, written: Written, note: str) -> None:
    summary = ablation_summary(values, ablation)
    shown = drop_empty_columns(summary)
    if summary.empty or shown.shape[1] == 0:
        raise GeopeftError("no cell of the sweep fits this table")
    for level, label in (("Decoder", lambda d: DECODERS.get(d, d)), ("Metadata", metadata_label)):
        if level in shown.index.names:
            shown = shown.rename(index=label, level=level)
    tex = latex_table(
        shown,
        caption=ablation.caption + (note if "PEFT" in shown.index.names else ""),
        label=f"tab:{ablation.name}",
        higher_is_better=ablation.higher_is_better,
        decimals=_column_decimals(shown, ablation.decimals) if not ablation.higher_is_better else ablation.decimals,
    )
    _write(out, ablation.name, summary.to_csv(), tex, written)


def _marked(values: list[float], decimals: int, higher_is_better: bool, fmt: str) -> list[str]:
    """Cells of one column, best bold and second underlined, em-dash where NaN."""
    marks = column_marks(values, decimals, higher_is_better)
    cells = []
    for v, mark in zip(values, marks, strict=True):
        text = r"\textemdash{}" if math.isnan(v) else fmt.format(v)
        cells.append(
            rf"\textbf{{{text}}}" if mark == "best" else rf"\underline{{{text}}}" if mark == "second" else text
        )
    return cells


def _columns_to_rows(columns: list[list[str]]) -> list[list[str]]:
    return [list(row) for row in zip(*columns, strict=True)]


def _write_ranks(stats: pd.DataFrame, out: Path, written: Written, note: str) -> None:
    ranks = average_ranks(stats)
    if ranks.empty:
        raise GeopeftError("no result to rank")
    wide = ranks.pivot_table(index="peft_type", columns="model", values="rank", sort=False)
    wide = wide.reindex(sorted(wide.index, key=order_key(list(wide.index), PEFT_ORDER).__getitem__))
    cols = [
        _marked([float(v) for v in wide[m]], 1, False, "{:.1f}") for m in wide.columns
    ]  # lower rank is better, per backbone
    index = pd.Index(list(wide.index), name="PEFT")
    tex = render_table(
        index,
        _columns_to_rows(cols),
        [(str(m),) for m in wide.columns],
        caption=r"Average rank of each method within its backbone over the datasets (test mIoU; 1 = best, ties "
        r"share their mean rank). Best per backbone in bold, second underlined." + note,
        label="tab:average_rank",
    )
    _write(out, "average_rank", ranks.to_csv(index=False), tex, written)


def _write_deltas(stats: pd.DataFrame, out: Path, written: Written, note: str) -> None:
    deltas = delta_to_full(stats)
    if deltas.empty:
        raise GeopeftError("no backbone has both Full FT and another method")
    shown = deltas.dropna(axis=1, how="all")  # datasets without any delta
    if shown.empty:
        raise GeopeftError("no dataset has both Full FT and another method of one backbone")
    cols = [_marked([float(v) for v in shown[c]], 2, True, "{:+.2f}") for c in shown.columns]
    keys = [(dataset_title(str(c)) if c != "mean" else "Mean",) for c in shown.columns]
    index = deltas.index.set_names(["Model", "PEFT"])
    tex = render_table(
        index,
        _columns_to_rows(cols),
        keys,
        caption=r"Test mIoU of each method minus full fine-tuning of the same backbone (percentage points); the "
        r"mean is over the datasets with both. Best per column in bold, second underlined." + note,
        label="tab:delta_to_full_ft",
    )
    _write(out, "delta_to_full_ft", deltas.to_csv(), tex, written)


def _write_iqm(values: pd.DataFrame, out: Path, written: Written, note: str) -> None:
    table = iqm_bootstrap(values)
    if table.empty:
        raise GeopeftError("no run with a test mIoU")
    iqm_cells = _marked([float(v) for v in table["iqm"]], 3, True, "{:.3f}")
    cells = [
        [iqm, f"[{lo:.3f}, {hi:.3f}]", f"{runs} / {ds}"]
        for iqm, lo, hi, runs, ds in zip(
            iqm_cells, table["ci_low"], table["ci_high"], table["runs"], table["datasets"], strict=True
        )
    ]
    index = pd.MultiIndex.from_frame(table[["model", "peft_type"]], names=["Model", "PEFT"])
    tex = render_table(
        index,
        cells,
        [("IQM",), ("95% CI",), ("runs / datasets",)],
        caption=r"Interquartile mean of test mIoU, min-max normalised per dataset over all runs, with 95\% "
        r"stratified-bootstrap confidence intervals (seeds resampled within each dataset; GEO-Bench). "
        r"Best IQM in bold, second underlined." + note,
        label="tab:iqm",
    )
    _write(out, "iqm", table.to_csv(index=False), tex, written)
