"""A sweep of result files synthesised from the paper's released numbers (for the analysis tests).

Every (model, peft_type, dataset) of ``peft_table.csv`` becomes five seeded cells whose test mIoU has
exactly the released mean and sample std (values mean + std * z, with z of mean 0 and sample std 1);
Sen1Floods11 and reBEN 7k cells also get their OOD region from ``ood_table.csv``, and every cell its wall
time and epochs from ``epoch_and_time.csv``. As the authors did, the ``(6 bands)`` runs of DeCUR and Clay
stand for the plain rows on Burn Scars, so no plain-row cell is written there.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.labels import (
    EPOCHS,
    HLS_BANDS,
    METHODS,
    MODELS,
    OOD_MIOU,
    OOD_REGIONS,
    SIX_BAND_ONLY_DATASETS,
    SIX_BAND_TWINS,
    TEST_MIOU,
    TOTAL_TIME,
    dataset_from_label,
    main_decoder,
)
from analysis.paper import read_released
from geopeft.paths import SweepPaths
from geopeft.result import CellResult, RegionMetrics, TrainSummary
from geopeft.spec import CellSpec, DecoderSpec, ModelSpec, TrainSpec, TuningSpec

SEEDS = 5
Z = np.array([-2.0, -1.0, 0.0, 1.0, 2.0]) / math.sqrt(2.5)  # mean 0, sample std 1
PEFT_TO_METHOD = {label: method for method, label in METHODS.items()}


def backbone_and_bands(model: str) -> tuple[str, tuple[str, ...]]:
    for m in MODELS:
        if model == m.label:
            return m.backbone, ()
        if model == m.six_band_label:
            return m.backbone, HLS_BANDS
    raise KeyError(model)


def integer_epochs(mean: float, seeds: int = SEEDS) -> list[int]:
    """``seeds`` integers whose mean is ``mean`` rounded to 1/seeds."""
    total = round(mean * seeds)
    return [total // seeds + (1 if i < total % seeds else 0) for i in range(seeds)]


def write_cell(root: Path, spec: CellSpec, regions: dict[str, float], wall_s: float, epochs: int) -> None:
    result = CellResult(
        cell_id=spec.cell_id,
        slug=spec.slug,
        spec=spec.to_dict(),
        regions={
            r: RegionMetrics(miou=v, iou_per_class=(v, v), accuracy=0.9, loss=0.2, n=10, classes_present=2)
            for r, v in regions.items()
        },
        train=TrainSummary(
            best_epoch=max(1, epochs - 15),
            epochs_run=epochs,
            wall_time_s=wall_s,
            time_per_epoch_s=wall_s / max(epochs, 1),
            samples_per_s=100.0,
            peak_memory_mb=2048.0 + 10 * epochs,
            device="cpu",
            world_size=1,
            data_wait_fraction=0.05,
        ),
        params={"trainable": 10, "total": 100},
        provenance={},
    )
    path = SweepPaths(root).cell(spec.cell_id).result
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_dict()))


def synthesise_paper_sweep(root: Path) -> list[CellSpec]:
    """Write the cells (no manifest: ``collect`` reads every cell directory) and return their specs."""
    peft, ood, cost = read_released("peft_table"), read_released("ood_table"), read_released("epoch_and_time")
    six_only = set(SIX_BAND_ONLY_DATASETS)
    specs = []
    for (model, peft_type), row in peft.iterrows():
        backbone, bands = backbone_and_bands(str(model))
        for ds in peft[TEST_MIOU]["mean"].columns:
            dataset = dataset_from_label(str(ds))
            if dataset in six_only and model in SIX_BAND_TWINS:
                continue  # the (6 bands) run stands for this one
            test = row[(TEST_MIOU, "mean", ds)] + row[(TEST_MIOU, "std", ds)] * Z
            ood_values = None
            if dataset in OOD_REGIONS and (model, peft_type) in ood.index:
                o = ood.loc[(model, peft_type)]
                ood_values = o[(OOD_MIOU, "mean", ds)] + o[(OOD_MIOU, "std", ds)] * Z
            c = cost.loc[(model, peft_type)]
            epochs = integer_epochs(float(c[(EPOCHS, "mean", ds)]))
            for seed in range(SEEDS):
                spec = CellSpec(
                    model=ModelSpec(name=backbone, bands=bands),
                    tuning=TuningSpec(method=PEFT_TO_METHOD[str(peft_type)]),
                    decoder=DecoderSpec(name=main_decoder(backbone)),
                    dataset=dataset,
                    train=TrainSpec(lr=1e-4),
                    seed=seed,
                )
                regions = {"test": float(test[seed]) / 100}
                if ood_values is not None:
                    regions[OOD_REGIONS[dataset]] = float(ood_values[seed]) / 100
                write_cell(root, spec, regions, float(c[(TOTAL_TIME, "mean", ds)]) * 60, epochs[seed])
                specs.append(spec)
    return specs


def assert_frames_equal_2dp(ours: pd.DataFrame, released: pd.DataFrame) -> None:
    """Same labels, same layout, values equal to 2 decimals."""
    assert list(ours.index) == list(released.index)
    assert list(ours.columns) == list(released.columns)
    assert ours.index.names == released.index.names and ours.columns.names == released.columns.names
    np.testing.assert_array_equal(ours.to_numpy().round(2), released.to_numpy().round(2))


#: The demo-shaped sweep: (backbone, metadata, method, options, decoder, decoder options) per row.
DEMO_ROWS = (
    ("prithvi_tiny", (), "full", {}, "linear", {}),
    ("prithvi_tiny", (), "lora", {"r": 8, "alpha": 8}, "linear", {}),
    ("prithvi_tiny", (), "full", {}, "fcn", {"channels": 16, "num_convs": 4}),
    ("prithvi_tiny_tl", ("time", "location"), "full", {}, "linear", {}),
)
#: Validation loss per epoch of every demo cell (the least is epoch 3, which every result records as best).
DEMO_LOSS = (0.60, 0.50, 0.42, 0.45)
DEMO_GRID = """name: demo
description: tiny Prithvi, full FT vs LoRA on synthetic Sen1Floods11
output: runs/demo
"""


def synthesise_demo_sweep(root: Path) -> list[CellSpec]:
    """A sweep shaped like ``make demo`` (manifest, grid file, results, ``metrics.jsonl``) and a few ablation cells.

    The grid file is ``<root>/../grid/demo.yaml``; each cell ran 4 epochs of about 3 s (under a minute), seeds 0
    and 1, on Sen1Floods11 (test and Bolivia).
    """
    grid = root.parent / "grid" / "demo.yaml"
    grid.parent.mkdir(parents=True, exist_ok=True)
    grid.write_text(DEMO_GRID)
    specs = []
    for i, (backbone, metadata, method, options, decoder, decoder_options) in enumerate(DEMO_ROWS):
        for seed in (0, 1):
            spec = CellSpec(
                model=ModelSpec(name=backbone, metadata=metadata),
                tuning=TuningSpec(method=method, options=options),  # type: ignore[arg-type]
                decoder=DecoderSpec(name=decoder, options=decoder_options),  # type: ignore[arg-type]
                dataset="sen1floods11",
                train=TrainSpec(lr=1e-3, max_epochs=4),
                seed=seed,
            )
            miou = 0.70 + 0.02 * i + 0.01 * seed
            write_cell(root, spec, {"test": miou, "bolivia": miou - 0.1}, 3.0 + seed, 4)
            paths = SweepPaths(root).cell(spec.cell_id)
            result = json.loads(paths.result.read_text())
            result["train"]["best_epoch"] = 3
            paths.result.write_text(json.dumps(result))
            records = [
                {"epoch": e + 1, "train_loss": loss, "val_loss": loss + 0.01 * seed, "val_miou": miou - 0.1 / (e + 1)}
                for e, loss in enumerate(DEMO_LOSS)
            ]
            paths.metrics_log.write_text("".join(json.dumps(r) + "\n" for r in records))
            specs.append(spec)
    cells = [{"index": i, "cell_id": s.cell_id, "slug": s.slug, "spec": s.to_dict()} for i, s in enumerate(specs)]
    manifest = {"name": "demo", "grid_file": str(grid), "cells": cells}
    SweepPaths(root).manifest.write_text(json.dumps(manifest))
    return specs
