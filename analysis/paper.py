"""The paper's tables from a tidy table, in exactly the layout of the released CSVs.

:func:`cell_values` reduces the tidy table to one row per cell holding the paper's labels and values
(test and out-of-distribution mIoU in percent, wall time in minutes, epochs trained, memory);
:func:`paper_stats` turns it into mean, std (ddof=1, as pandas computes it) and n over seeds per
(model, peft_type, metric, dataset); :func:`released_layout` pivots that into ``peft_table``,
``ood_table`` or ``epoch_and_time`` as the authors wrote them (3-level column header
``(metric, stat, dataset)``, index ``(model, peft_type)``, their row and column order), and
:func:`paper_summary` into the shape :func:`analysis.latex.latex_table` renders.

Only the paper's main runs go into these tables: no metadata, the main decoder of the backbone
(:func:`analysis.labels.main_decoder`). Rows are the (model, peft_type) pairs the sweep has cells for,
failed and missing cells included (their values are NaN: an empty CSV field, an em-dash in LaTeX).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.collect import SETTING_COLUMNS
from analysis.labels import (
    CSV_DATASET_ORDER,
    EPOCH_TABLE_PEFT_ORDER,
    EPOCHS,
    MODEL_ORDER,
    OOD_MIOU,
    OOD_REGIONS,
    PEFT_ORDER,
    REGION_LABELS,
    SIX_BAND_ONLY_DATASETS,
    SIX_BAND_TWINS,
    TEST_MIOU,
    TEST_REGION,
    TOTAL_TIME,
    dataset_from_label,
    dataset_label,
    dataset_title,
    main_decoder,
    model_label,
    order_key,
    paper_dataset_order,
    peft_label,
)
from analysis.stats import STATS
from geopeft.errors import GeopeftError

#: The released CSVs, shipped with the package (copied from IBM/peft-geofm ``data/``; see its README).
REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
#: Per-cell values besides the paper's metrics (used by the memory and time tables and the plots).
MEMORY_GB = "peak memory (GB)"
EPOCH_TIME = "time per epoch (s)"
#: Share of training step time spent waiting for the data loader, in % (not a measure of the paper's tables).
DATA_WAIT = "data wait (%)"
MEASURES = (TEST_MIOU, OOD_MIOU, TOTAL_TIME, EPOCHS, MEMORY_GB, EPOCH_TIME)
KEYS = ("model", "peft_type", "metric", "dataset")


@dataclass(frozen=True)
class Layout:
    """One released table: its metrics (header row 1), statistics (row 2), datasets and row order.

    Args:
        name: file stem, e.g. ``peft_table``.
        metrics: metric labels in column order.
        stats: statistics in column order (``mean``, ``std``).
        datasets: dataset CSV labels in column order (datasets of the sweep beyond the paper follow).
        peft_order: the order of ``peft_type`` within a model.
        six_band_rows: whether ``(6 bands)`` rows belong to the table.
        ood_only: only datasets with an out-of-distribution region are columns.
        caption: the LaTeX caption.
        decimals: printed decimals in LaTeX.
        higher_is_better: False when the smallest mean is best.
    """

    name: str
    metrics: tuple[str, ...]
    stats: tuple[str, ...]
    datasets: tuple[str, ...]
    peft_order: tuple[str, ...]
    six_band_rows: bool
    ood_only: bool
    caption: str
    decimals: int = 2
    higher_is_better: bool = True


_MARKS = r"Best mean per column in bold, second underlined; \textemdash{}: no result."
LAYOUTS: dict[str, Layout] = {
    "peft_table": Layout(
        "peft_table",
        (TEST_MIOU,),
        ("mean", "std"),
        CSV_DATASET_ORDER,
        PEFT_ORDER,
        six_band_rows=True,
        ood_only=False,
        caption=r"Test mIoU (\%) of every PEFT method, mean $\pm$ std over seeds (the paper's Table 4). " + _MARKS,
    ),
    "ood_table": Layout(
        "ood_table",
        (TEST_MIOU, OOD_MIOU),
        ("mean", "std"),
        tuple(sorted(dataset_label(d) for d in OOD_REGIONS)),
        PEFT_ORDER,
        six_band_rows=False,
        ood_only=True,
        caption=r"mIoU (\%) in distribution (test) and on the geographic hold-out set (Sen1Floods11: Bolivia; "
        r"reBEN 7k: ood), mean $\pm$ std over seeds (the paper's Table 5). " + _MARKS,
    ),
    "epoch_and_time": Layout(
        "epoch_and_time",
        (TOTAL_TIME, EPOCHS),
        ("mean",),
        CSV_DATASET_ORDER,
        EPOCH_TABLE_PEFT_ORDER,
        six_band_rows=True,
        ood_only=False,
        caption=r"Training cost: wall time per run (in the unit of the header) and epochs trained, mean $\pm$ std "
        r"over seeds. "
        r"Least per column in bold, second underlined; \textemdash{}: no result.",
        decimals=1,
        higher_is_better=False,
    ),
}


def _present(value: object) -> bool:
    return not pd.isna(value)  # type: ignore[call-overload]


def cell_values(tidy: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: paper labels, ``main`` (a main-table run), its settings and its :data:`MEASURES`.

    The rows of :func:`reuse_six_band_runs` are added (``reused`` True).

    Cells whose spec is unknown (no backbone, method or dataset: a missing cell outside any manifest) are
    left out: they cannot be placed in a table.
    """
    cells = tidy.drop_duplicates("cell_id").set_index("cell_id", drop=False)
    cells = cells[cells["backbone"].map(_present) & cells["method"].map(_present) & cells["dataset"].map(_present)]
    out = cells[["cell_id", "status", "seed", *SETTING_COLUMNS]].copy()
    out["model"] = [model_label(str(b), bands) for b, bands in zip(cells["backbone"], cells["bands"], strict=True)]
    out["peft_type"] = [peft_label(str(m)) for m in cells["method"]]
    out["dataset_name"] = cells["dataset"].astype(str)
    out["dataset"] = [dataset_label(str(d)) for d in cells["dataset"]]
    out["main"] = [
        not _present(meta) and dec == main_decoder(str(b))
        for b, dec, meta in zip(cells["backbone"], cells["decoder"], cells["metadata"], strict=True)
    ]
    miou = tidy[tidy["metric"] == "miou"].drop_duplicates(["cell_id", "region"]).set_index(["cell_id", "region"])
    value = miou["value"].astype(float) * 100.0

    def region_miou(cell_id: str, region: str | None) -> float:
        return float(value.get((cell_id, region), float("nan"))) if region else float("nan")

    out[TEST_MIOU] = [region_miou(c, TEST_REGION) for c in out["cell_id"]]
    out[OOD_MIOU] = [
        region_miou(c, OOD_REGIONS.get(d)) for c, d in zip(out["cell_id"], out["dataset_name"], strict=True)
    ]
    out[TOTAL_TIME] = cells["wall_time_s"].astype(float) / 60.0
    out[EPOCHS] = cells["epochs_run"].astype(float)
    out[MEMORY_GB] = cells["peak_memory_mb"].astype(float) / 1024.0
    out[EPOCH_TIME] = cells["time_per_epoch_s"].astype(float)
    out[DATA_WAIT] = cells["data_wait_fraction"].astype(float) * 100.0
    return reuse_six_band_runs(out.reset_index(drop=True))


