"""Collect a sweep's result files into one tidy pandas table.

Only JSON files are read (``manifest.json``, ``cells/<cell_id>/result.json | failed.json | spec.json``), so
this module never imports torch. The table has one row per cell x region x metric (the GEO-Bench
convention) and carries every spec field (bands and options as strings, JSON for options), the train summary
and the parameter counts; it is regenerated from the files, never edited by hand.

Which cells are collected:
    * With a manifest (passed in, or ``<root>/manifest.json``), exactly the manifest's cells, in manifest
      order. Cell directories that the manifest does not list (left over from an earlier grid) are ignored.
    * Without one, every directory under ``<root>/cells/``, sorted by cell id.

Status of a cell:
    * ``success``: ``result.json`` with status ``success`` (it wins over a ``failed.json`` left by an
      earlier attempt).
    * ``failed``: ``failed.json``, or a ``result.json`` whose status is ``failed`` or ``canceled``; the
      ``reason`` column says why (``canceled`` for a canceled cell).
    * ``missing``: neither file (never run, still running, or killed before writing).

Rows of a cell without a result: its value is NaN and its regions and metrics are copied from the
successful cells of the same dataset, so a failed seed sits in the same table cell as its siblings. When
no cell of that dataset succeeded, its regions are unknown: the cell gets one row per scalar metric
(``miou``, ``accuracy``, ``loss``) with ``region`` NaN (shown as an em-dash in tables).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from geopeft.errors import GeopeftError
from geopeft.io import atomic_write_text, read_json, temporary_save_path
from geopeft.paths import CellPaths, SweepPaths
from geopeft.result import CellResult, check_schema

#: Metrics of every region besides the per-class IoUs ``iou_<class index>``.
SCALAR_METRICS = ("miou", "accuracy", "loss")

#: Train-summary columns of a cell (NaN/NA for cells without a result).
TRAIN_COLUMNS = (
    "epochs_run",
    "best_epoch",
    "wall_time_s",
    "time_per_epoch_s",
    "samples_per_s",
    "peak_memory_mb",
    "data_wait_fraction",
    "device",
    "world_size",
)

#: Columns of the tidy table, in order.
TIDY_COLUMNS = (
    "cell_id",
    "slug",
    "status",
    "model",
    "backbone",
    "bands",
    "weights",
    "metadata",
    "method",
    "tuning_options",
    "decoder",
    "decoder_options",
    "dataset",
    "seed",
    "lr",
    "batch_size",
    "max_epochs",
    "patience",
    "lr_patience",
    "lr_factor",
    "weight_decay",
    "precision",
    "strategy",
    "activation_checkpointing",
    "region",
    "metric",
    "value",
    "n",
    *TRAIN_COLUMNS,
    "trainable_params",
    "total_params",
    "reason",
)

#: The ``train`` section of a spec, one column each.
TRAIN_SPEC_COLUMNS = TIDY_COLUMNS[14:24]
#: Columns of a cell's settings apart from its seed: cells equal in all of them are seeds of one experiment.
SETTING_COLUMNS = tuple(c for c in TIDY_COLUMNS[3:24] if c != "seed")

#: Integer columns, stored as pandas' nullable ``Int64`` (missing where a cell has no result).
INT_COLUMNS = (
    "seed",
    "batch_size",
    "max_epochs",
    "patience",
    "lr_patience",
    "n",
    "epochs_run",
    "best_epoch",
    "world_size",
    "trainable_params",
    "total_params",
)
FLOAT_COLUMNS = (
    "lr",
    "lr_factor",
    "weight_decay",
    "value",
    "wall_time_s",
    "time_per_epoch_s",
    "samples_per_s",
    "peak_memory_mb",
    "data_wait_fraction",
)


@dataclass(frozen=True)
class _Cell:
    """One cell as found on disk."""

    cell_id: str
    slug: str | None
    spec: Mapping[str, Any]
    status: str
    result: CellResult | None
    reason: str | None


def _load_manifest(sweep: SweepPaths, manifest: Mapping[str, Any] | None) -> list[Mapping[str, Any]] | None:
    """Return the manifest's cell entries, or None when there is no manifest."""
    where = str(sweep.manifest)
    if manifest is None:
        if not sweep.manifest.exists():
            return None
        manifest = read_json(sweep.manifest)
        if not isinstance(manifest, Mapping):
            raise GeopeftError(f"{where}: expected a JSON object with a 'cells' list; replan the sweep")
    else:
        where = "the manifest passed to collect()"
    cells = manifest.get("cells")
    if not isinstance(cells, list):
        raise GeopeftError(f"{where}: 'cells' must be a list of {{index, cell_id, slug, spec}}; replan the sweep")
    for i, entry in enumerate(cells):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("cell_id"), str):
            raise GeopeftError(f"{where}: cells[{i}] has no string 'cell_id'; replan the sweep")
    return cells


