from __future__ import annotations

import shutil

import numpy as np
import pytest
import rasterio
import rasterio.warp
import torch
from affine import Affine
from helpers import preprocessed
from rasterio.crs import CRS

from geopeft.cache.build import prepare
from geopeft.cache.reader import open_split
from geopeft.data import burn_scars as bs
from geopeft.data.registry import get_source, read_split_ids
from geopeft.data.synthetic import get_writer
from geopeft.data.synthetic.burn_scars import BURN_SCAR, mgrs_square, write_burn_scars
from geopeft.errors import ConfigError, DataError

SOURCE = get_source("burn_scars")
ID = "T10SEJ.2018185.v1"  # first train id of the official split
COUNTS = {"train": 4, "val": 2, "test": 2}
BANDS = ("SWIR_2", "BLUE", "NIR_NARROW")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("burn_scars")
    splits = write_burn_scars(root / "raw", counts=COUNTS, size=32)
    prepare("burn_scars", root / "raw", root / "cache", splits_dir=splits, progress=False)
    return root / "raw", splits, root / "cache"


@pytest.fixture()
def raw(tmp_path):
    write_burn_scars(tmp_path, counts={"train": 2, "val": 1, "test": 1}, size=32)
    return tmp_path


def rewrite(path, data, crs="EPSG:32610", transform=None, nodata=None):
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
        transform=transform or Affine(30, 0, 500_000, 0, -30, 4_300_000),
        nodata=nodata,
    ) as dst:
        dst.write(data)


def expected_image(path):
    """The GeoTIFF's pixels with NaN and fill set to 0, and the pixels to ignore."""
    with rasterio.open(path) as src:
        image = src.read()
    fill = np.isnan(image) | (image < -0.5)
    return np.where(fill, 0, image), fill.any(axis=0)


# --- the real path: synthetic files -> prepare -> cache -> DataLoader ------------------------------------------


def test_every_split_loads_normalised_through_a_dataloader(built):
    _, splits, cache = built
    for split in SOURCE.info.splits:
        ds = open_split(cache, "burn_scars", split, bands=BANDS, train=split == "train")
        ids = read_split_ids(SOURCE.split_file(split, splits), split)
        assert (len(ds), ds.num_classes, ds.bands) == (len(ids), 2, BANDS) == (COUNTS[split], 2, BANDS)
        images, masks = preprocessed(ds, batch_size=3)
        assert images.shape == (len(ids), 3, 32, 32) and images.dtype == torch.float32
        assert masks.dtype == torch.int64 and masks.shape == (len(ids), 32, 32)
        assert torch.isfinite(images).all() and (masks == -1).any()
        assert set(masks.unique().tolist()) <= {-1, 0, 1} and (masks == 1).any()
        assert [ds.metadata(i).id for i in range(len(ds))] == ids
    train, _ = preprocessed(open_split(cache, "burn_scars", "train", bands=BANDS, train=False), batch_size=1)
    per_band = train.transpose(0, 1).reshape(3, -1)
    assert per_band.mean(dim=1).abs().max() < 1e-3 and (per_band.std(dim=1) - 1).abs().max() < 1e-2


def test_band_order_values_and_mask_match_the_geotiffs(built):
    raw, _, cache = built
    ds = open_split(cache, "burn_scars", "val", bands=BANDS, train=False)
    for i in range(len(ds)):
        sample, sample_id = ds[i], ds.metadata(i).id
        image, ignored = expected_image(bs.image_path(raw, sample_id))
        with rasterio.open(bs.mask_path(raw, sample_id)) as src:
            label = src.read(1).astype(np.int64)
        index = [bs.INFO.bands.index(b) for b in BANDS]
        np.testing.assert_array_equal(sample["image"].numpy(), image[index].astype(np.float32))  # stored exactly
        np.testing.assert_array_equal(sample["mask"].numpy(), np.where(ignored, -1, label))
        assert ignored.any()  # every synthetic chip has NaN pixels