def _check_one_cell_per_seed(values: pd.DataFrame) -> None:
    """Raise when two cells of one (model, peft_type, dataset) share a seed: they differ in a setting."""
    dup = values[values.duplicated(["model", "peft_type", "dataset", "seed"], keep=False)]
    if dup.empty:
        return
    first = dup.iloc[0]
    group = dup[(dup["model"] == first["model"]) & (dup["peft_type"] == first["peft_type"])]
    group = group[(group["dataset"] == first["dataset"]) & (group["seed"] == first["seed"])]
    differ = [c for c in SETTING_COLUMNS if group[c].nunique(dropna=False) > 1]
    raise GeopeftError(
        f"cells {', '.join(group['cell_id'])}: {first['model']} / {first['peft_type']} on {first['dataset']} "
        f"seed {first['seed']} appears more than once (they differ in {', '.join(differ) or 'nothing'}); "
        "make one sweep per setting (e.g. tabulate the LR search and the final runs apart)"
    )


def paper_stats(values: pd.DataFrame, measures: tuple[str, ...] = MEASURES) -> pd.DataFrame:
    """Mean, std (ddof=1) and n over seeds of the main runs, one row per (model, peft_type, metric, dataset).

    Args:
        values: the frame from :func:`cell_values`.
        measures: which of :data:`MEASURES` to aggregate.

    Returns:
        Columns :data:`KEYS` + ``mean``, ``std``, ``n``; pairs whose cells all lack a value have NaN and n 0.

    Raises:
        GeopeftError: two main cells of one table cell share a seed.
    """
    main = values[values["main"]]
    _check_one_cell_per_seed(main[~main["reused"]])
    long = main.melt(id_vars=["model", "peft_type", "dataset"], value_vars=list(measures), var_name="metric")
    ood_labels = {dataset_label(d) for d in OOD_REGIONS}
    long = long[(long["metric"] != OOD_MIOU) | long["dataset"].isin(ood_labels)]
    grouped = long.groupby(list(KEYS), sort=False)["value"]
    stats = pd.concat([grouped.mean(), grouped.std(ddof=1), grouped.count()], axis=1, keys=list(STATS))
    stats = stats.reset_index()
    stats["n"] = stats["n"].astype("int64")
    return stats


