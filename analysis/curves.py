"""Training curves: validation loss and mIoU per epoch of every method, one figure per dataset x backbone.

For each dataset and backbone (model label) with successful main runs (:func:`analysis.paper.cell_values`), the
figure ``curves_<dataset>_<model>`` has two panels, validation loss and validation mIoU per epoch, one line per
method: the mean over the seeds that reached the epoch, with a band of ± one std where two or more did. A star
marks each seed's best epoch (the least validation loss; its checkpoint is the one tested) on its method's line.
The data is each cell's ``metrics.jsonl`` (:mod:`analysis.history`); matplotlib is imported only to draw.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from analysis.history import best_epochs, read_history
from analysis.labels import MODEL_ORDER, PEFT_ORDER, dataset_title, order_key, paper_dataset_order
from analysis.latex import escape_latex
from analysis.plots import FigureFile, method_style, save_figure, seeds_text, slug

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CAPTION = (
    r"Training curves of {model} on {dataset}: validation loss (left) and validation mIoU (right, \%) per epoch "
    r"of every method; lines: mean over {seeds}, bands: $\pm$ std (where two or more seeds reached the epoch); "
    r"stars: each seed's best epoch (least validation loss, whose checkpoint is tested)."
)
PANELS = (("val_loss", "validation loss"), ("val_miou", "validation mIoU (%)"))


def curve_frame(values: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """The history of the successful main runs, labelled with ``dataset``, ``model`` and ``peft_type``."""
    main = values[values["main"] & ~values["reused"] & (values["status"] == "success")]
    labels = main[["cell_id", "dataset", "model", "peft_type"]].drop_duplicates("cell_id")
    return history.merge(labels, on="cell_id", how="inner")


def curves_figure(frame: pd.DataFrame, best: dict[str, int]) -> Figure:
    """The two panels of one dataset x backbone (``frame``: its rows of :func:`curve_frame`)."""
    from matplotlib.figure import Figure

    pefts = list(dict.fromkeys(frame["peft_type"]))
    pefts.sort(key=order_key(pefts, PEFT_ORDER).__getitem__)
    style = method_style(pefts)
    fig = Figure(figsize=(8.0, 2.7))
    axes = fig.subplots(1, 2)
    for ax, (column, title) in zip(axes, PANELS, strict=True):
        for peft in pefts:
            runs = frame[frame["peft_type"] == peft]
            per_epoch = runs.groupby("epoch")[column].agg(["mean", "std", "count"])
            colour, marker = style[peft]
            ax.plot(per_epoch.index, per_epoch["mean"], color=colour, marker=marker, markersize=3, label=peft)
            band = per_epoch[per_epoch["count"] > 1]
            if not band.empty:
                low, high = band["mean"] - band["std"], band["mean"] + band["std"]
                ax.fill_between(band.index, low, high, color=colour, alpha=0.2, linewidth=0)
            stars = sorted({best[c] for c in runs["cell_id"].unique() if c in best} & set(per_epoch.index))
            ax.scatter(
                stars, per_epoch.loc[stars, "mean"], marker="*", s=90, color=colour, edgecolors="black", zorder=3
            )
        ax.set_xlabel("epoch")
        ax.set_ylabel(title)
        last = int(frame["epoch"].max())
        ax.set_xlim(0.5, last + 0.5)
        if last <= 12:
            ax.set_xticks(range(1, last + 1))
        else:
            ax.xaxis.get_major_locator().set_params(integer=True)
    axes[1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return fig


def write_curves(
    root: str | Path, values: pd.DataFrame, recorded_best: dict[str, int | None], out_dir: str | Path
) -> tuple[list[FigureFile], list[str]]:
    """Draw the training curves of every dataset x backbone into ``out_dir``.

    Args:
        root: the sweep directory (each cell's ``metrics.jsonl`` is read from it).
        values: the frame from :func:`analysis.paper.cell_values`.
        recorded_best: cell id -> the best epoch its ``result.json`` records.
        out_dir: where the PDF and PNG files go (created when missing).

    Returns:
        The figures (section ``curves``, grouped by dataset title) and notes on what was left out.
    """
    main = values[values["main"] & ~values["reused"] & (values["status"] == "success")]
    if main.empty:
        return [], ["training curves: no successful main run"]
    frame = curve_frame(values, read_history(root, main["cell_id"]))
    if frame.empty:
        return [], ["training curves: no cell has a metrics.jsonl"]
    best = best_epochs(frame, recorded_best)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[FigureFile] = []
    models = order_key(list(frame["model"]), MODEL_ORDER)
    height = 0.4 if frame.groupby(["dataset", "model"]).ngroups <= 2 else 0.24  # a few large, many three a page
    for ds in paper_dataset_order(list(frame["dataset"])):
        on_ds = frame[frame["dataset"] == ds]
        for model in sorted(dict.fromkeys(on_ds["model"]), key=models.__getitem__):
            sub = on_ds[on_ds["model"] == model]
            seeds = seeds_text(list(sub.groupby("peft_type")["cell_id"].nunique()))
            caption = CAPTION.format(model=escape_latex(model), dataset=escape_latex(dataset_title(ds)), seeds=seeds)
            path = save_figure(curves_figure(sub, best), out, f"curves_{slug(ds)}_{slug(str(model))}")[0]
            written.append(FigureFile(path, caption, "curves", dataset_title(ds), height=height))
    missing = sorted(set(main["cell_id"]) - set(frame["cell_id"]))
    notes = [f"training curves: {len(missing)} successful cells have no metrics.jsonl"] if missing else []
    return written, notes
