"""Every registered dataset trains as a cell: synthetic native files -> cache -> run_cell -> result.json."""

from dataclasses import replace

import pytest

from geopeft.cache.build import prepare
from geopeft.cache.reader import open_split
from geopeft.cell import run_cell
from geopeft.data.registry import dataset_names, get_dataset
from geopeft.data.synthetic import get_writer
from geopeft.io import read_json
from geopeft.paths import SweepPaths
from geopeft.spec import CellSpec, DecoderSpec, ModelSpec, RunEnv, TrainSpec, TuningSpec


@pytest.mark.slow
@pytest.mark.parametrize("dataset", dataset_names())
def test_one_cell_per_dataset(tmp_path, dataset):
    info = get_dataset(dataset)
    counts = {split: 2 for split in info.splits}
    size = {"reben_7k": 120}.get(dataset, 32)
    splits = get_writer(dataset)(tmp_path / "raw", counts=counts, size=size, seed=0)
    prepare(dataset, tmp_path / "raw", tmp_path / "cache", splits_dir=splits, progress=False)
    spec = CellSpec(
        model=ModelSpec("prithvi_tiny"),
        tuning=TuningSpec("lora", {"r": 2, "alpha": 2}),
        decoder=DecoderSpec("linear"),
        dataset=dataset,
        train=TrainSpec(lr=1e-3, batch_size=2, max_epochs=1),
    )
    paths = SweepPaths(tmp_path / "runs").cell(spec.cell_id)
    run_cell(spec, RunEnv(str(tmp_path / "cache"), threads=1), paths, log=lambda _: None)
    result = read_json(paths.result)
    assert set(result["regions"]) == set(info.regions)
    for region in info.regions:
        metrics = result["regions"][region]
        assert metrics["n"] == 2
        assert len(metrics["iou_per_class"]) == len(info.classes)
        assert 0.0 <= metrics["miou"] <= 1.0
        present = [v for v in metrics["iou_per_class"] if v is not None]  # 19 reBEN classes: most are absent
        assert metrics["classes_present"] == len(present) >= 1
        assert metrics["miou"] == pytest.approx(sum(present) / len(present), abs=1e-12)
    assert 0.0 <= result["train"]["data_wait_fraction"] < 1.0
    # the study's statistics of the cell's bands, applied on the device
    norm = result["provenance"]["normalisation"]
    bands = list(norm["bands"])
    assert norm["kind"] == "study" and norm["scale"] == info.scale and "peft-geofm" in norm["source"]
    assert info.study_stats is not None
    assert norm["mean"] == [info.study_stats.mean[b] for b in bands]
    assert norm["std"] == [info.study_stats.std[b] for b in bands]


@pytest.mark.slow
def test_train_split_normalisation_uses_the_caches_statistics(tmp_path):
    splits = get_writer("sen1floods11")(
        tmp_path / "raw", counts=dict.fromkeys(("train", "val", "test", "bolivia"), 2), size=32, seed=0
    )
    prepare("sen1floods11", tmp_path / "raw", tmp_path / "cache", splits_dir=splits, progress=False)
    spec = CellSpec(
        model=ModelSpec("prithvi_tiny"),
        tuning=TuningSpec("full"),
        decoder=DecoderSpec("linear"),
        dataset="sen1floods11",
        train=TrainSpec(lr=1e-3, batch_size=2, max_epochs=1, normalisation="train_split"),
    )
    assert spec.cell_id != replace(spec, train=replace(spec.train, normalisation="study")).cell_id
    paths = SweepPaths(tmp_path / "runs").cell(spec.cell_id)
    run_cell(spec, RunEnv(str(tmp_path / "cache"), threads=1), paths, log=lambda _: None)
    norm = read_json(paths.result)["provenance"]["normalisation"]
    header = open_split(tmp_path / "cache", "sen1floods11", "train", bands=norm["bands"], train=False).header
    stats = header.train_stats()
    assert norm["kind"] == "train_split" and norm["mean"] == [stats.mean[b] for b in norm["bands"]]
    assert norm["std"] == [stats.std[b] for b in norm["bands"]]