def reuse_six_band_runs(values: pd.DataFrame) -> pd.DataFrame:
    """Let a ``(6 bands)`` main run stand for its plain twin (and back) where only six HLS bands exist.

    On :data:`~analysis.labels.SIX_BAND_ONLY_DATASETS` both rows are the same experiment, so the authors
    reused one set of runs for both. A copy (relabelled, ``reused`` True) is added for a (model, peft_type)
    that the sweep has cells for but without a successful main cell on that dataset.
    """
    values = values.assign(reused=False)
    six_only = {dataset_label(d) for d in SIX_BAND_ONLY_DATASETS}
    main = values[values["main"]]
    pairs = set(zip(main["model"], main["peft_type"], strict=True))
    done = main[main["status"] == "success"]
    have = set(zip(done["model"], done["peft_type"], done["dataset"], strict=True))
    copies = []
    for plain, six in SIX_BAND_TWINS.items():
        for model, twin in ((plain, six), (six, plain)):
            src = done[(done["model"] == model) & done["dataset"].isin(six_only)]
            for (peft, ds), group in src.groupby(["peft_type", "dataset"], sort=False):
                if (twin, peft) in pairs and (twin, peft, ds) not in have:
                    copies.append(group.assign(model=twin, reused=True))
    return pd.concat([values, *copies], ignore_index=True) if copies else values


def _layout_datasets(stats: pd.DataFrame, layout: Layout) -> list[str]:
    extra = [d for d in dict.fromkeys(stats["dataset"]) if d not in layout.datasets]
    if layout.ood_only:
        extra = [d for d in extra if dataset_from_label(d) in OOD_REGIONS]
    return [*layout.datasets, *extra]


def _layout_rows(stats: pd.DataFrame, layout: Layout, datasets: list[str]) -> list[tuple[str, str]]:
    """The (model, peft_type) pairs with a cell on one of the table's datasets, in the table's order."""
    sub = stats[stats["dataset"].isin(datasets)]
    rows = list(dict.fromkeys(zip(sub["model"], sub["peft_type"], strict=True)))
    if not layout.six_band_rows:
        rows = [r for r in rows if r[0] not in SIX_BAND_TWINS.values()]
    models = order_key([m for m, _ in rows], MODEL_ORDER)
    pefts = order_key([p for _, p in rows], layout.peft_order)
    return sorted(rows, key=lambda r: (models[r[0]], pefts[r[1]]))


