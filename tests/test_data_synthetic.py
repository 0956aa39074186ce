from __future__ import annotations

import numpy as np
import pytest
import rasterio

from geopeft.data import sen1floods11 as s1f
from geopeft.data.synthetic import write_sen1floods11
from geopeft.errors import ConfigError

COUNTS = {"train": 3, "val": 1, "test": 1, "bolivia": 2}


def read(path):
    with rasterio.open(path) as src:
        return src.read(), src.crs, src.transform, src.nodata


def test_writes_official_ids_in_the_native_format(tmp_path):
    splits = write_sen1floods11(tmp_path, counts=COUNTS, size=32)
    assert splits == tmp_path / "splits"
    for split, name in s1f.SPLIT_FILES.items():
        official = (s1f.Sen1Floods11Source.default_splits_dir / name).read_text().splitlines()
        assert (splits / name).read_text() == "".join(f"{i}\n" for i in official[: COUNTS[split]])
    image, crs, transform, nodata = read(s1f.image_path(tmp_path, "Bolivia_103757"))
    assert image.shape == (13, 32, 32) and image.dtype == np.int16 and nodata is None
    assert crs.to_epsg() in range(32701, 32761)  # UTM south for Bolivia
    assert (transform.a, -transform.e) == (10.0, 10.0)
    assert 0 <= image.min() and image.max() <= 10_000
    label = read(s1f.label_path(tmp_path, "Bolivia_103757"))[0]
    assert label.shape == (1, 32, 32) and label.dtype == np.int16 and set(np.unique(label)) == {-1, 0, 1}
    assert (tmp_path / s1f.METADATA_FILE).is_file()


def test_water_has_a_water_spectrum(tmp_path):
    write_sen1floods11(tmp_path, counts=COUNTS, size=64)
    image, label = (
        read(s1f.image_path(tmp_path, "Ghana_103272"))[0],
        read(s1f.label_path(tmp_path, "Ghana_103272"))[0][0],
    )
    nir, green = image[8].astype(float), image[2].astype(float)
    assert nir[label == 1].mean() < 0.3 * nir[label == 0].mean()
    assert green[label == 1].mean() > nir[label == 1].mean()


def test_deterministic_for_a_seed(tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        write_sen1floods11(tmp_path / name, counts=COUNTS, size=32, seed=seed)
    path = s1f.image_path
    a, b, c = (read(path(tmp_path / n, "Ghana_5079"))[0] for n in "abc")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"counts": {"train": 0}}, "1..252"),
        ({"counts": {"bolivia": 16}}, "1..15"),
        ({"counts": {"tset": 1}}, "tset"),
        ({"size": 8}, "size"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        write_sen1floods11(tmp_path, **kwargs)
