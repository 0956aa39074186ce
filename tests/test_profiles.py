"""Cluster profiles: the shipped ones load, shapes resolve, bad files fail with the file and key named."""

import pytest

from geopeft.errors import ConfigError
from geopeft.spec import CellSpec
from hpc.scheduler.profiles import Resources, load_profile, profile_names


def spec(model: str) -> CellSpec:
    doc = {"model": {"name": model}, "tuning": {"method": "full"}, "decoder": {"name": "linear"}}
    return CellSpec.from_dict({**doc, "dataset": "sen1floods11", "train": {"lr": 1e-4}}, "test")


def test_shipped_profiles_load():
    assert {"local", "slurm-test", "example-gpu"} <= set(profile_names())
    for name in profile_names():
        assert load_profile(name).name == name
    test = load_profile("slurm-test")
    assert (test.executor, test.partition, test.gpus_per_task, test.max_array_size) == ("slurm", "debug", 0, 1001)
    assert "export HDF5_USE_FILE_LOCKING=FALSE" in test.setup


def test_shapes_pick_resources_per_cell():
    gpu = load_profile("example-gpu")
    small = gpu.resources_for(spec("prithvi_tiny"))
    big = gpu.resources_for(spec("prithvi_eo_v2_600"))
    assert small == Resources(1, 1, 1, 12, 120, 360) and not small.multi_task
    assert (big.nodes, big.tasks_per_node, big.gpus, big.time_limit_min) == (2, 4, 8, 720) and big.multi_task


def test_unknown_profile_names_the_choices():
    with pytest.raises(ConfigError, match=r"unknown cluster profile 'nope'; allowed: .*slurm-test"):
        load_profile("nope")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('executor = "pbs"', "unknown executor"),
        ("partiton = 'x'", "unknown key 'partiton'"),
        ("max_array_size = 0", "max_array_size must be >= 1"),
        ("time_limit_min = 1\nsignal_lead_s = 90", "signal_lead_s must lie in"),
        ("cpus_per_task = 0", "cpus_per_task must be an integer >= 1"),
        (
            '[[shape]]\nwhere = {"model.name" = "x"}\ngpus_per_task = 1',
            "shape\\[0\\] asks for GPUs but the profile is CPU",
        ),
        ("[[shape]]\ngpus_per_task = 1", "shape\\[0\\]: needs a non-empty `where`"),
        ('[[shape]]\nwhere = {"model.name" = "x"}\nmemory = 3', "unknown key 'memory'"),
        ("nodes = [", "not valid TOML"),
    ],
)
def test_bad_profiles_name_file_and_key(tmp_path, text, message):
    path = tmp_path / "site.toml"
    path.write_text('partition = "gpu"\n' + text + "\n")
    with pytest.raises(ConfigError, match=message) as err:
        load_profile(str(path))
    assert str(err.value).startswith(str(path))