def released_layout(stats: pd.DataFrame, name: str) -> pd.DataFrame:
    """``stats`` (from :func:`paper_stats`) as the released CSV ``name`` lays it out.

    ``to_csv()`` of the result is written like the authors' file, and it reads back with
    ``pd.read_csv(path, header=[0, 1, 2], index_col=[0, 1])``.

    Raises:
        GeopeftError: ``name`` is not one of :data:`LAYOUTS`.
    """
    layout = _layout(name)
    datasets = _layout_datasets(stats, layout)
    rows = _layout_rows(stats, layout, datasets)
    lookup = stats.set_index(list(KEYS))
    columns = [(metric, stat, ds) for metric in layout.metrics for stat in layout.stats for ds in datasets]
    data = {col: [float(lookup[col[1]].get((m, p, col[0], col[2]), float("nan"))) for m, p in rows] for col in columns}
    frame = pd.DataFrame(data, index=pd.MultiIndex.from_tuples(rows, names=["model", "peft_type"]))
    frame.columns = pd.MultiIndex.from_tuples(columns, names=[None, None, "dataset"])
    return frame


def paper_summary(stats: pd.DataFrame, name: str) -> pd.DataFrame:
    """Table ``name`` in the shape of :func:`analysis.stats.summarize`, with the labels LaTeX shows.

    Index ``(Model, PEFT)``; columns ``(dataset, region, stat)`` for ``ood_table``, ``(measure, dataset,
    stat)`` for ``epoch_and_time`` and ``(dataset, stat)`` for ``peft_table``, datasets in the paper's
    order (Sen1Floods11, Burn Scars, reBEN 7k, m-Cashew, m-SA-Crop).
    """
    layout = _layout(name)
    datasets = _layout_datasets(stats, layout)
    datasets = paper_dataset_order(datasets)
    rows = _layout_rows(stats, layout, datasets)
    lookup = stats.set_index(list(KEYS))
    data: dict[tuple[str, ...], list[float]] = {}
    pairs = [(m, d) for d in datasets for m in layout.metrics] if layout.ood_only else None
    for metric, ds in pairs or [(m, d) for m in layout.metrics for d in datasets]:
        for stat in STATS:
            col = [lookup[stat].get((m, p, metric, ds), 0 if stat == "n" else float("nan")) for m, p in rows]
            data[(*_header(layout, metric, ds), stat)] = [float(v) for v in col]
    frame = pd.DataFrame(data, index=pd.MultiIndex.from_tuples(rows, names=["Model", "PEFT"]))
    frame.columns = pd.MultiIndex.from_tuples(list(data))
    frame[[c for c in frame.columns if c[-1] == "n"]] = frame[[c for c in frame.columns if c[-1] == "n"]].astype(
        "int64"
    )
    return frame


def _header(layout: Layout, metric: str, ds: str) -> tuple[str, ...]:
    """The LaTeX column header of one (metric, dataset) of a layout, without the statistic."""
    if layout.ood_only:
        region = TEST_REGION if metric == TEST_MIOU else OOD_REGIONS.get(dataset_from_label(ds), "ood")
        return dataset_title(ds), REGION_LABELS.get(region, region)
    if len(layout.metrics) > 1:
        return {TOTAL_TIME: "Time (min)", EPOCHS: "Epochs"}.get(metric, metric), dataset_title(ds)
    return (dataset_title(ds),)


def _layout(name: str) -> Layout:
    if name not in LAYOUTS:
        raise GeopeftError(f"unknown paper table {name!r}; choose one of {', '.join(LAYOUTS)}")
    return LAYOUTS[name]


def read_released(name: str, directory: Path = REFERENCE_DIR) -> pd.DataFrame:
    """A released table (``peft_table``, ``ood_table``, ``ood_table_paper``, ``epoch_and_time``) as a frame.

    Raises:
        GeopeftError: the file is missing.
    """
    path = directory / f"{name}.csv"
    if not path.is_file():
        raise GeopeftError(f"{path}: released table not found; reinstall geopeft (it ships analysis/reference/)")
    return pd.read_csv(path, header=[0, 1, 2], index_col=[0, 1])