def _read_cell(paths: CellPaths, cell_id: str, slug: str | None, spec: Mapping[str, Any] | None) -> _Cell:
    """Read the status, result and spec of one cell directory."""
    for path in (paths.result, paths.failed):
        if not path.exists():
            continue
        d = read_json(path)
        if not isinstance(d, dict):
            raise GeopeftError(f"{path}: expected a JSON object; delete it and rerun the cell")
        check_schema(d, str(path))
        if d.get("cell_id", cell_id) != cell_id:
            raise GeopeftError(
                f"{path}: cell_id {d.get('cell_id')!r} does not match its directory {cell_id!r}; "
                "the file belongs to another cell: delete it and rerun the cell"
            )
        slug = slug or d.get("slug")
        if path == paths.result and d.get("status") == "success":
            result = CellResult.from_dict(d, str(path))
            return _Cell(cell_id, slug, spec or result.spec, "success", result, None)
        status = d.get("status")
        reason = str(d.get("reason") or ("canceled" if status == "canceled" else "error"))
        file_spec = d.get("spec")
        return _Cell(cell_id, slug, spec or _spec_file(paths, file_spec), "failed", None, reason)
    return _Cell(cell_id, slug, spec or _spec_file(paths, None), "missing", None, None)


def _spec_file(paths: CellPaths, fallback: Any) -> Mapping[str, Any]:
    """The spec of a cell without a manifest entry: ``fallback`` if a mapping, else ``spec.json``, else {}."""
    if isinstance(fallback, Mapping):
        return fallback
    if paths.spec.exists():
        spec = read_json(paths.spec)
        if isinstance(spec, Mapping):
            return spec
    return {}


