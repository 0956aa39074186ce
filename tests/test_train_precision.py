"""``train.matmul_precision``: applied for the cell only, refused when unknown, recorded in the provenance."""

from __future__ import annotations

import pytest
import torch

from geopeft.cache.build import prepare
from geopeft.cell import run_cell
from geopeft.data.synthetic import write_sen1floods11
from geopeft.errors import ConfigError
from geopeft.io import read_json
from geopeft.paths import SweepPaths
from geopeft.spec import CellSpec, DecoderSpec, ModelSpec, RunEnv, TrainSpec, TuningSpec
from geopeft.train.precision import describe, matmul_precision

KEYS = {"float32_matmul_precision", "cuda_matmul_allow_tf32", "cudnn_allow_tf32"}


@pytest.fixture
def previous():
    """Start each test from ``medium`` (not torch's default), and leave the process as it was."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    yield "medium"
    torch.set_float32_matmul_precision(before)


@pytest.mark.parametrize("value", ["highest", "high", "medium"])
def test_applied_inside_and_restored_after(previous, value):
    with matmul_precision(value):
        assert torch.get_float32_matmul_precision() == value
        assert describe()["float32_matmul_precision"] == value
        assert describe()["cuda_matmul_allow_tf32"] is (value != "highest")  # the flag torch derives from it
    assert torch.get_float32_matmul_precision() == previous


def test_restored_when_the_body_raises(previous):
    with pytest.raises(RuntimeError, match="boom"), matmul_precision("highest"):
        assert torch.get_float32_matmul_precision() == "highest"
        raise RuntimeError("boom")
    assert torch.get_float32_matmul_precision() == previous


def test_describe_has_the_flags_as_plain_values():
    got = describe()
    assert set(got) == KEYS
    assert got["float32_matmul_precision"] == torch.get_float32_matmul_precision()
    assert got["cudnn_allow_tf32"] is torch.backends.cudnn.allow_tf32
    assert all(isinstance(got[k], bool) for k in KEYS - {"float32_matmul_precision"})


def test_unknown_values_are_refused_by_the_spec_and_by_the_context_manager(previous):
    with pytest.raises(ConfigError, match=r"train\.matmul_precision 'tf32'; allowed: high, highest, medium"):
        TrainSpec(lr=1e-3, matmul_precision="tf32")
    with pytest.raises(ConfigError, match=r"train\.matmul_precision 'low'"), matmul_precision("low"):
        pass
    assert torch.get_float32_matmul_precision() == previous


@pytest.mark.slow
def test_a_cell_trains_under_its_setting_records_it_and_restores_the_process(tmp_path, previous):
    splits = write_sen1floods11(tmp_path / "raw", counts={"train": 4, "val": 2, "test": 2, "bolivia": 2}, size=32)
    prepare("sen1floods11", tmp_path / "raw", tmp_path / "cache", splits_dir=splits, progress=False)
    spec = CellSpec(
        model=ModelSpec("prithvi_tiny"),
        tuning=TuningSpec("linear_probe"),
        decoder=DecoderSpec("linear"),
        dataset="sen1floods11",
        train=TrainSpec(lr=1e-3, batch_size=4, max_epochs=1, matmul_precision="high"),
    )
    paths = SweepPaths(tmp_path / "runs").cell(spec.cell_id)
    run_cell(spec, RunEnv(str(tmp_path / "cache"), threads=1), paths, log=lambda _: None)
    result = read_json(paths.result)
    recorded = result["provenance"]["precision"]
    assert set(recorded) == KEYS and recorded["float32_matmul_precision"] == "high"
    assert result["provenance"]["determinism"]["float32_matmul_precision"] == "high"
    assert result["spec"]["train"]["matmul_precision"] == "high"
    assert torch.get_float32_matmul_precision() == previous
