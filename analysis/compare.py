r"""Our paper tables against the authors' released ones: per-cell delta, in units of the paper's std.

For every row of our table (a (model, peft_type) pair the sweep has) and every (metric, dataset) of the
released table, :func:`compare` gives our mean, std and n, the paper's mean and std, ``delta`` (ours −
paper, in the metric's unit), ``delta_std`` (delta / the paper's std over seeds) and ``flagged``: |delta|
is more than :data:`FLAG_STDS` of the paper's stds. Rows the paper does not have (tiny demo models,
backbones beyond the paper) keep their row with the paper's side empty, shown as an em-dash.

:func:`comparison_latex` renders it: one row per (model, peft_type) the paper has numbers for, one column per
(metric, dataset), each cell ``$+1.23$ ($0.8\sigma$)``; flagged cells are bold with a dagger. Backbones without
any released number are named in the caption instead of filling rows with dashes; when no row is left, the table
is one line that says so (:func:`unreleased_models`).
"""

from __future__ import annotations

import math

import pandas as pd

from analysis.labels import OOD_MIOU, TEST_MIOU, dataset_title, paper_dataset_order
from analysis.latex import MISSING_CELL, escape_latex, render_table
from analysis.paper import KEYS, read_released, released_layout

#: |delta| above this many paper stds is flagged.
FLAG_STDS = 2.0
COLUMNS = (
    "model",
    "peft_type",
    "metric",
    "dataset",
    "ours_mean",
    "ours_std",
    "ours_n",
    "paper_mean",
    "paper_std",
    "delta",
    "delta_std",
    "flagged",
)
#: The released tables that have a std to compare against.
COMPARED = ("peft_table", "ood_table")


def compare(stats: pd.DataFrame, name: str = "peft_table", released: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per-cell comparison of our table ``name`` with the released one.

    Args:
        stats: the frame from :func:`analysis.paper.paper_stats`.
        name: ``peft_table`` or ``ood_table``.
        released: the released table (default: the shipped copy, :func:`analysis.paper.read_released`).

    Returns:
        The columns :data:`COLUMNS`, one row per (our row, released metric, released dataset).
    """
    released = read_released(name) if released is None else released
    ours = released_layout(stats, name)
    lookup = stats.set_index(list(KEYS))
    columns = [(str(c[0]), str(c[1]), str(c[2])) for c in released.columns]
    metrics = list(dict.fromkeys(m for m, stat, _ in columns if stat == "mean"))
    datasets = paper_dataset_order([d for _, stat, d in columns if stat == "mean"])
    pairs = [(m, d) for d in datasets for m in metrics if (m, "mean", d) in released.columns]
    records = []
    for model, peft in ours.index:
        for metric, ds in pairs:
            has_paper = (model, peft) in released.index
            p_mean = float(released.loc[(model, peft), (metric, "mean", ds)]) if has_paper else math.nan
            p_std = float(released.loc[(model, peft), (metric, "std", ds)]) if has_paper else math.nan
            o_mean = float(lookup["mean"].get((model, peft, metric, ds), math.nan))
            o_std = float(lookup["std"].get((model, peft, metric, ds), math.nan))
            n = int(lookup["n"].get((model, peft, metric, ds), 0))
            delta = o_mean - p_mean
            z = delta / p_std if p_std > 0 else math.nan
            records.append(
                (model, peft, metric, ds, o_mean, o_std, n, p_mean, p_std, delta, z, bool(abs(z) > FLAG_STDS))
            )
    return pd.DataFrame.from_records(records, columns=list(COLUMNS))


def format_delta(delta: float, delta_std: float, flagged: bool) -> str:
    r"""One comparison cell: ``$+1.23$ ($0.8\sigma$)``, bold with a dagger when flagged, em-dash when unknown."""
    if math.isnan(delta):
        return MISSING_CELL
    body = f"${delta:+.2f}$" + ("" if math.isnan(delta_std) else f" (${delta_std:+.1f}\\sigma$)")
    return rf"\textbf{{{body}}}$^\dagger$" if flagged else body


def unreleased_models(comparison: pd.DataFrame) -> list[str]:
    """Our backbones (model labels) of which the released table has no number at all, in table order."""
    has = comparison.groupby("model", sort=False)["paper_mean"].apply(lambda s: bool(s.notna().any()))
    return [str(m) for m, released in has.items() if not released]


def no_released_numbers(models: list[str]) -> str:
    """The sentence that replaces a comparison without any released number (LaTeX)."""
    names = ", ".join(escape_latex(m) for m in models)
    return (
        f"The authors released no number for {names} (backbones beyond the paper), so there is nothing to "
        "compare with."
    )


def comparison_latex(comparison: pd.DataFrame, *, caption: str, label: str) -> str:
    """The comparison as a booktabs table (see the module docstring)."""
    unreleased = unreleased_models(comparison)
    if unreleased and len(unreleased) == comparison["model"].nunique():
        lines = [
            r"\begin{table}",
            r"\centering",
            rf"\caption{{{caption}}}",
            rf"\label{{{label}}}",
            r"\begin{tabular}{l}",
            r"\toprule",
            no_released_numbers(unreleased) + r" \\",
            r"\bottomrule",
            r"\end{tabular}",
            r"\end{table}",
        ]
        return "\n".join(lines) + "\n"
    if unreleased:
        comparison = comparison[~comparison["model"].isin(unreleased)]
        caption += f" Not in the paper, so left out: {', '.join(escape_latex(m) for m in unreleased)}."
    rows = list(dict.fromkeys(zip(comparison["model"], comparison["peft_type"], strict=True)))
    cols = list(dict.fromkeys(zip(comparison["metric"], comparison["dataset"], strict=True)))
    lookup = {(r["model"], r["peft_type"], r["metric"], r["dataset"]): r for r in comparison.to_dict("records")}
    cells = []
    for row in rows:
        line = []
        for col in cols:
            r = lookup[(*row, *col)]
            line.append(format_delta(float(r["delta"]), float(r["delta_std"]), bool(r["flagged"])))
        cells.append(line)
    metric_names = {TEST_MIOU: "test", OOD_MIOU: "OOD"}
    keys = [
        (dataset_title(ds), metric_names.get(m, m)) if len({m for m, _ in cols}) > 1 else (dataset_title(ds),)
        for m, ds in cols
    ]
    index = pd.MultiIndex.from_tuples(rows, names=["Model", "PEFT"])
    return render_table(index, cells, keys, caption=caption, label=label)


def comparison_caption(name: str) -> str:
    """The caption of the comparison of table ``name``."""
    what = "test mIoU" if name == "peft_table" else "test and OOD mIoU"
    return (
        rf"Ours minus the paper's released {what} (percentage points), and in units of the paper's std over "
        rf"seeds ($\sigma$). Bold with $^\dagger$: $|\Delta| > {FLAG_STDS:g}\sigma$; \textemdash{{}}: no result "
        r"on one side."
    )
