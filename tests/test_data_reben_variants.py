"""reBEN layouts that circulate besides the release: int16 band files, bands already on the 10 m grid, both.

Each variant is written by the synthetic writer with the same digital numbers as the standard layout, built into a
cache, and must give the standard cache's samples exactly; what does not fit the stored uint16 stays an error.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

import geopeft.data.reben as rb
import geopeft.data.synthetic.reben as synth
from geopeft.cache import schema
from geopeft.cache.build import cache_path, prepare
from geopeft.cache.reader import open_split
from geopeft.data.registry import get_source
from geopeft.errors import ConfigError, DataError

SOURCE = get_source("reben_7k")
COUNTS = {"train": 2, "val": 1, "test": 1, "ood": 1, "austria": 1, "ireland": 1}
ID = "S2A_MSIL2A_20170613T101031_N9999_R022_T34VER_04_62"  # first train id of the official split
VARIANTS = {
    "int16": {"band_dtype": "int16"},
    "at_10m": {"bands_at_10m": True},
    "int16_at_10m": {"band_dtype": "int16", "bands_at_10m": True},
}


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    """``variant -> (raw root, cache root)`` for the standard layout and every variant, same seed."""
    out = {}
    for name, options in {"standard": {}, **VARIANTS}.items():
        root = tmp_path_factory.mktemp(name)
        splits = synth.write_reben_7k(root / "raw", counts=COUNTS, **options)
        prepare("reben_7k", root / "raw", root / "cache", splits_dir=splits, progress=False)
        out[name] = (root / "raw", root / "cache")
    return out


def rewrite(path, data, resolution=None, nodata=None):
    """Overwrite a band file with ``data`` ``[H, W]`` at its corner, with pixels of ``resolution`` m if given."""
    with rasterio.open(path) as src:
        crs, t = src.crs, src.transform
    metres = resolution or t.a
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=data.shape[0],
        width=data.shape[1],
        count=1,
        dtype=data.dtype,
        crs=crs,
        transform=Affine(metres, 0, t.c, 0, -metres, t.f),
        nodata=nodata,
    ) as dst:
        dst.write(data[None])


@pytest.mark.parametrize("name", list(VARIANTS))
def test_the_variant_files_are_what_they_claim(caches, name):
    raw = caches[name][0]
    for suffix, _, resolution in rb.BAND_FILES:
        with rasterio.open(rb.band_path(raw, ID, suffix)) as src:
            side = 120 if VARIANTS[name].get("bands_at_10m") else 1200 // resolution
            metres = 10 if VARIANTS[name].get("bands_at_10m") else resolution
            dtype = VARIANTS[name].get("band_dtype", "uint16")
            assert (src.dtypes[0], src.height, src.width, src.transform.a) == (dtype, side, side, metres)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variant_builds_the_standard_cache_contents(caches, name):
    standard, variant = caches["standard"][1], caches[name][1]
    for split in rb.INFO.splits:
        with (
            h5py.File(cache_path(standard, "reben_7k", split)) as a,
            h5py.File(cache_path(variant, "reben_7k", split)) as b,
        ):
            assert b[schema.IMAGES].dtype == np.uint16
            for key in schema.DATASETS:
                np.testing.assert_array_equal(b[key][()], a[key][()], err_msg=f"{split}/{key}")
            for attr in ("bands", "mean", "std", "n"):
                np.testing.assert_array_equal(b.attrs[attr], a.attrs[attr], err_msg=f"{split} attr {attr}")
        # The samples a cell reads (padded to 128, normalised, with metadata) are the same too.
        x = open_split(standard, "reben_7k", split, bands=rb.INFO.bands, train=False, metadata=("time", "location"))
        y = open_split(variant, "reben_7k", split, bands=rb.INFO.bands, train=False, metadata=("time", "location"))
        for i in range(len(x)):
            want, got = x[i], y[i]
            assert torch.equal(want["image"], got["image"]) and torch.equal(want["mask"], got["mask"])
            assert x.metadata(i) == y.metadata(i)


def test_bands_of_one_patch_may_mix_the_layouts(caches, tmp_path):
    """Only B11 on the 10 m grid, B01 as uint32: the sample is the standard one."""
    raw = caches["standard"][0]
    want = SOURCE.read_sample(raw, ID)
    copy = tmp_path / "raw"
    for path in rb.sample_files(raw, ID):
        target = copy / path.relative_to(raw)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    with rasterio.open(rb.band_path(copy, ID, "B11")) as src:
        rewrite(rb.band_path(copy, ID, "B11"), src.read(1).repeat(2, axis=0).repeat(2, axis=1), resolution=10)
    with rasterio.open(rb.band_path(copy, ID, "B01")) as src:
        rewrite(rb.band_path(copy, ID, "B01"), src.read(1).astype(np.uint32))
    got = SOURCE.read_sample(copy, ID)
    np.testing.assert_array_equal(got.image, want.image)
    np.testing.assert_array_equal(got.mask, want.mask)
    assert got.image.dtype == np.uint16


def test_signed_no_data_tag_becomes_zero_and_ignored(tmp_path):
    raw = tmp_path
    synth.write_reben_7k(raw, counts=dict.fromkeys(COUNTS, 1), band_dtype="int16")
    path = rb.band_path(raw, ID, "B05")  # 20 m: one pixel covers 2x2 pixels at 10 m
    with rasterio.open(path) as src:
        band = src.read(1)
    band[0, 0] = -32768
    rewrite(path, band, nodata=-32768)
    sample = SOURCE.read_sample(raw, ID)
    assert (sample.image[4, :2, :2] == 0).all() and (sample.mask[:2, :2] == -1).all()
    assert (sample.image[4, 2:, 2:] > 0).all()


@pytest.fixture()
def raw(tmp_path):
    synth.write_reben_7k(tmp_path, counts=dict.fromkeys(COUNTS, 1), bands_at_10m=True)
    return tmp_path


@pytest.mark.parametrize(
    ("suffix", "data", "resolution", "match"),
    [
        (
            "B05",
            np.full((120, 120), 70_000, np.uint32),
            None,
            r"_B05\.tif: uint32 values 70000 \.\.\. 70000 do not fit",
        ),
        ("B09", np.full((120, 120), -1, np.int32), None, r"_B09\.tif: int32 values -1 \.\.\. -1 do not fit uint16"),
        ("B8A", np.zeros((120, 120), np.float32), None, r"_B8A\.tif: dtype float32, expected integer"),
        (
            "B01",
            np.zeros((40, 40), np.uint16),
            30,
            r"_B01\.tif: 40x40 pixels of 30x30 m, expected 20x20 pixels of 60 m",
        ),
        ("B12", np.zeros((120, 120), np.uint16), 20, r"or, already on the 10 m grid, 120x120 pixels of 10 m"),
        (
            "B02",
            np.zeros((60, 60), np.uint16),
            20,
            r"_B02\.tif: 60x60 pixels of 20x20 m, expected 120x120 pixels of 10 m ",
        ),
    ],
)
def test_what_does_not_fit_either_layout_is_an_error(raw, suffix, data, resolution, match):
    path = rb.band_path(raw, ID, suffix)
    rewrite(path, data, resolution=resolution)
    with pytest.raises(DataError, match=match) as info:
        SOURCE.read_sample(raw, ID)
    assert str(path) in str(info.value) and "BigEarthNet v2.0" in str(info.value)


def test_the_writer_refuses_an_unknown_band_dtype(tmp_path):
    with pytest.raises(ConfigError, match=r"band_dtype 'float32'; allowed: int16, uint16"):
        synth.write_reben_7k(tmp_path, counts=dict.fromkeys(COUNTS, 1), band_dtype="float32")
