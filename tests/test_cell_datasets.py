"""Every registered dataset trains as a cell: synthetic native files -> cache -> run_cell -> result.json."""

import pytest

from geopeft.cache.build import prepare
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
