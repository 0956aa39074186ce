"""Mean, standard deviation and count over seeds: the numeric table behind every LaTeX table.

:func:`summarize` turns the tidy table of :mod:`analysis.collect` into a wide frame with one row per
``by`` group (model, method, decoder) and, for every ``across`` group (dataset, region), the three
columns ``mean``, ``std`` and ``n``. This frame is the numeric twin of the LaTeX table and is written
as CSV next to it.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

import pandas as pd

from analysis.labels import MODEL_ORDER, PEFT_ORDER
from geopeft.errors import GeopeftError

#: Statistics per ``across`` group, the last column level of a summary.
STATS = ("mean", "std", "n")

#: Order of tuning methods in tables (the paper's: Linear Prob., VPT, LoRA, ViT Adapter, Full FT); other
#: method names follow in order of first appearance.
METHOD_ORDER = ("linear_probe", "linear_probing", "linear", "vpt", "lora", "vit_adapter", "full_ft", "full")

Key = tuple[Any, ...]


def is_percent_metric(metric: str) -> bool:
    """True for metrics reported in percent (mIoU, accuracy, per-class IoU); False for the loss."""
    return metric in ("miou", "accuracy") or metric.startswith("iou_")


def _norm(value: Any) -> Any:
    """Missing keys (NaN, None, NA) as None, so that they compare equal."""
    return None if pd.isna(value) else value


def _preference(level: str, value: Any) -> int:
    """Fixed rank of a value before its order of appearance: paper method order, ``test`` region first.

    The labelled levels ``Model`` and ``PEFT`` (:mod:`analysis.labels`) follow the paper's row order.
    """
    if value is None:
        return len(MODEL_ORDER) + len(METHOD_ORDER) + 2
    if level == "Model":
        return MODEL_ORDER.index(value) if value in MODEL_ORDER else len(MODEL_ORDER)
    if level == "PEFT":  # a label with options, "LoRA (r 4, α 4)", sorts as its method
        base = str(value).split(" (")[0]
        return PEFT_ORDER.index(base) if base in PEFT_ORDER else len(PEFT_ORDER)
    if level == "method" and value in METHOD_ORDER:
        return METHOD_ORDER.index(value)
    if level == "method":
        return len(METHOD_ORDER)
    if level == "region":
        return 0 if value == "test" else 1
    return 0


def _sorted_keys(keys: list[Key], levels: Sequence[str]) -> list[Key]:
    """Unique keys ordered level by level: fixed preference, then first appearance."""
    ranks: list[dict[Any, tuple[int, int]]] = []
    for i, level in enumerate(levels):
        seen: dict[Any, tuple[int, int]] = {}
        for key in keys:
            seen.setdefault(key[i], (_preference(level, key[i]), len(seen)))
        ranks.append(seen)
    unique = list(dict.fromkeys(keys))
    return sorted(unique, key=lambda k: tuple(ranks[i][v] for i, v in enumerate(k)))


def _check(df: pd.DataFrame, metric: str, by: Sequence[str], across: Sequence[str]) -> None:
    """Raise when the requested columns or metric are absent, or a seed would be counted twice."""
    needed = [*by, *across, "metric", "value", "seed"]
    absent = [c for c in needed if c not in df.columns]
    if absent:
        raise GeopeftError(f"summarize: column(s) {absent} not in the table; use the table from analysis.collect")
    if set(by) & set(across):
        raise GeopeftError(f"summarize: {sorted(set(by) & set(across))} given both in by and in across")
    if not (df["metric"] == metric).any():
        known = ", ".join(sorted(str(m) for m in df["metric"].dropna().unique()))
        raise GeopeftError(f"summarize: metric {metric!r} not in the table; available: {known or 'none'}")


def summarize(
    df: pd.DataFrame,
    metric: str = "miou",
    by: Sequence[str] = ("model", "method", "decoder"),
    across: Sequence[str] = ("dataset", "region"),
) -> pd.DataFrame:
    """Mean, std and number of seeds of one metric, per ``by`` row and ``across`` column group.

    Each (``by``, ``across``) group must hold at most one value per seed; cells that differ in a setting
    not named in ``by`` or ``across`` (say the learning rate) raise instead of being pooled as seeds: add
    that column to ``by``.

    Args:
        df: the tidy table from :func:`analysis.collect.collect`.
        metric: the metric to summarise (``miou``, ``accuracy``, ``loss``, ``iou_<k>``).
        by: columns that make a table row.
        across: columns that make a table column group.

    Returns:
        A frame indexed by ``by`` (a MultiIndex named after ``by``; a plain Index for one column) with
        columns ``(*across, stat)`` for ``stat`` in :data:`STATS`. ``mean`` and ``std`` (ddof=1, NaN for a
        single seed) are in percent for IoU and accuracy metrics; ``n`` counts the seeds with a value.
        Failed and missing cells count in no ``n`` but keep their group: a group without any value has NaN
        mean and std and ``n`` 0, and so has a (row, column group) pair that no cell covers. Rows put
        methods in the paper's order and the ``test`` region first; other values keep their order of
        first appearance in ``df``.

    Raises:
        GeopeftError: a column or the metric is missing, or a seed appears twice in a group.
    """
    by, across = list(by), list(across)
    if not by or not across:
        raise GeopeftError("summarize: 'by' and 'across' each need at least one column")
    _check(df, metric, by, across)
    sub = df[df["metric"] == metric]
    check_seeds(sub, by, across)
    return aggregate(sub, "value", by, across, 100.0 if is_percent_metric(metric) else 1.0)


def summarize_cells(
    df: pd.DataFrame, column: str, by: Sequence[str], across: Sequence[str], scale: float = 1.0
) -> pd.DataFrame:
    """Like :func:`summarize` for a per-cell column of the tidy table (``peak_memory_mb``, ``wall_time_s``, ...).

    Each cell counts once (its first row). ``scale`` multiplies the values (e.g. ``1 / 1024`` for GB).

    Raises:
        GeopeftError: a column is missing, or two cells of one group share a seed.
    """
    absent = [c for c in [*by, *across, column, "cell_id", "seed"] if c not in df.columns]
    if absent:
        raise GeopeftError(
            f"summarize_cells: column(s) {absent} not in the table; use the table from analysis.collect"
        )
    cells = df.drop_duplicates("cell_id")
    check_seeds(cells, by, across)
    return aggregate(cells, column, by, across, scale)


def check_seeds(sub: pd.DataFrame, by: Sequence[str], across: Sequence[str]) -> None:
    """Raise when a seed appears twice in one (by, across) group."""
    dup = sub.duplicated(subset=[*by, *across, "seed"], keep=False)
    if dup.any():
        first = sub[dup].iloc[0]
        where = ", ".join(f"{c}={first[c]!r}" for c in [*by, *across, "seed"])
        raise GeopeftError(
            f"summarize: several cells share {where}; they differ in a column that is neither in by nor "
            "in across (lr? batch_size?): add it to by"
        )


def aggregate(
    sub: pd.DataFrame, column: str, by: Sequence[str], across: Sequence[str], scale: float = 1.0
) -> pd.DataFrame:
    """Mean, std (ddof=1) and n of ``column`` (times ``scale``) per ``by`` row and ``across`` column group.

    Rows with NaN in ``column`` count in no ``n`` but keep their group. See :func:`summarize` for the shape.
    """
    by, across = list(by), list(across)
    cells: dict[Key, tuple[float, float, int]] = {}
    for raw_key, group in sub.groupby([*by, *across], dropna=False, sort=False):
        key = tuple(_norm(v) for v in (raw_key if isinstance(raw_key, tuple) else (raw_key,)))
        values = [float(v) * scale for v in group[column] if not pd.isna(v)]
        cells[key] = _mean_std(values)
    rows = _sorted_keys([k[: len(by)] for k in cells], by)
    cols = _sorted_keys([k[len(by) :] for k in cells], across)
    data: dict[tuple[Hashable, ...], list[Any]] = {}
    for col in cols:
        stats = [cells.get(row + col, (math.nan, math.nan, 0)) for row in rows]
        for i, stat in enumerate(STATS):
            data[(*col, stat)] = [s[i] for s in stats]
    index = pd.MultiIndex.from_tuples(rows, names=by) if len(by) > 1 else pd.Index([r[0] for r in rows], name=by[0])
    out = pd.DataFrame(data, index=index)
    out.columns = pd.MultiIndex.from_tuples(list(data), names=[*across, "stat"])
    for column_key in out.columns:
        out[column_key] = out[column_key].astype("int64" if column_key[-1] == "n" else "float64")
    return out


def _mean_std(values: list[float]) -> tuple[float, float, int]:
    """Mean, sample std (ddof=1; NaN below two values) and count."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan, 0
    mean = sum(values) / n
    if n == 1:
        return mean, math.nan, 1
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)), n
