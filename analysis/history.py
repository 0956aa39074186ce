"""Per-epoch records of a sweep's cells (``metrics.jsonl``): the data of the training curves.

A cell appends one JSON line per finished epoch (:mod:`geopeft.train.engine`): ``epoch``, ``train_loss``,
``val_loss``, ``val_miou`` (a fraction), ``lr``, ``epoch_s``, ``samples`` and ``partial``. A resumed cell rewrites
the file from its checkpoint's history, so each epoch is there once; should an epoch appear twice anyway, the last
line wins. A torn last line (a writer killed mid-write) is skipped (:func:`geopeft.io.read_jsonl`); a record
without the fields the curves need raises, naming the file and line.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from geopeft.errors import GeopeftError
from geopeft.io import read_jsonl
from geopeft.paths import SweepPaths

#: Columns of :func:`read_history`; ``val_miou`` in percent.
HISTORY_COLUMNS = ("cell_id", "epoch", "train_loss", "val_loss", "val_miou")
#: Fields of a record that the curves need.
NEEDED = ("epoch", "val_loss", "val_miou")


def _number(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def read_history(root: str | Path, cell_ids: Iterable[str]) -> pd.DataFrame:
    """One row per (cell, epoch) of the given cells, from each cell's ``metrics.jsonl``; cells without one add none.

    Args:
        root: the sweep directory.
        cell_ids: the cells to read.

    Returns:
        The columns :data:`HISTORY_COLUMNS`, rows in the given cell order and by epoch; ``val_miou`` in percent.

    Raises:
        GeopeftError: a record is not a JSON object with a whole ``epoch``, ``val_loss`` and ``val_miou``.
    """
    sweep = SweepPaths(Path(root))
    rows: list[dict[str, object]] = []
    for cell_id in dict.fromkeys(cell_ids):
        path = sweep.cell(cell_id).metrics_log
        by_epoch: dict[int, dict[str, object]] = {}
        for i, record in enumerate(read_jsonl(path)):
            epoch = record.get("epoch") if isinstance(record, dict) else None
            if not isinstance(record, dict) or not isinstance(epoch, int) or any(k not in record for k in NEEDED):
                raise GeopeftError(
                    f"{path}:{i + 1}: expected a JSON object with {', '.join(NEEDED)} (epoch whole); "
                    "the cell's log is damaged: rerun the cell to have it written again"
                )
            by_epoch[epoch] = {
                "cell_id": cell_id,
                "epoch": epoch,
                "train_loss": _number(record.get("train_loss")),
                "val_loss": _number(record["val_loss"]),
                "val_miou": _number(record["val_miou"]) * 100.0,
            }
        rows += [by_epoch[e] for e in sorted(by_epoch)]
    frame = pd.DataFrame.from_records(rows, columns=list(HISTORY_COLUMNS))
    return frame.astype({"epoch": "int64", "train_loss": "float64", "val_loss": "float64", "val_miou": "float64"})


def best_epochs(history: pd.DataFrame, recorded: dict[str, int | None]) -> dict[str, int]:
    """The best epoch of each cell with a history: the one its result records, else the least validation loss."""
    best: dict[str, int] = {}
    for cell_id, group in history.groupby("cell_id", sort=False):
        known = recorded.get(str(cell_id))
        if known is not None and not pd.isna(known) and int(known) in set(group["epoch"]):
            best[str(cell_id)] = int(known)
        elif group["val_loss"].notna().any():
            epochs = group["epoch"].to_numpy()
            best[str(cell_id)] = int(epochs[int(group["val_loss"].to_numpy().argmin())])
    return best
