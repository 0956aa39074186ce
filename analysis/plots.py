"""Figures of the report, each written as PDF and PNG (matplotlib, imported only when a figure is drawn).

* ``radar_<model>``: one radar chart per backbone, one axis per dataset (test mIoU), one trace per method,
  as in the paper's figure; each axis runs from the lowest to the highest mean of that backbone (both
  printed at the axis), so that methods are compared per dataset. A backbone needs results of at least
  two methods on at least three datasets for a radar; the notes name the ones left out.
* ``bars``: test mIoU per (model, method), one panel per dataset, mean with the std over seeds as error bar.
* ``memory_miou``: peak memory against test mIoU, one panel per dataset, one point per (model, method).

Figures are drawn on :class:`matplotlib.figure.Figure` objects (no pyplot, no global backend state).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from analysis.labels import MODEL_ORDER, PEFT_ORDER, TEST_MIOU, dataset_title, order_key, paper_dataset_order
from analysis.paper import MEMORY_GB
from geopeft.io import temporary_save_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Smallest number of datasets a radar chart is drawn for.
MIN_RADAR_AXES = 3
#: Radius of an axis's lowest value (so that the lowest trace stays visible).
INNER = 0.2


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


def radar_figure(stats: pd.DataFrame, model: str) -> Figure | None:
    """The radar chart of one backbone, or None when it has results on fewer than three datasets."""
    sub = _means(stats, TEST_MIOU)
    sub = sub[sub["model"] == model].sort_values("order")
    datasets = list(dict.fromkeys(sub["dataset"]))
    if len(datasets) < MIN_RADAR_AXES or sub["peft_type"].nunique() < 2:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 5.5))
    ax = fig.add_subplot(projection="polar")
    angles = [2 * math.pi * i / len(datasets) for i in range(len(datasets))]
    lo = sub.groupby("dataset")["mean"].min()
    hi = sub.groupby("dataset")["mean"].max()

    def radius(ds: str, value: float) -> float:
        span = float(hi[ds] - lo[ds])
        return 1.0 if span == 0 else INNER + (1 - INNER) * (value - float(lo[ds])) / span

    pefts = order_key(list(sub["peft_type"]), PEFT_ORDER)
    for peft, group in sorted(sub.groupby("peft_type", sort=False), key=lambda g: pefts[str(g[0])]):
        by_ds = dict(zip(group["dataset"], group["mean"], strict=True))
        points = [(a, radius(d, float(by_ds[d]))) for a, d in zip(angles, datasets, strict=True) if d in by_ds]
        if not points:
            continue
        closed = [*points, points[0]]
        ax.plot([p[0] for p in closed], [p[1] for p in closed], marker="o", label=str(peft))
    ax.set_xticks(angles)
    ax.set_xticklabels([f"{dataset_title(d)}\n{lo[d]:.1f}–{hi[d]:.1f}" for d in datasets], fontsize=8)
    ax.set_yticklabels([])
    ax.tick_params(axis="x", pad=14)
    ax.set_ylim(0, 1.05)
    ax.set_title(model)
    ax.legend(loc="upper right", bbox_to_anchor=(1.3, 1.1), fontsize=8)
    return fig


def bar_figure(stats: pd.DataFrame) -> Figure | None:
    """Test mIoU mean ± std per (model, method), one panel per dataset; None without any result."""
    sub = _means(stats, TEST_MIOU).sort_values("order")
    datasets = list(dict.fromkeys(sub["dataset"]))
    if not datasets:
        return None
    from matplotlib.figure import Figure

    rows = list(dict.fromkeys(zip(stats["model"], stats["peft_type"], strict=True)))
    models = order_key([m for m, _ in rows], MODEL_ORDER)
    pefts = order_key([p for _, p in rows], PEFT_ORDER)
    rows.sort(key=lambda r: (models[r[0]], pefts[r[1]]))
    fig = Figure(figsize=(max(4.0, 0.35 * len(rows) + 2), 2.6 * len(datasets)))
    axes = fig.subplots(len(datasets), 1, squeeze=False)[:, 0]
    for ax, ds in zip(axes, datasets, strict=True):
        by_row = {
            (m, p): (mu, sd)
            for m, p, mu, sd in sub[sub["dataset"] == ds][["model", "peft_type", "mean", "std"]].itertuples(
                index=False
            )
        }
        heights = [by_row.get(r, (math.nan, math.nan))[0] for r in rows]
        errors = [0.0 if math.isnan(by_row.get(r, (0.0, 0.0))[1]) else by_row.get(r, (0.0, 0.0))[1] for r in rows]
        ax.bar(range(len(rows)), heights, yerr=errors, capsize=3, color="tab:blue")
        ax.set_title(dataset_title(ds), fontsize=9)
        ax.set_ylabel("test mIoU (%)")
        finite = [h for h in heights if not math.isnan(h)]
        ax.set_ylim(max(0.0, min(finite) - 5), min(100.0, max(finite) + 5))
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([f"{m} / {p}" for m, p in rows], rotation=60, ha="right", fontsize=7)
    fig.tight_layout()
    return fig


def memory_figure(values: pd.DataFrame) -> Figure | None:
    """Peak memory (GB) against test mIoU per (model, method), one panel per dataset; None without data."""
    main = values[values["main"] & values[MEMORY_GB].notna() & values[TEST_MIOU].notna() & ~values["reused"]]
    if main.empty:
        return None
    means = main.groupby(["dataset", "model", "peft_type"], sort=False)[[MEMORY_GB, TEST_MIOU]].mean().reset_index()
    datasets = paper_dataset_order(list(means["dataset"]))
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * len(datasets), 3.6))
    axes = fig.subplots(1, len(datasets), squeeze=False)[0]
    markers = "osD^vP*X"
    pefts = list(dict.fromkeys(means["peft_type"]))
    for ax, ds in zip(axes, datasets, strict=True):
        for _, row in means[means["dataset"] == ds].iterrows():
            marker = markers[pefts.index(row["peft_type"]) % len(markers)]
            ax.scatter(row[MEMORY_GB], row[TEST_MIOU], marker=marker)
            ax.annotate(f"{row['model']} / {row['peft_type']}", (row[MEMORY_GB], row[TEST_MIOU]), fontsize=6)
        ax.set_title(dataset_title(ds), fontsize=9)
        ax.set_xlabel("peak memory (GB)")
        ax.set_ylabel("test mIoU (%)")
    fig.tight_layout()
    return fig


def write_figures(
    stats: pd.DataFrame | None, values: pd.DataFrame, out_dir: str | Path
) -> tuple[list[Path], list[str]]:
    """Draw every figure into ``out_dir`` (created when missing).

    Args:
        stats: the frame from :func:`analysis.paper.paper_stats` (None: no main run, no radar or bars).
        values: the frame from :func:`analysis.paper.cell_values`.
        out_dir: where the PDF and PNG files go.

    Returns:
        The PDF paths written (each has a PNG twin), and notes on figures left out.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    notes: list[str] = []
    figures: list[tuple[str, Figure | None, str]] = []
    if stats is not None:
        models = order_key(list(stats["model"]), MODEL_ORDER)
        for model in sorted(dict.fromkeys(stats["model"]), key=models.__getitem__):
            why = f"radar {model}: fewer than {MIN_RADAR_AXES} datasets or fewer than 2 methods with results"
            figures.append((f"radar_{slug(str(model))}", radar_figure(stats, str(model)), why))
        figures.append(("bars", bar_figure(stats), "bars: no test mIoU"))
    figures.append(("memory_miou", memory_figure(values), "memory_miou: no run with both memory and test mIoU"))
    for stem, fig, why in figures:
        if fig is None:
            notes.append(why)
            continue
        written.append(save_figure(fig, out, stem)[0])
    return written, notes