def test_metadata_has_the_julian_date_and_the_centre(built):
    raw, _, cache = built
    ds = open_split(cache, "burn_scars", "test", bands=BANDS, train=False)
    meta = ds.metadata(0)
    assert meta.id == "T10SDH.2020248.v1" and meta.date == "2020-09-04T12:00:00"  # day 248 of a leap year
    with rasterio.open(bs.image_path(raw, meta.id)) as src:
        x, y = src.xy(src.height // 2, src.width // 2)  # centre of the centre pixel
        lons, lats = rasterio.warp.transform(src.crs, "EPSG:4326", [x], [y])
    assert meta.lat == pytest.approx(lats[0]) and meta.lon == pytest.approx(lons[0])
    assert 37.9 < meta.lat < 39.0 and -124.3 < meta.lon < -122.8  # inside MGRS square 10SDH (California)


def test_prepare_with_the_official_splits_names_the_missing_files(built):
    raw, _, _ = built
    with pytest.raises(DataError, match=r"burn_scars split train: 520 sample id\(s\)") as info:
        prepare("burn_scars", raw, raw.parent / "other_cache", progress=False)
    assert "T10SFF.2018190.v1.4_merged.tif" in str(info.value) and "and 517 more" in str(info.value)


# --- the reader on single files ---------------------------------------------------------------------------------


def test_read_sample(raw):
    sample = SOURCE.read_sample(raw, ID)
    assert sample.image.shape == (6, 32, 32) and sample.image.dtype == np.float32
    assert np.isfinite(sample.image).all() and 0 <= sample.image.min() and sample.image.max() <= 0.6
    assert sample.mask.dtype == np.int16 and set(np.unique(sample.mask)) <= {-1, 0, 1}
    assert (sample.mask == -1).any() and (sample.mask == 1).any()
    assert sample.date == "2018-07-04T12:00:00"
    assert 38.5 < sample.lat < 39.9 and -123.2 < sample.lon < -121.5  # MGRS square 10SEJ


def test_fill_nan_and_nodata_become_zero_and_ignored(raw):
    image = np.full((6, 8, 8), 0.2, dtype=np.float32)
    image[0, 0, 0], image[3, 1, 1], image[5, 2, 2] = np.nan, -9999.0, -0.9999
    image[2, 3, 3] = -0.005  # slightly negative reflectance is data, not fill
    image[1, 4, 4] = 7.5  # the raster's own no-data tag
    rewrite(bs.image_path(raw, ID), image, nodata=7.5)
    rewrite(bs.mask_path(raw, ID), np.ones((1, 8, 8), dtype=np.uint8))
    sample = SOURCE.read_sample(raw, ID)
    assert sample.image[0, 0, 0] == sample.image[3, 1, 1] == sample.image[5, 2, 2] == sample.image[1, 4, 4] == 0
    assert sample.image[2, 3, 3] == pytest.approx(-0.005) and sample.image[2, 0, 0] == pytest.approx(0.2)
    assert sorted(zip(*np.nonzero(sample.mask == -1), strict=True)) == [(0, 0), (1, 1), (2, 2), (4, 4)]
    assert (sample.mask >= 0).sum() == 60


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "uint8"])
def test_mask_dtypes(raw, dtype):
    rewrite(bs.image_path(raw, ID), np.full((6, 32, 32), 0.1, dtype=np.float32))
    label = np.zeros((1, 32, 32), dtype=dtype)
    label[0, :4] = 1
    if np.dtype(dtype).kind == "i":
        label[0, -2:] = -1
    rewrite(bs.mask_path(raw, ID), label)
    mask = SOURCE.read_sample(raw, ID).mask
    assert mask.dtype == np.int16 and (mask[:4] == 1).all()
    assert (mask[-2:] == -1).all() == (np.dtype(dtype).kind == "i")


def test_mask_nodata_tag_becomes_ignored(raw):
    label = np.zeros((1, 32, 32), dtype=np.uint8)
    label[0, 5] = 255
    rewrite(bs.mask_path(raw, ID), label, nodata=255)
    assert (SOURCE.read_sample(raw, ID).mask[5] == -1).all()


def test_lat_lon_is_the_centre_pixel_in_wgs84(raw):
    image = np.full((6, 4, 6), 0.1, dtype=np.float32)
    rewrite(bs.image_path(raw, ID), image, crs="EPSG:4326", transform=Affine(0.5, 0, -120.0, 0, -0.5, 40.0))
    rewrite(bs.mask_path(raw, ID), np.zeros((1, 4, 6), dtype=np.uint8), crs="EPSG:4326")
    sample = SOURCE.read_sample(raw, ID)
    assert (sample.lat, sample.lon) == (38.75, -118.25)  # centre of pixel (row 2, col 3)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("subsetted_512x512_HLS.S30.T10SDH.2020248.v1.4_merged.tif", "2020-09-04T12:00:00"),
        ("T11SKU.2019001.v1", "2019-01-01T12:00:00"),
        ("T11SKU.2020366.v1", "2020-12-31T12:00:00"),
    ],
)
def test_parse_date(name, expected):
    assert bs.parse_date(name, "x") == expected


