"""Figures of the report, each written as PDF and PNG (matplotlib, imported only when a figure is drawn).

* ``radar``: one radar chart per backbone (three a row), one axis per dataset (test mIoU), one trace per
  method, as in the paper's figure; each axis runs from the lowest to the highest mean of that backbone (both
  printed at the axis), so that methods are compared per dataset. A backbone needs results of at least
  two methods on at least three datasets for a radar; the notes name the ones left out.
* ``bars_<dataset>``: test mIoU per backbone (groups) and method (colours), mean with the std over seeds as
  whiskers.
* ``memory_miou``: peak memory against test mIoU, one panel per dataset, one point per (model, method): colour
  per backbone, marker per method.

Each figure comes with its caption, which says what is plotted, and the report section it belongs to
(:class:`FigureFile`). Figures are drawn on :class:`matplotlib.figure.Figure` objects (no pyplot, no global
backend state).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from analysis.labels import MODEL_ORDER, PEFT_ORDER, TEST_MIOU, dataset_title, order_key, paper_dataset_order
from analysis.latex import escape_latex
from analysis.paper import MEMORY_GB
from geopeft.io import temporary_save_path

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Smallest number of datasets a radar chart is drawn for.
MIN_RADAR_AXES = 3
#: Radius of an axis's lowest value (so that the lowest trace stays visible).
INNER = 0.2
#: Marker of each method, in the paper's method order (others cycle through the rest).
MARKERS = "osD^vP*X"


@dataclass(frozen=True)
class FigureFile:
    """One figure written for the report.

    Args:
        path: the PDF (a PNG twin lies beside it).
        caption: what is plotted, as LaTeX.
        section: the report section it belongs under (``results``, ``cost``, ``curves``).
        group: the sub-heading within the section (a dataset's title), "" for none.
        height: the most it may take of the page's text height.
    """

    path: Path
    caption: str
    section: str
    group: str = ""
    height: float = 0.4


def seeds_text(ns: list[int]) -> str:
    """``2 seeds``, or ``2--5 seeds`` (LaTeX en dash) when the number differs between the points."""
    counts = sorted({int(n) for n in ns if n > 0})
    if not counts:
        return "no seed"
    if len(counts) == 1:
        return f"{counts[0]} seed" + ("s" if counts[0] > 1 else "")
    return f"{counts[0]}--{counts[-1]} seeds"


def method_style(pefts: list[str]) -> dict[str, tuple[str, str]]:
    """Colour and marker of each method label, fixed by the paper's method order (same in every figure)."""
    order = order_key(pefts, PEFT_ORDER)
    return {p: (f"C{order[p] % 10}", MARKERS[order[p] % len(MARKERS)]) for p in pefts}


def slug(label: str) -> str:
    """A label as a file-name part: ``Prithvi 2.0 300M`` -> ``prithvi_2_0_300m``."""
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def save_figure(fig: Figure, out_dir: Path, stem: str) -> list[Path]:
    """Write ``fig`` as ``<stem>.pdf`` and ``<stem>.png`` (each atomically) and return both paths."""
    paths = []
    for suffix in (".pdf", ".png"):
        path = out_dir / f"{stem}{suffix}"
        with temporary_save_path(path) as tmp:
            fig.savefig(tmp, format=suffix[1:], dpi=150, bbox_inches="tight")
        paths.append(path)
    return paths


def _means(stats: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean and std per (model, peft_type) row and dataset column of one metric, datasets in paper order."""
    sub = stats[(stats["metric"] == metric) & (stats["n"] > 0)]
    return sub.assign(
        order=sub["dataset"].map({d: i for i, d in enumerate(paper_dataset_order(list(sub["dataset"])))})
    )


def _radar_data(stats: pd.DataFrame, model: str) -> pd.DataFrame | None:
    """Test mIoU means of one backbone in dataset order, or None with fewer than three datasets or two methods."""
    sub = _means(stats, TEST_MIOU)
    sub = sub[sub["model"] == model].sort_values("order")
    if sub["dataset"].nunique() < MIN_RADAR_AXES or sub["peft_type"].nunique() < 2:
        return None
    return sub


def _radar(ax: Axes, sub: pd.DataFrame, model: str, style: dict[str, tuple[str, str]]) -> None:
    """One backbone's radar chart on a polar ``ax`` (see the module docstring)."""
    datasets = list(dict.fromkeys(sub["dataset"]))
    angles = [2 * math.pi * i / len(datasets) for i in range(len(datasets))]
    lo = sub.groupby("dataset")["mean"].min()
    hi = sub.groupby("dataset")["mean"].max()

    def radius(ds: str, value: float) -> float:
        span = float(hi[ds] - lo[ds])
        return 1.0 if span == 0 else INNER + (1 - INNER) * (value - float(lo[ds])) / span

    for peft in style:
        group = sub[sub["peft_type"] == peft]
        by_ds = dict(zip(group["dataset"], group["mean"], strict=True))
        points = [(a, radius(d, float(by_ds[d]))) for a, d in zip(angles, datasets, strict=True) if d in by_ds]
        if not points:
            continue
        closed = [*points, points[0]]
        colour, marker = style[peft]
        ax.plot([p[0] for p in closed], [p[1] for p in closed], marker=marker, color=colour, label=peft)
    ax.set_xticks(angles)
    ax.set_xticklabels([f"{dataset_title(d)}\n{lo[d]:.1f}–{hi[d]:.1f}" for d in datasets], fontsize=7)
    ax.set_yticklabels([])
    ax.tick_params(axis="x", pad=10)
    ax.set_ylim(0, 1.05)
    ax.set_title(model, fontsize=10, pad=18)


def radar_figure(stats: pd.DataFrame, models: list[str]) -> Figure | None:
    """One radar chart per backbone of ``models`` (those with enough results), three a row; None without any."""
    charts = [(m, sub) for m in models if (sub := _radar_data(stats, m)) is not None]
    if not charts:
        return None
    from matplotlib.figure import Figure

    pefts = list(dict.fromkeys(p for _, sub in charts for p in sub["peft_type"]))
    style = method_style(sorted(pefts, key=order_key(pefts, PEFT_ORDER).__getitem__))
    cols = min(3, len(charts))
    rows = math.ceil(len(charts) / cols)
    fig = Figure(figsize=(4.2 * cols + 1.6, 4.2 * rows))
    for i, (model, sub) in enumerate(charts):
        _radar(fig.add_subplot(rows, cols, i + 1, projection="polar"), sub, model, style)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    for ax in fig.axes[1:]:  # every method once, in the paper's order
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    order = sorted(range(len(labels)), key=lambda i: list(style).index(labels[i]))
    fig.legend([handles[i] for i in order], [labels[i] for i in order], loc="center right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1 - 1.5 / (4.2 * cols + 1.6), 1))
    return fig


def bar_figure(stats: pd.DataFrame, dataset: str) -> Figure | None:
    """Test mIoU mean ± std on one dataset, bars grouped by backbone, one colour per method; None without any."""
    sub = _means(stats, TEST_MIOU)
    sub = sub[sub["dataset"] == dataset]
    if sub.empty:
        return None
    from matplotlib.figure import Figure

    models = sorted(dict.fromkeys(sub["model"]), key=order_key(list(sub["model"]), MODEL_ORDER).__getitem__)
    pefts = sorted(dict.fromkeys(sub["peft_type"]), key=order_key(list(sub["peft_type"]), PEFT_ORDER).__getitem__)
    style = method_style(pefts)
    width = 0.8 / len(pefts)
    fig = Figure(figsize=(min(11.0, 0.25 * len(models) * len(pefts) + 0.6 * len(models) + 3.0), 3.6))
    ax = fig.add_subplot()
    by_row = {(m, p): (mu, sd) for m, p, mu, sd in sub[["model", "peft_type", "mean", "std"]].itertuples(index=False)}
    for j, peft in enumerate(pefts):
        xs = [i + (j - (len(pefts) - 1) / 2) * width for i in range(len(models))]
        cells = [by_row.get((m, peft), (math.nan, math.nan)) for m in models]
        heights = [mu for mu, _ in cells]
        errors = [0.0 if math.isnan(sd) else sd for _, sd in cells]
        ax.bar(xs, heights, width=width, yerr=errors, capsize=2, color=style[peft][0], label=peft)
    finite = [float(v) for v in sub["mean"]]
    top = max(float(m + (0 if math.isnan(s) else s)) for m, s in zip(sub["mean"], sub["std"], strict=True))
    ax.set_ylim(max(0.0, min(finite) - 5), min(100.0, top + 3))
    ax.set_xticks(range(len(models)))
    ax.set_xticklabels(models, rotation=20 if len(models) > 3 else 0, ha="right" if len(models) > 3 else "center")
    ax.set_ylabel("test mIoU (%)")
    ax.set_title(dataset_title(dataset), fontsize=10)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return fig


def memory_figure(values: pd.DataFrame) -> Figure | None:
    """Peak memory (GB) against test mIoU per (model, method), one panel per dataset; None without such runs."""
    main = values[values["main"] & values[MEMORY_GB].notna() & values[TEST_MIOU].notna() & ~values["reused"]]
    if main.empty:
        return None
    keys = ["dataset", "model", "peft_type"]
    means = main.groupby(keys, sort=False)[[MEMORY_GB, TEST_MIOU]].mean().reset_index()
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    models = sorted(dict.fromkeys(means["model"]), key=order_key(list(means["model"]), MODEL_ORDER).__getitem__)
    pefts = sorted(dict.fromkeys(means["peft_type"]), key=order_key(list(means["peft_type"]), PEFT_ORDER).__getitem__)
    style = method_style(pefts)
    datasets = paper_dataset_order(list(means["dataset"]))
    cols = min(3, len(datasets))
    rows = math.ceil(len(datasets) / cols)
    fig = Figure(figsize=(3.9 * cols + 1.9, 3.0 * rows))
    for i, ds in enumerate(datasets):
        ax = fig.add_subplot(rows, cols, i + 1)
        on_ds = means[means["dataset"] == ds]
        for model, peft, memory, miou in on_ds[["model", "peft_type", MEMORY_GB, TEST_MIOU]].itertuples(index=False):
            ax.scatter(memory, miou, marker=style[peft][1], color=f"C{models.index(model) % 10}", s=30)
        ax.set_title(dataset_title(ds), fontsize=9)
        ax.set_xlabel("peak memory (GB)", fontsize=8)
        ax.set_ylabel("test mIoU (%)", fontsize=8)
        ax.tick_params(labelsize=7)
    handles: list[Artist] = [Patch(color=f"C{i % 10}", label=m) for i, m in enumerate(models)]  # colour: backbone
    handles += [Line2D([], [], color="0.4", marker=style[p][1], linestyle="", label=p) for p in pefts]  # marker
    fig.legend(handles=handles, loc="center right", fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0, 1 - 1.8 / (3.9 * cols + 1.9), 1))
    return fig


#: Caption templates, LaTeX (names in braces filled in per figure).
CAPTIONS = {
    "radar": r"Test mIoU (\%) of every method on each dataset, one chart per backbone ({models}). Each axis runs "
    r"from the lowest to the highest mean of that backbone on the dataset (printed under its name); points: mean "
    r"over {seeds}.",
    "bars": r"Test mIoU (\%) by backbone and method, {dataset}; bars: mean over {seeds}, whiskers: std.",
    "memory": r"Peak training memory (GB; peak RSS on CPU) against test mIoU (\%), one panel per dataset "
    r"({datasets}); one point per backbone (colour) and method (marker), mean over {seeds}.",
}


def write_figures(
    stats: pd.DataFrame | None, values: pd.DataFrame, out_dir: str | Path
) -> tuple[list[FigureFile], list[str]]:
    """Draw every figure into ``out_dir`` (created when missing).

    Args:
        stats: the frame from :func:`analysis.paper.paper_stats` (None: no main run, no radar or bars).
        values: the frame from :func:`analysis.paper.cell_values`.
        out_dir: where the PDF and PNG files go.

    Returns:
        The figures written (each PDF has a PNG twin), and notes on figures left out.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    text = CAPTIONS
    figures: list[tuple[str, Figure | None, str, str, float]] = []  # stem, figure, caption, section, height
    if stats is not None:
        miou = stats[(stats["metric"] == TEST_MIOU) & (stats["n"] > 0)]
        models = order_key(list(stats["model"]), MODEL_ORDER)
        ordered = sorted(dict.fromkeys(str(m) for m in stats["model"]), key=models.__getitem__)
        for model in ordered:
            if _radar_data(stats, model) is None:
                notes.append(
                    f"radar {model}: fewer than {MIN_RADAR_AXES} datasets or fewer than 2 methods with results"
                )
        charted = [m for m in ordered if _radar_data(stats, m) is not None]
        names = ", ".join(escape_latex(m) for m in charted)
        caption = text["radar"].format(
            models=names, seeds=seeds_text(list(miou.loc[miou["model"].isin(charted), "n"]))
        )
        height = 0.45 if len(charted) <= 3 else 0.85
        figures.append(("radar", radar_figure(stats, charted), caption, "results", height))
        for ds in paper_dataset_order(list(miou["dataset"])):
            seeds = seeds_text(list(miou.loc[miou["dataset"] == ds, "n"]))
            caption = text["bars"].format(dataset=escape_latex(dataset_title(ds)), seeds=seeds)
            figures.append((f"bars_{slug(ds)}", bar_figure(stats, ds), caption, "results", 0.4))
    runs = values[values["main"] & values[MEMORY_GB].notna() & values[TEST_MIOU].notna() & ~values["reused"]]
    titles = ", ".join(escape_latex(dataset_title(d)) for d in paper_dataset_order(list(runs["dataset"])))
    counts = runs.groupby(["dataset", "model", "peft_type"]).size()
    caption = text["memory"].format(datasets=titles, seeds=seeds_text(list(counts)))
    height = 0.35 if runs["dataset"].nunique() <= 3 else 0.75
    figures.append(("memory_miou", memory_figure(values), caption, "cost", height))
    if runs.empty:
        notes.append("memory_miou: no run with both memory and test mIoU")
    written = []
    for stem, fig, caption, section, height in figures:
        if fig is not None:
            written.append(FigureFile(save_figure(fig, out, stem)[0], caption, section, height=height))
    return written, notes
