"""analysis.collect: result files -> tidy table. Also home of ``make_sweep``, the synthetic sweep the
other test_analysis_* modules import."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from analysis.collect import TIDY_COLUMNS, collect, write_tidy
from geopeft.errors import GeopeftError
from geopeft.io import atomic_write_json, read_json
from geopeft.paths import SweepPaths
from geopeft.result import CellResult, RegionMetrics, TrainSummary, failure_record
from geopeft.spec import CellSpec, DecoderSpec, ModelSpec, TrainSpec, TuningSpec

DATASET = "sen1floods11"
# (method, seed) -> region -> mIoU. Hand-computed summaries are in test_analysis_stats.py.
MIOU = {
    ("lora", 0): {"test": 0.70, "bolivia": 0.60},
    ("lora", 1): {"test": 0.74, "bolivia": 0.64},
    ("full_ft", 0): {"test": 0.80, "bolivia": 0.50},
    ("full_ft", 1): {"test": 0.76, "bolivia": 0.58},
}
FAILED = ("lora", 2)
MISSING = ("vpt", 0)


def make_spec(method: str, seed: int, dataset: str = DATASET) -> CellSpec:
    return CellSpec(
        model=ModelSpec(name="prithvi_tiny"),
        tuning=TuningSpec(method=method),
        decoder=DecoderSpec(name="linear"),
        dataset=dataset,
        train=TrainSpec(lr=1e-4),
        seed=seed,
    )


def write_result(root: Path, spec: CellSpec, miou: dict[str, float]) -> None:
    regions = {
        name: RegionMetrics(
            miou=v,
            iou_per_class=(v + 0.1, v - 0.1),
            accuracy=0.9,
            loss=0.3,
            n=90 if name == "test" else 15,
            classes_present=2,
        )
        for name, v in miou.items()
    }
    result = CellResult(
        cell_id=spec.cell_id,
        slug=spec.slug,
        spec=spec.to_dict(),
        regions=regions,
        train=TrainSummary(
            best_epoch=3,
            epochs_run=5,
            wall_time_s=12.5,
            time_per_epoch_s=2.5,
            samples_per_s=10.0,
            peak_memory_mb=512.0,
            device="cpu",
            world_size=1,
            data_wait_fraction=0.1,
        ),
        params={"trainable": 1000, "total": 50000},
        provenance={},
    )
    atomic_write_json(SweepPaths(root).cell(spec.cell_id).result, result.to_dict())


def write_failed(root: Path, spec: CellSpec) -> None:
    record = failure_record(spec.cell_id, spec.slug, "oom", "CUDA out of memory", "...", 1, {})
    atomic_write_json(SweepPaths(root).cell(spec.cell_id).failed, record)


def make_sweep(root: Path, miou: dict[tuple[str, int], dict[str, float]] | None = None) -> dict[str, Any]:
    """2 methods x 2 seeds on sen1floods11 (test, bolivia) + one failed and one missing cell."""
    miou = MIOU if miou is None else miou
    specs = [make_spec(m, s) for m, s in [*miou, FAILED, MISSING]]
    for (method, seed), values in miou.items():
        write_result(root, make_spec(method, seed), values)
    write_failed(root, make_spec(*FAILED))
    manifest = {
        "cells": [{"index": i, "cell_id": s.cell_id, "slug": s.slug, "spec": s.to_dict()} for i, s in enumerate(specs)]
    }
    atomic_write_json(SweepPaths(root).manifest, manifest)
    return manifest


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    make_sweep(tmp_path)
    return tmp_path


def test_columns_and_row_counts(sweep: Path) -> None:
    df = collect(sweep)
    assert tuple(df.columns) == TIDY_COLUMNS
    # 6 cells x 2 regions x (miou, accuracy, loss, iou_0, iou_1)
    assert len(df) == 6 * 2 * 5
    per_status = df.groupby("status").size().to_dict()
    assert per_status == {"success": 40, "failed": 10, "missing": 10}
    assert set(df["region"]) == {"test", "bolivia"}
    assert set(df["metric"]) == {"miou", "accuracy", "loss", "iou_0", "iou_1"}
    assert df["cell_id"].nunique() == 6


def test_values_and_cell_columns(sweep: Path) -> None:
    df = collect(sweep)
    row = df[(df["method"] == "lora") & (df["seed"] == 1) & (df["region"] == "bolivia") & (df["metric"] == "miou")]
    assert len(row) == 1
    r = row.iloc[0]
    assert r["value"] == pytest.approx(0.64)
    assert r["n"] == 15
    assert (r["model"], r["decoder"], r["dataset"], r["status"]) == ("prithvi_tiny", "linear", DATASET, "success")
    assert r["lr"] == pytest.approx(1e-4)
    assert r["batch_size"] == 8
    assert (r["epochs_run"], r["best_epoch"], r["trainable_params"], r["total_params"]) == (5, 3, 1000, 50000)
    assert r["wall_time_s"] == pytest.approx(12.5)
    iou0 = df[(df["cell_id"] == r["cell_id"]) & (df["region"] == "test") & (df["metric"] == "iou_0")]
    assert iou0["value"].iloc[0] == pytest.approx(0.84)


def test_failed_and_missing_cells_are_kept_as_nan(sweep: Path) -> None:
    df = collect(sweep)
    failed = df[df["status"] == "failed"]
    missing = df[df["status"] == "missing"]
    assert set(failed["method"]) == {"lora"} and set(failed["seed"]) == {2}
    assert set(failed["reason"]) == {"oom"}
    assert set(missing["method"]) == {"vpt"}
    for part in (failed, missing):
        assert part["value"].isna().all()
        assert part["n"].isna().all()
        assert part["epochs_run"].isna().all()
        assert set(part["region"]) == {"test", "bolivia"}  # borrowed from the dataset's successful cells


def test_regions_unknown_when_no_cell_of_the_dataset_succeeded(tmp_path: Path) -> None:
    spec = make_spec("lora", 0, dataset="burn_scars")
    atomic_write_json(
        SweepPaths(tmp_path).manifest,
        {"cells": [{"index": 0, "cell_id": spec.cell_id, "slug": spec.slug, "spec": spec.to_dict()}]},
    )
    df = collect(tmp_path)
    assert len(df) == 3
    assert list(df["metric"]) == ["miou", "accuracy", "loss"]
    assert df["region"].isna().all()
    assert set(df["status"]) == {"missing"}


def test_manifest_argument_and_order(sweep: Path) -> None:
    manifest = make_sweep(sweep)
    SweepPaths(sweep).manifest.unlink()
    df = collect(sweep, manifest=manifest)
    order = list(dict.fromkeys(df["cell_id"]))
    assert order == [c["cell_id"] for c in manifest["cells"]]


def test_without_manifest_scans_cell_dirs(sweep: Path) -> None:
    SweepPaths(sweep).manifest.unlink()
    df = collect(sweep)
    # the missing cell has no directory, so only 5 cells are found; the failed one has no spec anywhere
    # (no manifest, no spec in failed.json, no spec.json), so its dataset and regions are unknown
    assert df["cell_id"].nunique() == 5
    failed = df[df["status"] == "failed"]
    assert list(failed["metric"]) == ["miou", "accuracy", "loss"]
    assert failed["region"].isna().all() and failed["dataset"].isna().all()
    assert (df["status"] == "success").sum() == 40


def test_without_manifest_reads_spec_json(sweep: Path) -> None:
    SweepPaths(sweep).manifest.unlink()
    spec = make_spec(*FAILED)
    atomic_write_json(SweepPaths(sweep).cell(spec.cell_id).spec, spec.to_dict())
    df = collect(sweep)
    failed = df[df["status"] == "failed"]
    assert len(failed) == 10 and set(failed["region"]) == {"test", "bolivia"}
    assert set(failed["slug"]) == {spec.slug}


def test_success_wins_over_an_old_failed_json(sweep: Path) -> None:
    spec = make_spec("lora", 0)
    write_failed(sweep, spec)
    df = collect(sweep)
    assert set(df.loc[df["cell_id"] == spec.cell_id, "status"]) == {"success"}


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(GeopeftError, match="not a sweep directory"):
        collect(tmp_path / "nowhere")
    with pytest.raises(GeopeftError, match="'cells' must be a list"):
        collect(tmp_path, manifest={"cells": 3})
    spec, other = make_spec("lora", 0), make_spec("lora", 1)
    write_result(tmp_path, other, {"test": 0.5})
    target = SweepPaths(tmp_path).cell(spec.cell_id).result
    target.parent.mkdir(parents=True)
    SweepPaths(tmp_path).cell(other.cell_id).result.rename(target)
    with pytest.raises(GeopeftError, match="does not match its directory"):
        collect(tmp_path)


def test_schema_version_is_checked(sweep: Path) -> None:
    path = SweepPaths(sweep).cell(make_spec("lora", 0).cell_id).result
    d = read_json(path)
    d["schema_version"] = 999
    atomic_write_json(path, d)
    with pytest.raises(GeopeftError, match="schema_version"):
        collect(sweep)


def test_write_tidy_roundtrip(sweep: Path, tmp_path: Path) -> None:
    df = collect(sweep)
    out = tmp_path / "tables"
    paths = write_tidy(df, out)
    assert paths[0] == out / "tidy.csv"
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        assert paths == [out / "tidy.csv"]
    else:
        assert paths == [out / "tidy.csv", out / "tidy.parquet"]
    back = pd.read_csv(paths[0])
    assert list(back.columns) == list(TIDY_COLUMNS)
    assert len(back) == len(df)
    assert math.isclose(back["value"].sum(), df["value"].sum())
    assert not list(out.glob(".*.tmp"))


def test_activation_checkpointing_is_a_setting_column(tmp_path: Path) -> None:
    """Left out of a spec at its default; a column all the same, so checkpointed cells are their own rows."""
    from dataclasses import replace

    from analysis.tables import miou_rows

    plain = make_spec("lora", 0)
    ckpt = replace(plain, train=TrainSpec(lr=1e-4, activation_checkpointing=True))
    for spec in (plain, ckpt):
        write_result(tmp_path, spec, {"test": 0.7, "bolivia": 0.6})
    cells = [
        {"index": i, "cell_id": s.cell_id, "slug": s.slug, "spec": s.to_dict()} for i, s in enumerate([plain, ckpt])
    ]
    atomic_write_json(SweepPaths(tmp_path).manifest, {"cells": cells})
    df = collect(tmp_path).drop_duplicates("cell_id").set_index("cell_id")
    assert df.loc[plain.cell_id, "activation_checkpointing"] == False  # noqa: E712 (a numpy bool)
    assert df.loc[ckpt.cell_id, "activation_checkpointing"] == True  # noqa: E712
    assert "activation_checkpointing" in miou_rows(collect(tmp_path))
