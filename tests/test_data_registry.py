from __future__ import annotations

import subprocess
import sys

import pytest

from geopeft.data.bands import S2_BANDS
from geopeft.data.registry import DatasetInfo, dataset_names, get_dataset, get_source, read_split_ids
from geopeft.errors import ConfigError, DataError


def test_sen1floods11_info():
    info = get_dataset("sen1floods11")
    assert info.bands == S2_BANDS
    assert info.classes == ("Not water", "Water")
    assert info.splits == ("train", "val", "test", "bolivia")
    assert (info.gsd, info.scale, info.ignore_index) == (10.0, 1e-4, -1)
    assert "sen1floods11" in dataset_names()


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"grid\.yaml: unknown dataset 'sen2floods'.*sen1floods11"):
        get_dataset("sen2floods", "grid.yaml")


def test_official_split_counts():
    source = get_source("sen1floods11")
    counts = {s: len(read_split_ids(source.split_file(s, source.default_splits_dir), s)) for s in source.info.splits}
    assert counts == {"train": 252, "val": 89, "test": 90, "bolivia": 15}
    bolivia = read_split_ids(source.split_file("bolivia", source.default_splits_dir), "bolivia")
    assert all(i.startswith("Bolivia_") for i in bolivia)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"scale": 0.0}, "scale"), ({"bands": ()}, "bands"), ({"regions": ("train",)}, "repeat"), ({"gsd": -1}, "gsd")],
)
def test_dataset_info_validates(kwargs, match):
    base = {"name": "d", "bands": ("A",), "classes": ("x",), "gsd": 10.0, "scale": 1.0}
    with pytest.raises(ConfigError, match=match):
        DatasetInfo(**{**base, **kwargs})


def test_read_split_ids_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_split_ids(tmp_path / "nope.txt", "train")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(DataError, match="lists no sample"):
        read_split_ids(tmp_path / "empty.txt", "train")
    (tmp_path / "dup.txt").write_text("A_1\nB_2\nA_1\n")
    with pytest.raises(DataError, match="A_1 more than once"):
        read_split_ids(tmp_path / "dup.txt", "train")
    (tmp_path / "ok.txt").write_text(" A_1 \n\nB_2")
    assert read_split_ids(tmp_path / "ok.txt", "train") == ["A_1", "B_2"]


def test_data_layer_imports_neither_cache_nor_torch():
    modules = "geopeft.data.registry, geopeft.data.sen1floods11, geopeft.data.synthetic, geopeft.data.transforms"
    forbidden = ("geopeft.cache", "geopeft.models", "geopeft.train", "hpc", "analysis")
    code = (
        f"import sys, {modules}; "
        f"bad = [m for m in sys.modules if m == 'torch' or m.startswith({forbidden!r})]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