@pytest.mark.parametrize(("name", "match"), [("T11SKU.2019366.v1", "no day 366 in 2019"), ("Ghana_1", "no HLS tile")])
def test_parse_date_rejects(name, match):
    with pytest.raises(DataError, match=match):
        bs.parse_date(name, "split.txt")


# --- bad inputs ---------------------------------------------------------------------------------------------------


def test_missing_file_named_with_the_split(raw):
    bs.mask_path(raw, ID).unlink()
    (raw / "unrelated.txt").write_text("x")
    with pytest.raises(DataError) as info:
        SOURCE.source_files(raw, "train", [ID, "T10SFE.2020267.v1"])
    message = str(info.value)
    assert "split train: 1 sample id(s)" in message and "--raw" in message
    assert f"found 1 image(s) and 0 mask(s) among the matching files {bs.image_path(raw, ID).name}" in message
    with pytest.raises(DataError, match=r"id T10XXX\.2020001\.v1: no file matches \(expected .*T10XXX\.2020001"):
        SOURCE.source_files(raw, "val", ["T10XXX.2020001.v1"])
    with pytest.raises(DataError, match="does not exist"):
        SOURCE.source_files(raw / "nowhere", "val", [ID])


def test_two_images_for_one_id_are_listed(raw):
    copy = raw / f"old_{bs.image_path(raw, ID).name}"
    shutil.copy(bs.image_path(raw, ID), copy)
    with pytest.raises(DataError, match=rf"found 2 image\(s\) and 1 mask\(s\).*{copy.name}"):
        SOURCE.source_files(raw, "train", [ID])
    with pytest.raises(DataError, match=rf"found 2 image\(s\).*{copy.name}"):
        SOURCE.read_sample(raw, ID)


def test_source_files_lists_image_and_mask(raw):
    files = SOURCE.source_files(raw, "train", [ID])
    assert files == [bs.image_path(raw, ID), bs.mask_path(raw, ID)]


@pytest.mark.parametrize(
    ("which", "data", "match"),
    [
        ("image", np.zeros((5, 32, 32), np.float32), r"_merged\.tif: 5 band\(s\), expected the 6 HLS bands"),
        ("image", np.zeros((6, 32, 32), np.int16), r"_merged\.tif: dtype int16, expected reflectance"),
        ("image", np.full((6, 32, 32), 1200.0, np.float32), r"_merged\.tif: values up to 1200 are not reflectance"),
        ("mask", np.zeros((2, 32, 32), np.uint8), r"mask\.tif: 2 bands, expected 1"),
        ("mask", np.zeros((1, 32, 32), np.float32), r"mask\.tif: mask dtype float32"),
        ("mask", np.full((1, 32, 32), 2, np.uint8), r"mask\.tif: mask value\(s\) \[2\] outside \{-1, 0, 1\}"),
        ("mask", np.zeros((1, 16, 32), np.uint8), r"32x32 pixels but .*mask\.tif is 16x32"),
    ],
)
def test_malformed_files(raw, which, data, match):
    path = bs.image_path(raw, ID) if which == "image" else bs.mask_path(raw, ID)
    rewrite(path, data)
    with pytest.raises(DataError, match=match) as info:
        SOURCE.read_sample(raw, ID)
    assert "hls_burn_scars" in str(info.value)  # says how to fix it


def test_not_a_geotiff(raw):
    bs.image_path(raw, ID).write_text("not a tiff")
    with pytest.raises(DataError, match="cannot be read as a GeoTIFF"):
        SOURCE.read_sample(raw, ID)


def test_info_and_split_files(tmp_path):
    info = SOURCE.info
    assert (info.bands, info.classes, info.gsd, info.scale) == (
        ("BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2"),
        ("Not burned", "Burn scar"),
        30.0,
        1.0,
    )
    assert info.splits == ("train", "val", "test")
    sizes = {s: len(read_split_ids(SOURCE.split_file(s, SOURCE.default_splits_dir), s)) for s in info.splits}
    assert sizes == {"train": 524, "val": 160, "test": 120}
    assert SOURCE.split_file("val", tmp_path) == tmp_path / "val_data.txt"
    with pytest.raises(ConfigError, match="unknown burn_scars split 'valid'"):
        SOURCE.split_file("valid", tmp_path)


