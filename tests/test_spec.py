import dataclasses

import pytest

from geopeft.errors import ConfigError
from geopeft.spec import CellSpec, DecoderSpec, ModelSpec, RunEnv, TrainSpec, TuningSpec


def make(**changes):
    base = dict(
        model=ModelSpec("prithvi_tiny"),
        tuning=TuningSpec("lora", {"r": 8, "alpha": 8}),
        decoder=DecoderSpec("linear"),
        dataset="sen1floods11",
        train=TrainSpec(lr=1e-3, batch_size=4),
        seed=0,
    )
    base.update(changes)
    return CellSpec(**base)


def test_cell_id_is_stable_and_short():
    a, b = make(), make()
    assert a.cell_id == b.cell_id
    assert len(a.cell_id) == 12 and int(a.cell_id, 16) >= 0
    # A frozen literal: the id must not drift between versions without a SPEC_VERSION bump.
    assert make().canonical_json().startswith('{"dataset":"sen1floods11","decoder":')


def test_cell_id_ignores_irrelevant_differences():
    base = make()
    # option order, list vs tuple, int vs float learning rate
    assert make(tuning=TuningSpec("lora", {"alpha": 8, "r": 8})).cell_id == base.cell_id
    assert make(train=TrainSpec(lr=0.001, batch_size=4)).cell_id == base.cell_id
    assert make(model=ModelSpec("prithvi_tiny", bands=[])).cell_id == base.cell_id
    # paths, workers and threads are not part of the spec at all
    env_a, env_b = RunEnv("/a/cache", num_workers=0), RunEnv("/b/cache", num_workers=8, threads=4)
    assert env_a != env_b
    assert "cache_root" not in base.canonical_json()


@pytest.mark.parametrize(
    "change",
    [
        {"seed": 1},
        {"dataset": "burn_scars"},
        {"tuning": TuningSpec("full")},
        {"tuning": TuningSpec("lora", {"r": 16, "alpha": 8})},
        {"train": TrainSpec(lr=2e-3, batch_size=4)},
        {"train": TrainSpec(lr=1e-3, batch_size=8)},
        {"model": ModelSpec("prithvi_eo_v2_300")},
        {"model": ModelSpec("prithvi_tiny", bands=("BLUE", "GREEN"))},
        {"decoder": DecoderSpec("linear", {"x": 1})},
    ],
)
def test_cell_id_changes_with_relevant_settings(change):
    assert make(**change).cell_id != make().cell_id


def test_round_trip_through_dict():
    spec = make()
    assert CellSpec.from_dict(spec.to_dict()) == spec


def test_unknown_and_missing_keys_are_named():
    d = make().to_dict()
    d["train"]["learning_rate"] = 1
    with pytest.raises(ConfigError, match="learning_rate"):
        CellSpec.from_dict(d, "grid.yaml")
    d = make().to_dict()
    del d["train"]["lr"]
    with pytest.raises(ConfigError, match=r"missing key\(s\) \['lr'\]"):
        CellSpec.from_dict(d)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": -1.0}, "train.lr"),
        ({"lr": 1e-3, "batch_size": 0}, "batch_size"),
        ({"lr": 1e-3, "precision": "fp8"}, "allowed: bf16, fp32"),
        ({"lr": 1e-3, "strategy": "fsdp"}, "train.strategy"),
    ],
)
def test_train_spec_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        TrainSpec(**kwargs)


def test_specs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        make().seed = 3  # type: ignore[misc]