def _section(spec: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = spec.get(key)
    return value if isinstance(value, Mapping) else {}


def _model_label(model: Mapping[str, Any]) -> Any:
    """The model as tables show it: its name, plus ``+kind`` per metadata kind fed (``ModelSpec.label``)."""
    metadata = model.get("metadata") or []
    name = model.get("name")
    return "".join([str(name), *(f"+{kind}" for kind in metadata)]) if metadata and name is not None else name


def _joined(values: Any) -> str | None:
    """A list of names (bands, metadata kinds) as one comma-separated string; None when empty or absent."""
    if isinstance(values, (list, tuple)) and values:
        return ",".join(str(v) for v in values)
    return None


def _options_json(options: Any) -> str | None:
    """Method or decoder options as canonical JSON (sorted keys); None when there are none."""
    return json.dumps(options, sort_keys=True) if isinstance(options, Mapping) and options else None


def _param(params: Mapping[str, Any], name: str) -> Any:
    """``params['trainable']`` or ``params['trainable_params']`` (either spelling is read)."""
    return params.get(name, params.get(f"{name}_params"))


def _cell_columns(cell: _Cell) -> dict[str, Any]:
    """The columns every row of a cell shares: every spec field, the train summary, the parameter counts."""
    spec = cell.spec
    model, tuning, decoder = _section(spec, "model"), _section(spec, "tuning"), _section(spec, "decoder")
    train = _section(spec, "train")
    cols: dict[str, Any] = {
        "cell_id": cell.cell_id,
        "slug": cell.slug,
        "status": cell.status,
        "model": _model_label(model),
        "backbone": model.get("name"),
        "bands": _joined(model.get("bands")),
        "weights": model.get("weights"),
        "metadata": _joined(model.get("metadata")),
        "method": tuning.get("method"),
        "tuning_options": _options_json(tuning.get("options")),
        "decoder": decoder.get("name"),
        "decoder_options": _options_json(decoder.get("options")),
        "dataset": spec.get("dataset"),
        "seed": spec.get("seed"),
        **{key: train.get(key) for key in TRAIN_SPEC_COLUMNS},
        "activation_checkpointing": bool(train.get("activation_checkpointing", False)),  # left out when false
        **dict.fromkeys(TRAIN_COLUMNS),
        "trainable_params": None,
        "total_params": None,
        "reason": cell.reason,
    }
    if cell.result is not None:
        t = cell.result.train
        cols.update({key: getattr(t, key) for key in TRAIN_COLUMNS})
        cols.update(
            trainable_params=_param(cell.result.params, "trainable"),
            total_params=_param(cell.result.params, "total"),
        )
    return cols


def _success_rows(cell: _Cell) -> list[dict[str, Any]]:
    """One row per region x metric of a successful cell."""
    if cell.result is None:
        return []
    base = _cell_columns(cell)
    rows = []
    for region, m in cell.result.regions.items():
        values: dict[str, float | None] = {"miou": m.miou, "accuracy": m.accuracy, "loss": m.loss}
        values.update({f"iou_{i}": v for i, v in enumerate(m.iou_per_class)})  # None (-> NaN): class absent
        rows += [{**base, "region": region, "metric": k, "value": v, "n": m.n} for k, v in values.items()]
    return rows


def _placeholder_rows(cell: _Cell, pairs: list[tuple[str | None, str]]) -> list[dict[str, Any]]:
    """NaN rows of a failed or missing cell, one per known (region, metric) of its dataset."""
    base = _cell_columns(cell)
    return [{**base, "region": region, "metric": metric, "value": None, "n": None} for region, metric in pairs]


def _typed(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> DataFrame with the tidy columns and dtypes."""
    df = pd.DataFrame.from_records(rows, columns=list(TIDY_COLUMNS))
    for col in INT_COLUMNS:
        df[col] = df[col].astype("Int64")
    for col in FLOAT_COLUMNS:
        df[col] = df[col].astype("float64")
    return df


def collect(root: str | Path, manifest: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Read every cell of a sweep into the tidy table (see the module docstring for the rules).

    Args:
        root: the sweep directory (``<root>/manifest.json``, ``<root>/cells/``).
        manifest: the parsed manifest; read from ``<root>/manifest.json`` when omitted.

    Returns:
        One row per cell x region x metric with the columns :data:`TIDY_COLUMNS`. Metric values are
        fractions as written by the cell (IoU and accuracy in [0, 1]); ``value`` and ``n`` are NaN/NA
        for failed and missing cells.

    Raises:
        GeopeftError: ``root`` is not a sweep directory, or a manifest or result file is malformed.
    """
    sweep = SweepPaths(Path(root))
    entries = _load_manifest(sweep, manifest)
    if entries is None:
        if not sweep.cells_dir.is_dir():
            raise GeopeftError(
                f"{sweep.root}: not a sweep directory (no manifest.json and no cells/); "
                "give the directory that `geopeft sweep` wrote"
            )
        ids = sorted(p.name for p in sweep.cells_dir.iterdir() if p.is_dir())
        entries = [{"cell_id": cell_id} for cell_id in ids]
    cells = []
    for entry in entries:
        if entry.get("in_grid", True) is False:
            continue  # planned by an earlier version of the grid file: see outside_grid()
        spec = entry.get("spec")
        slug = entry.get("slug")
        cell_id = str(entry["cell_id"])
        cells.append(
            _read_cell(sweep.cell(cell_id), cell_id, slug if isinstance(slug, str) else None, spec if spec else None)
        )
    rows: list[dict[str, Any]] = []
    pairs: dict[Any, list[tuple[str | None, str]]] = {}
    for cell in cells:
        new = _success_rows(cell)
        known = pairs.setdefault(cell.spec.get("dataset"), [])
        for row in new:
            if (row["region"], row["metric"]) not in known:
                known.append((row["region"], row["metric"]))
        rows += new
    for cell in cells:
        if cell.status != "success":
            rows += _placeholder_rows(cell, pairs.get(cell.spec.get("dataset")) or [(None, m) for m in SCALAR_METRICS])
    order = {cell.cell_id: i for i, cell in enumerate(cells)}
    rows.sort(key=lambda row: order[row["cell_id"]])  # stable: keeps region/metric order inside a cell
    return _typed(rows)


def outside_grid(root: str | Path) -> list[str]:
    """The cells with a result that the current grid no longer holds (slugs), which :func:`collect` leaves out.

    The manifest is append-only: after a grid edit, cells of the earlier grid stay in it, marked ``in_grid:
    false``. Their results stay on disk, but tables describe the grid as it is now.
    """
    sweep = SweepPaths(Path(root))
    entries = _load_manifest(sweep, None) or []
    return [
        str(entry.get("slug") or entry["cell_id"])
        for entry in entries
        if entry.get("in_grid", True) is False and sweep.cell(str(entry["cell_id"])).result.exists()
    ]


def write_tidy(df: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Write the tidy table as ``tidy.csv`` (and ``tidy.parquet`` when pyarrow is importable), atomically.

    The Parquet twin is skipped quietly when pyarrow is not installed: it is not a geopeft dependency, and
    the CSV holds the same data.

    Args:
        df: the table from :func:`collect`.
        out_dir: directory to write into (created when missing).

    Returns:
        The paths written, CSV first.
    """
    out = Path(out_dir)
    csv = out / "tidy.csv"
    atomic_write_text(csv, df.to_csv(index=False))
    written = [csv]
    if importlib.util.find_spec("pyarrow") is not None:
        parquet = out / "tidy.parquet"
        with temporary_save_path(parquet) as tmp:
            df.to_parquet(tmp, index=False)
        written.append(parquet)
    return written
