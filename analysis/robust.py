"""Statistics across datasets: average rank per backbone, IQM with bootstrap CIs, delta to full fine-tuning.

* :func:`average_ranks`: within each backbone, the methods are ranked on each dataset by mean test mIoU
  (1 = best, ties share their mean rank) and the ranks averaged over the datasets (the paper's "average
  rank", spec §5.1).
* :func:`iqm_bootstrap`: the GEO-Bench aggregate (Lacoste et al. 2023, after Agarwal et al. 2021's
  rliable): every run's score is min-max normalised per dataset over all runs of the table, the
  interquartile mean (the mean of the middle 50 % of runs, ``scipy.stats.trim_mean(x, 0.25)``) is taken
  over all runs of a (model, method), and its confidence interval comes from a stratified bootstrap:
  seeds are resampled with replacement within each dataset, ``n_boot`` times.
* :func:`delta_to_full`: each method's mean minus full fine-tuning's, per backbone and dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np
import pandas as pd

from analysis.labels import FULL_FT, MODEL_ORDER, PEFT_ORDER, TEST_MIOU, order_key, paper_dataset_order


def _ordered(frame: pd.DataFrame, levels: Sequence[str]) -> pd.DataFrame:
    """Rows sorted by the paper's model and method order (other labels after, in their order)."""
    orders = {"model": MODEL_ORDER, "peft_type": PEFT_ORDER}
    keys = [order_key(list(frame[level]), orders.get(level, ())) for level in levels]
    ranks = [frame[level].map(key) for level, key in zip(levels, keys, strict=True)]
    order = np.lexsort([r.to_numpy() for r in reversed(ranks)])
    return frame.iloc[order]


def average_ranks(stats: pd.DataFrame, metric: str = TEST_MIOU) -> pd.DataFrame:
    """Average rank of each method within its backbone, over the datasets where it has a result.

    Args:
        stats: the frame from :func:`analysis.paper.paper_stats`.
        metric: the metric label to rank on (higher is better).

    Returns:
        Columns ``model``, ``peft_type``, ``rank`` (mean rank) and ``datasets`` (how many were ranked),
        in the paper's row order.
    """
    sub = stats[(stats["metric"] == metric) & (stats["n"] > 0)].copy()
    sub["rank"] = sub.groupby(["model", "dataset"])["mean"].rank(ascending=False, method="average")
    out = sub.groupby(["model", "peft_type"], sort=False)["rank"].agg(["mean", "count"]).reset_index()
    out = out.rename(columns={"mean": "rank", "count": "datasets"})
    return _ordered(out, ["model", "peft_type"]).reset_index(drop=True)


def delta_to_full(stats: pd.DataFrame, metric: str = TEST_MIOU) -> pd.DataFrame:
    """Each method's mean minus the Full FT mean of the same backbone, per dataset, and their mean.

    Returns:
        Index ``(model, peft_type)`` (Full FT rows left out), one column per dataset in ``stats``' order and
        ``mean`` (over the datasets with a delta); NaN where either side has no result.
    """
    sub = stats[stats["metric"] == metric]
    means = sub.pivot_table(index=["model", "peft_type"], columns="dataset", values="mean", sort=False)
    datasets = paper_dataset_order(list(sub["dataset"]))
    means = means.reindex(columns=datasets)
    table = {cast(tuple[str, str], key): row.to_numpy(dtype=float) for key, row in means.iterrows()}
    rows = []
    for (model, peft), row in table.items():
        if peft == FULL_FT or (model, FULL_FT) not in table:
            continue
        delta = row - table[(model, FULL_FT)]
        mean = float(np.nanmean(delta)) if np.isfinite(delta).any() else float("nan")
        rows.append({"model": model, "peft_type": peft, **dict(zip(datasets, delta, strict=True)), "mean": mean})
    out = pd.DataFrame(rows, columns=["model", "peft_type", *datasets, "mean"])
    return _ordered(out, ["model", "peft_type"]).set_index(["model", "peft_type"])


def iqm(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile mean along ``axis``: the mean after cutting ``int(0.25 n)`` values off each end."""
    x = np.sort(scores, axis=axis)
    n = x.shape[axis]
    cut = int(0.25 * n)
    return np.asarray(np.take(x, np.arange(cut, n - cut), axis=axis).mean(axis=axis))


def iqm_bootstrap(
    values: pd.DataFrame,
    metric: str = TEST_MIOU,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    normalize: bool = True,
) -> pd.DataFrame:
    """IQM over datasets and seeds per (model, peft_type), with a stratified-bootstrap confidence interval.

    Args:
        values: the frame from :func:`analysis.paper.cell_values` (main runs are used).
        metric: the measure to aggregate (higher is better).
        n_boot: bootstrap resamples.
        confidence: coverage of the percentile interval.
        seed: the generator seed (the result is deterministic).
        normalize: min-max normalise each dataset over all runs (GEO-Bench); False keeps the raw values.

    Returns:
        Columns ``model``, ``peft_type``, ``iqm``, ``ci_low``, ``ci_high``, ``runs``, ``datasets``; scores in
        [0, 1] when normalised, else in the metric's unit. Pairs without any run are left out.
    """
    sub = values[values["main"] & values[metric].notna()][["model", "peft_type", "dataset", metric]]
    scores = sub[metric].astype(float)
    if normalize:
        lo = sub.groupby("dataset")[metric].transform("min")
        span = (sub.groupby("dataset")[metric].transform("max") - lo).replace(0.0, 1.0)
        scores = (scores - lo) / span
    sub = sub.assign(score=scores)
    rng = np.random.default_rng(seed)
    alpha = (1.0 - confidence) / 2
    rows = []
    for (model, peft), group in sub.groupby(["model", "peft_type"], sort=False):
        strata = [g["score"].to_numpy() for _, g in group.groupby("dataset", sort=False)]
        resampled = np.concatenate([s[rng.integers(0, len(s), size=(n_boot, len(s)))] for s in strata], axis=1)
        boot = iqm(resampled, axis=1)
        rows.append(
            {
                "model": model,
                "peft_type": peft,
                "iqm": float(iqm(np.concatenate(strata))),
                "ci_low": float(np.quantile(boot, alpha)),
                "ci_high": float(np.quantile(boot, 1 - alpha)),
                "runs": sum(len(s) for s in strata),
                "datasets": len(strata),
            }
        )
    out = pd.DataFrame(rows, columns=["model", "peft_type", "iqm", "ci_low", "ci_high", "runs", "datasets"])
    return _ordered(out, ["model", "peft_type"]).reset_index(drop=True)
