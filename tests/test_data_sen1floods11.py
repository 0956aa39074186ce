from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from geopeft.data import sen1floods11 as s1f
from geopeft.data.registry import get_source
from geopeft.data.synthetic import write_sen1floods11
from geopeft.errors import DataError

SOURCE = get_source("sen1floods11")
ID = "Ghana_103272"  # first train id of the official split


@pytest.fixture()
def raw(tmp_path):
    write_sen1floods11(tmp_path, counts={"train": 2, "val": 1, "test": 1, "bolivia": 1}, size=32)
    return tmp_path


def rewrite(path, data, crs="EPSG:32630", transform=None):
    """Overwrite a GeoTIFF with ``data`` ([count, H, W])."""
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=data.shape[1],
        width=data.shape[2],
        count=data.shape[0],
        dtype=data.dtype,
        crs=CRS.from_user_input(crs),
        transform=transform or Affine(10, 0, 500_000, 0, -10, 1_000_000),
    ) as dst:
        dst.write(data)


def test_read_sample(raw):
    sample = SOURCE.read_sample(raw, ID)
    assert sample.image.shape == (13, 32, 32) and sample.image.dtype == np.int16
    assert sample.mask.dtype == np.int16 and set(np.unique(sample.mask)) <= {-1, 0, 1}
    assert (sample.mask == -1).any()
    assert sample.date == "2018-09-18T12:00:00"  # synthetic s2_date of Ghana, at 12:00
    assert 9.1 < sample.lat < 9.9 and -1.4 < sample.lon < -0.6


def test_lat_lon_is_the_centre_pixel_in_wgs84(raw):
    data = np.ones((13, 4, 6), dtype=np.int16)
    rewrite(s1f.image_path(raw, ID), data, crs="EPSG:4326", transform=Affine(0.5, 0, 10.0, 0, -0.5, 50.0))
    rewrite(s1f.label_path(raw, ID), np.zeros((1, 4, 6), dtype=np.int16), crs="EPSG:4326")
    sample = SOURCE.read_sample(raw, ID)
    assert (sample.lon, sample.lat) == (10.0 + 3.5 * 0.5, 50.0 - 2.5 * 0.5)


def test_missing_file_named_by_the_split(raw):
    s1f.label_path(raw, ID).unlink()
    with pytest.raises(DataError) as info:
        SOURCE.source_files(raw, "train", [ID, "Ghana_24858"])
    message = str(info.value)
    assert "split train" in message and f"{ID}_LabelHand.tif" in message and "--raw" in message


def test_wrong_band_count(raw):
    rewrite(s1f.image_path(raw, ID), np.zeros((12, 32, 32), dtype=np.int16))
    with pytest.raises(DataError, match=r"S2Hand\.tif: 12 band\(s\), expected the 13"):
        SOURCE.read_sample(raw, ID)


def test_wrong_dtype(raw):
    rewrite(s1f.image_path(raw, ID), np.zeros((13, 32, 32), dtype=np.uint8))
    with pytest.raises(DataError, match="dtype uint8"):
        SOURCE.read_sample(raw, ID)


def test_label_out_of_range(raw):
    label = np.zeros((1, 32, 32), dtype=np.int16)
    label[0, 0, 0] = 2
    rewrite(s1f.label_path(raw, ID), label)
    with pytest.raises(DataError, match=r"LabelHand\.tif: label value\(s\) \[2\] outside"):
        SOURCE.read_sample(raw, ID)


def test_shape_mismatch(raw):
    rewrite(s1f.label_path(raw, ID), np.zeros((1, 16, 32), dtype=np.int16))
    with pytest.raises(DataError, match=r"32x32 pixels but .* is 16x32"):
        SOURCE.read_sample(raw, ID)


def test_nan_pixels_become_zero_and_ignored(raw):
    image = np.full((13, 32, 32), 0.25, dtype=np.float32)
    image[3, 1, 2] = np.nan
    label = np.ones((1, 32, 32), dtype=np.float32)
    label[0, 5, 5] = np.nan
    rewrite(s1f.image_path(raw, ID), image)
    rewrite(s1f.label_path(raw, ID), label)
    sample = SOURCE.read_sample(raw, ID)
    assert sample.image.dtype == np.float32 and sample.image[3, 1, 2] == 0 and not np.isnan(sample.image).any()
    assert sample.mask[1, 2] == -1 and sample.mask[5, 5] == -1 and (sample.mask == -1).sum() == 2


def test_metadata_dates_and_aliases(tmp_path):
    path = tmp_path / "meta.geojson"
    features = [
        {"properties": {"location": "Cambodia", "s2_date": "2018/08/05"}},
        {"properties": {"location": "USA", "s2_date": "2019-05-22 10:31:00"}},
        {"properties": {"location": "Spain", "s2_date": "2019-09-17"}},
        {"properties": {"location": "Spain", "s2_date": "2019-09-18"}},
    ]
    path.write_text(json.dumps({"features": features}))
    assert s1f.read_dates(path) == {"Cambodia": "2018-08-05T12:00:00", "USA": "2019-05-22T12:00:00"}
    assert s1f.LOCATION_ALIASES["Mekong"] == "Cambodia"
    with pytest.raises(DataError, match="not a date"):
        s1f.parse_date("yesterday", "meta.geojson")
    path.write_text("{}")
    with pytest.raises(DataError, match="not a Sen1Floods11 metadata GeoJSON"):
        s1f.read_dates(path)


def test_no_metadata_means_no_date(raw):
    (raw / s1f.METADATA_FILE).unlink()
    assert SOURCE.read_sample(raw, ID).date is None
    assert all(p.suffix == ".tif" for p in SOURCE.source_files(raw, "train", [ID]))
