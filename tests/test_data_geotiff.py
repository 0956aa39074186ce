"""GeoTIFF helpers: a missing, unopenable or truncated file is one DataError naming it, also through prepare."""

import pytest

import geopeft.data.sen1floods11 as s1f
from geopeft.cache.build import prepare
from geopeft.data.geotiff import open_geotiff
from geopeft.data.synthetic import write_sen1floods11
from geopeft.errors import DataError

COUNTS = {"train": 2, "val": 1, "test": 1, "bolivia": 1}


@pytest.fixture()
def raw(tmp_path):
    splits = write_sen1floods11(tmp_path / "raw", counts=COUNTS, size=64)
    image = sorted((tmp_path / "raw").rglob("*_S2Hand.tif"))[0]
    return tmp_path / "raw", splits, image


def test_truncated_file_opens_but_its_read_is_a_data_error(raw):
    _, _, image = raw
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
    with pytest.raises(DataError, match=r"S2Hand\.tif: reading failed, the file is truncated or corrupt .*; FIX"):
        with open_geotiff(image, "FIX") as src:
            src.read()


def test_unopenable_and_missing_files(raw, tmp_path):
    _, _, image = raw
    image.write_bytes(image.read_bytes()[:100])
    with pytest.raises(DataError, match=r"S2Hand\.tif: cannot be read as a GeoTIFF"):
        with open_geotiff(image, "FIX"):
            pass
    with pytest.raises(DataError, match=r"nope\.tif: file not found; FIX"):
        with open_geotiff(tmp_path / "nope.tif", "FIX"):
            pass


def test_prepare_names_the_truncated_file_and_leaves_no_half_cache(raw, tmp_path):
    root, splits, image = raw
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
    with pytest.raises(DataError) as info:
        prepare("sen1floods11", root, tmp_path / "cache", splits_dir=splits, progress=False)
    assert str(image) in str(info.value) and "truncated or corrupt" in str(info.value) and s1f.FIX in str(info.value)
    # the split that holds the file (Bolivia's) has no cache, not even a hidden temporary one; the others are whole
    built = sorted(p.name for p in (tmp_path / "cache").rglob("*") if p.is_file())
    assert "Bolivia" in image.name and built == ["test.h5", "train.h5", "val.h5"]
