"""Every tuning method trains as a cell on each tiny backbone it applies to, and result.json holds its report."""

from __future__ import annotations

import pytest
import torch

from geopeft.cache.build import prepare
from geopeft.cell import run_cell
from geopeft.data.synthetic import write_sen1floods11
from geopeft.io import read_json
from geopeft.models.build import build_segmentor
from geopeft.paths import SweepPaths
from geopeft.spec import CellSpec, DecoderSpec, ModelSpec, RunEnv, TrainSpec, TuningSpec
from geopeft.tuning import apply_tuning

CASES = [
    *(
        (backbone, method)
        for backbone in ("prithvi_tiny", "clay_tiny")
        for method in ("full", "linear_probe", "lora", "vpt")
    ),
    ("resnet_tiny", "full"),
    ("resnet_tiny", "linear_probe"),
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("sen1floods11")
    splits = write_sen1floods11(root / "raw", counts={"train": 2, "val": 2, "test": 2, "bolivia": 2}, size=32, seed=0)
    prepare("sen1floods11", root / "raw", root / "cache", splits_dir=splits, progress=False)
    return root / "cache"


@pytest.mark.parametrize(("backbone", "method"), CASES)
def test_method_trains_as_a_cell(tmp_path, cache, backbone, method):
    options = {"num_tokens": 4} if method == "vpt" else {}
    spec = CellSpec(
        model=ModelSpec(backbone),
        tuning=TuningSpec(method, options),
        decoder=DecoderSpec("linear"),
        dataset="sen1floods11",
        train=TrainSpec(lr=1e-3, batch_size=2, max_epochs=1),
    )
    paths = SweepPaths(tmp_path / "runs").cell(spec.cell_id)
    run_cell(spec, RunEnv(str(cache), threads=1), paths, log=lambda _: None)
    result = read_json(paths.result)
    assert set(result["regions"]) == {"test", "bolivia"}
    assert result["train"]["epochs_run"] == 1
    with torch.device("meta"):
        model = build_segmentor(spec.model, spec.decoder, num_classes=2, img_size=32)
        expected = apply_tuning(model, spec.tuning)
    assert result["params"] == expected.to_dict()
    if method == "full":
        assert result["params"]["trainable"] == result["params"]["total"]
    else:
        assert 0 < result["params"]["trainable"] < result["params"]["total"]