# --- the synthetic writer ---------------------------------------------------------------------------------------


def test_synthetic_files_are_native(tmp_path):
    splits = get_writer("burn_scars")(tmp_path, counts={"train": 3, "val": 1, "test": 2}, size=32)
    assert splits == tmp_path / "splits"
    for split, name in bs.SPLIT_FILES.items():
        official = read_split_ids(bs.BurnScarsSource.default_splits_dir / name, split)
        assert (splits / name).read_text() == "".join(
            f"{i}\n" for i in official[: {"train": 3, "val": 1, "test": 2}[split]]
        )
    tifs = sorted(p.name for p in tmp_path.glob("*.tif"))
    assert len(tifs) == 12 and all(t.startswith("subsetted_512x512_HLS.S30.T") for t in tifs)
    mask_dtypes = set()
    for sample_id in read_split_ids(splits / "train_data.txt", "train"):
        with rasterio.open(bs.image_path(tmp_path, sample_id)) as src:
            image, crs, transform = src.read(), src.crs, src.transform
            assert src.count == 6 and src.dtypes[0] == "float32"
        assert crs.to_epsg() == 32600 + int(sample_id[1:3]) and (transform.a, -transform.e) == (30.0, 30.0)
        assert np.isnan(image).any() and np.nanmax(image) <= 0.6
        valid = image[np.isfinite(image)]
        assert ((valid >= 0) | (valid == -9999)).all()
        with rasterio.open(bs.mask_path(tmp_path, sample_id)) as src:
            mask_dtypes.add(src.dtypes[0])
            assert set(np.unique(src.read())) <= {-1, 0, 1}
    assert mask_dtypes <= {"uint8", "int16"}


def test_burn_scars_are_spectrally_distinct(tmp_path):
    write_burn_scars(tmp_path, counts={"train": 2, "val": 1, "test": 1}, size=64)
    sample = SOURCE.read_sample(tmp_path, ID)
    burned, unburned = sample.mask == 1, sample.mask == 0
    nir, swir2 = sample.image[3], sample.image[5]
    assert nir[burned].mean() < 0.5 * nir[unburned].mean()
    assert swir2[burned].mean() > nir[burned].mean() and BURN_SCAR[5] > BURN_SCAR[3]
    assert 0.03 < burned.mean() < 0.6


def test_synthetic_is_deterministic_per_seed(tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        write_burn_scars(tmp_path / name, counts={"train": 1, "val": 1, "test": 1}, size=32, seed=seed)
    a, b, c = (expected_image(bs.image_path(tmp_path / n, ID))[0] for n in "abc")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"counts": {"train": 0}}, "1..524"),
        ({"counts": {"test": 121}}, "1..120"),
        ({"counts": {"valid": 1}}, "valid"),
        ({"size": 8}, "size"),
    ],
)
def test_synthetic_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        write_burn_scars(tmp_path, **kwargs)


def test_mgrs_squares():
    crs, easting, northing = mgrs_square("10SDH")
    assert (crs.to_epsg(), easting, northing) == (32610, 400_000.0, 4_200_000.0)
    assert mgrs_square("33UUP")[1:] == (300_000.0, 5_300_000.0)
    assert mgrs_square("19HCS")[0].to_epsg() == 32719  # southern hemisphere
    tiles = {
        bs.NAME_PATTERN.search(i).group("tile")
        for s, name in bs.SPLIT_FILES.items()
        for i in read_split_ids(bs.BurnScarsSource.default_splits_dir / name, s)
    }
    for tile in tiles:  # every official chip lies in the contiguous United States
        crs, easting, northing = mgrs_square(tile)
        lons, lats = rasterio.warp.transform(crs, "EPSG:4326", [easting + 5e4], [northing + 5e4])
        assert 24 < lats[0] < 50 and -125 < lons[0] < -66, tile
    for bad in ("10SSH", "10IDH", "99SDH", "10SD", "10SDW"):
        with pytest.raises(ConfigError, match=r"MGRS|100 km square"):
            mgrs_square(bad)
