from __future__ import annotations

import numpy as np
import pytest
import rasterio
import rasterio.warp
import torch
from affine import Affine
from helpers import preprocessed

import geopeft.data.reben as rb
import geopeft.data.synthetic.reben as synth
from geopeft.cache.build import prepare
from geopeft.cache.reader import open_split
from geopeft.data.bands import S2_BANDS
from geopeft.data.clc import BEN19_CLASSES, CLC_TO_BEN19, CLC_TO_BEN19_NAME, UNLABELLED_CODES, clc_to_ben19
from geopeft.data.registry import get_source, read_split_ids
from geopeft.data.synthetic import get_writer
from geopeft.errors import ConfigError, DataError

SOURCE = get_source("reben_7k")
COUNTS = {"train": 4, "val": 2, "test": 2, "ood": 2, "austria": 2, "ireland": 2}
ONE_EACH = dict.fromkeys(COUNTS, 1)
BANDS = ("SWIR_2", "BLUE", "WATER_VAPOR")  # a 20 m, a 10 m and a 60 m band, out of file order
ID = "S2A_MSIL2A_20170613T101031_N9999_R022_T34VER_04_62"  # first train id of the official split
# Generous boxes around the two held-out countries (lat_min, lat_max, lon_min, lon_max).
AUSTRIA = (45.5, 49.5, 9.0, 18.0)
IRELAND = (51.0, 56.0, -11.5, -5.0)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("reben")
    splits = synth.write_reben_7k(root / "raw", counts=COUNTS)
    prepare("reben_7k", root / "raw", root / "cache", splits_dir=splits, progress=False)
    return root / "raw", splits, root / "cache"


@pytest.fixture()
def raw(tmp_path):
    synth.write_reben_7k(tmp_path, counts=ONE_EACH)
    return tmp_path


def rewrite(path, data, crs=None, transform=None, nodata=None):
    """Overwrite a GeoTIFF with ``data`` ([count, H, W]), keeping its CRS and transform unless given."""
    with rasterio.open(path) as src:
        crs, transform = crs or src.crs, transform or src.transform
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=data.shape[1],
        width=data.shape[2],
        count=data.shape[0],
        dtype=data.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
    ) as dst:
        dst.write(data)


def nearest_on_b02_grid(path, grid_path):
    """A band resampled onto B02's pixel centres by nearest pixel centre (what xarray's interp_like does)."""
    with rasterio.open(path) as src, rasterio.open(grid_path) as grid:
        band, t, g = src.read(1), src.transform, grid.transform
        fine_x = g.c + g.a * (np.arange(grid.width) + 0.5)
        fine_y = g.f + g.e * (np.arange(grid.height) + 0.5)
        coarse_x = t.c + t.a * (np.arange(src.width) + 0.5)
        coarse_y = t.f + t.e * (np.arange(src.height) + 0.5)
    cols = np.abs(fine_x[:, None] - coarse_x[None]).argmin(axis=1)
    rows = np.abs(fine_y[:, None] - coarse_y[None]).argmin(axis=1)
    return band[np.ix_(rows, cols)]


def expected_sample(raw, patch_id):
    """Image and mask computed independently of the reader: nearest resampling, CLC table, torch reflect padding."""
    grid = rb.band_path(raw, patch_id, "B02")
    image = np.stack([nearest_on_b02_grid(rb.band_path(raw, patch_id, s), grid) for s, _, _ in rb.BAND_FILES])
    with rasterio.open(rb.reference_map_path(raw, patch_id)) as src:
        codes = src.read(1)
    mask = np.vectorize(lambda c: -1 if CLC_TO_BEN19_NAME[c] is None else BEN19_CLASSES.index(CLC_TO_BEN19_NAME[c]))(
        codes
    )
    image = torch.nn.functional.pad(torch.from_numpy(image.astype(np.float32))[None], (0, 8, 0, 8), mode="reflect")
    mask = torch.nn.functional.pad(torch.from_numpy(mask)[None], (0, 8, 0, 8), value=-1)
    return image[0].numpy(), mask[0].numpy()


# --- the real path: synthetic files -> prepare -> cache -> DataLoader ------------------------------------------


def test_every_split_loads_normalised_through_a_dataloader(built):
    _, splits, cache = built
    for split in SOURCE.info.splits:
        ds = open_split(cache, "reben_7k", split, bands=BANDS, train=split == "train")
        ids = read_split_ids(SOURCE.split_file(split, splits), split)
        assert (len(ds), ds.num_classes, ds.bands) == (len(ids), 19, BANDS) == (COUNTS[split], 19, BANDS)
        assert ds.header.dtype == "uint16" and ds.header.shape == (12, 120, 120)
        assert ds[0]["image"].dtype == torch.uint16 and ds[0]["image"].shape == (3, 120, 120)  # stored, unpadded
        images, masks = preprocessed(ds, batch_size=3)
        assert images.shape == (len(ids), 3, 128, 128) and images.dtype == torch.float32
        assert masks.shape == (len(ids), 128, 128) and masks.dtype == torch.int64
        assert torch.isfinite(images).all() and set(masks.unique().tolist()) <= set(range(-1, 19))
        assert (masks >= 0).float().mean() > 0.5
        # padded after the D4 flips: the padding is at the right and bottom in every split, train included
        assert (masks[:, 120:] == -1).all() and (masks[:, :, 120:] == -1).all()
        assert (images[:, :, 120:] == images[:, :, 111:119].flip(2)).all()  # reflection, the edge row not repeated
        assert [ds.metadata(i).id for i in range(len(ds))] == ids
    train, _ = preprocessed(open_split(cache, "reben_7k", "train", bands=BANDS, train=False), batch_size=1)
    per_band = train[:, :, :120, :120].transpose(0, 1).reshape(3, -1)  # statistics of the stored, unpadded pixels
    assert per_band.mean(dim=1).abs().max() < 1e-3 and (per_band.std(dim=1) - 1).abs().max() < 1e-2


def test_values_match_nearest_resampling_and_the_clc_table(built):
    raw, _, cache = built
    ds = open_split(cache, "reben_7k", "val", bands=BANDS, train=False)
    index = [rb.INFO.bands.index(b) for b in BANDS]
    for i in range(len(ds)):
        sample, patch_id = ds[i], ds.metadata(i).id
        image, mask = expected_sample(raw, patch_id)
        # the stored values exactly; the padding to 128 happens on the device (the loader test checks it)
        np.testing.assert_array_equal(sample["image"].numpy(), image[index, :120, :120])
        np.testing.assert_array_equal(sample["mask"].numpy(), mask[:120, :120])


def test_metadata_is_the_id_date_and_the_b02_centre_pixel(built):
    raw, _, cache = built
    for split, box in (("austria", AUSTRIA), ("ireland", IRELAND)):
        ds = open_split(cache, "reben_7k", split, bands=BANDS, train=False)
        for i in range(len(ds)):
            meta = ds.metadata(i)
            assert meta.date == rb.parse_date(meta.id, "x") and meta.date.startswith(("2017-", "2018-"))
            with rasterio.open(rb.band_path(raw, meta.id, "B02")) as src:
                x, y = src.transform @ (60.5, 60.5)
                lons, lats = rasterio.warp.transform(src.crs, "EPSG:4326", [x], [y])
            assert meta.lat == pytest.approx(lats[0]) and meta.lon == pytest.approx(lons[0])
            assert box[0] < meta.lat < box[1] and box[2] < meta.lon < box[3]
    meta = open_split(cache, "reben_7k", "test", bands=BANDS, train=False).metadata(0)
    assert (meta.id, meta.date) == ("S2A_MSIL2A_20170613T101031_N9999_R022_T34VER_25_49", "2017-06-13T10:10:31")


def test_prepare_with_the_official_splits_names_the_missing_files(built):
    raw, _, _ = built
    with pytest.raises(DataError, match=r"reben_7k split train: 60918 file\(s\) named by the split file") as info:
        prepare("reben_7k", raw, raw.parent / "other_cache", progress=False)
    fifth = "S2A_MSIL2A_20170613T101031_N9999_R022_T34VER_10_73"  # the first 4 train ids were written
    message = str(info.value)
    assert f"{rb.band_path(raw, fifth, 'B01')} (id {fifth})" in message and "and 60915 more" in message
    assert "BigEarthNet v2.0" in message


# --- the reader on single patches -------------------------------------------------------------------------------


def test_read_sample(raw):
    sample = SOURCE.read_sample(raw, ID)
    assert sample.image.shape == (12, 120, 120) and sample.image.dtype == np.uint16
    assert sample.mask.shape == (120, 120) and sample.mask.dtype == np.int16
    assert sample.date == "2017-06-13T10:10:31"
    assert 62 < sample.lat < 65 and 19 < sample.lon < 24  # tile 34VER, on the Gulf of Bothnia


def test_coarse_bands_are_repeated_blocks(raw):
    with rasterio.open(rb.band_path(raw, ID, "B01")) as src:
        b01 = src.read(1)
    with rasterio.open(rb.band_path(raw, ID, "B11")) as src:
        b11 = src.read(1)
    image = SOURCE.read_sample(raw, ID).image
    np.testing.assert_array_equal(image[0, :120, :120], np.kron(b01, np.ones((6, 6), np.uint16)))
    np.testing.assert_array_equal(image[10, :120, :120], np.kron(b11, np.ones((2, 2), np.uint16)))


def test_clc_codes_map_to_ben19(raw):
    codes = np.full((1, 120, 120), 523, dtype=np.uint16)
    codes[0, :10], codes[0, 10:20], codes[0, 20:30], codes[0, 30:40] = 111, 241, 122, 999
    rewrite(rb.reference_map_path(raw, ID), codes)
    mask = SOURCE.read_sample(raw, ID).mask
    urban, permanent, marine = (BEN19_CLASSES.index(n) for n in ("Urban fabric", "Permanent crops", "Marine waters"))
    assert (mask[:10, :120] == urban).all() and (mask[10:20, :120] == permanent).all()
    assert (mask[20:40] == -1).all() and (mask[40:120, :120] == marine).all()


def test_no_data_tags_become_zero_and_ignored(raw):
    with rasterio.open(rb.band_path(raw, ID, "B09")) as src:
        b09 = src.read()
    b09[0, 2, 3] = 0
    rewrite(rb.band_path(raw, ID, "B09"), b09, nodata=0)
    codes = np.full((1, 120, 120), 311, dtype=np.uint16)
    codes[0, 100, 100] = 65535
    rewrite(rb.reference_map_path(raw, ID), codes, nodata=65535)
    sample = SOURCE.read_sample(raw, ID)
    ignored = sample.mask[:120, :120] == -1
    assert ignored[12:18, 18:24].all() and ignored[100, 100] and ignored.sum() == 37
    assert (sample.image[9, 12:18, 18:24] == 0).all() and (sample.image[9, :120, :120][~ignored] > 0).all()


def test_clc_table():
    assert len(CLC_TO_BEN19) == 45 and set(CLC_TO_BEN19.values()) == set(range(-1, 19))
    assert UNLABELLED_CODES == (122, 123, 124, 131, 132, 133, 141, 142, 332, 334, 335, 423, 999)
    assert list(BEN19_CLASSES) == sorted(BEN19_CLASSES) and len(BEN19_CLASSES) == 19
    named = {code: BEN19_CLASSES[k] for code, k in CLC_TO_BEN19.items() if k >= 0}
    assert named[241] == named[221] == "Permanent crops" and named[333] == named[321]
    assert named[421] == named[422] == "Coastal wetlands" and named[322] == named[323]
    np.testing.assert_array_equal(clc_to_ben19(np.array([[999, 312]], np.int32), "x", "y"), [[-1, 6]])
    with pytest.raises(DataError, match=r"m\.tif: value\(s\) \[0, 100\] are not CORINE Land Cover.*fix it"):
        clc_to_ben19(np.array([0, 311, 100]), "m.tif", "fix it")


def test_date_parsing():
    assert rb.parse_date("S2B_MSIL2A_20180525T094029_N9999_R036_T35VNL_01_01", "x") == "2018-05-25T09:40:29"
    with pytest.raises(DataError, match=r"split\.txt: 'Ghana_1' is not a BigEarthNet v2\.0 S2 patch id"):
        rb.parse_date("Ghana_1", "split.txt")
    with pytest.raises(DataError, match="no valid date"):
        rb.parse_date(ID.replace("20170613", "20170231"), "split.txt")


# --- bad inputs ---------------------------------------------------------------------------------------------------


def test_missing_files_are_named_with_the_split(raw):
    rb.reference_map_path(raw, ID).unlink()
    with pytest.raises(DataError) as info:
        SOURCE.source_files(raw, "train", [ID])
    message = str(info.value)
    assert message.startswith("reben_7k split train: 1 file(s) named by the split file are missing: ")
    assert f"{rb.reference_map_path(raw, ID)} (id {ID})" in message and "--raw" in message
    with pytest.raises(DataError, match=r"_reference_map\.tif: file not found; download"):
        SOURCE.read_sample(raw, ID)
    with pytest.raises(DataError, match=r"reben_7k split val: 'T10SDH\.2020248\.v1' is not a BigEarthNet"):
        SOURCE.source_files(raw, "val", ["T10SDH.2020248.v1"])
    with pytest.raises(DataError, match="does not exist"):
        SOURCE.source_files(raw / "nowhere", "val", [ID])


def test_source_files_lists_bands_then_the_map(raw):
    files = SOURCE.source_files(raw, "train", [ID])
    assert [p.name.rsplit("_", 1)[1] for p in files] == [*(f"{s}.tif" for s, _, _ in rb.BAND_FILES), "map.tif"]
    assert files[1] == raw / "BigEarthNet-S2" / "S2A_MSIL2A_20170613T101031_N9999_R022_T34VER" / ID / f"{ID}_B02.tif"


def shifted(by):
    def transform(t):
        return Affine(t.a, 0, t.c + by, 0, t.e, t.f)

    return transform


@pytest.mark.parametrize(
    ("suffix", "data", "change", "match"),
    [
        ("B03", np.zeros((2, 120, 120), np.uint16), None, r"_B03\.tif: 2 bands, expected 1"),
        ("B04", np.full((1, 120, 120), -5, np.int16), None, r"_B04\.tif: int16 values -5 \.\.\. -5 do not fit uint16"),
        ("B8A", np.zeros((1, 60, 60), np.float32), None, r"_B8A\.tif: dtype float32"),
        ("B05", np.zeros((1, 120, 120), np.uint16), None, r"_B05\.tif: 120x120 pixels of 20x20 m, expected 60x60"),
        ("B06", np.zeros((1, 60, 60), np.uint16), shifted(20), r"_B06\.tif: grid .* is not aligned with B02"),
        ("B01", np.zeros((1, 20, 20), np.uint16), "EPSG:32633", r"_B01\.tif: grid \(EPSG:32633"),
        ("reference_map", np.zeros((2, 120, 120), np.uint16), None, r"map\.tif: 2 bands, expected 1"),
        ("reference_map", np.zeros((1, 120, 120), np.float32), None, r"map\.tif: dtype float32, expected integer"),
        ("reference_map", np.zeros((1, 60, 60), np.uint16), None, r"map\.tif: 60x60 pixels, expected 120x120"),
        ("reference_map", np.full((1, 120, 120), 310, np.uint16), None, r"map\.tif: value\(s\) \[310\] are not"),
    ],
)
def test_malformed_files(raw, suffix, data, change, match):
    path = rb.reference_map_path(raw, ID) if suffix == "reference_map" else rb.band_path(raw, ID, suffix)
    with rasterio.open(path) as src:
        transform = src.transform
    if callable(change):
        rewrite(path, data, transform=change(transform))
    else:
        rewrite(path, data, crs=change)
    with pytest.raises(DataError, match=match) as info:
        SOURCE.read_sample(raw, ID)
    assert str(path) in str(info.value) and "BigEarthNet v2.0" in str(info.value)  # names the file, says the fix


def test_not_a_geotiff(raw):
    rb.band_path(raw, ID, "B12").write_text("not a tiff")
    with pytest.raises(DataError, match=r"_B12\.tif: cannot be read as a GeoTIFF"):
        SOURCE.read_sample(raw, ID)


def test_info_and_split_files(tmp_path):
    info = SOURCE.info
    assert info.bands == tuple(b for b in S2_BANDS if b != "CIRRUS")
    assert (info.classes, info.gsd, info.scale) == (BEN19_CLASSES, 10.0, 1.0)
    assert info.splits == ("train", "val", "test", "ood", "austria", "ireland")
    official = {s: read_split_ids(SOURCE.split_file(s, SOURCE.default_splits_dir), s) for s in info.splits}
    sizes = {s: len(ids) for s, ids in official.items()}
    assert sizes == {"train": 4690, "val": 946, "test": 945, "ood": 807, "austria": 8176, "ireland": 13157}
    assert set(official["ood"]) <= set(official["austria"]) | set(official["ireland"])
    assert SOURCE.split_file("austria", tmp_path) == tmp_path / "Austria.txt"
    with pytest.raises(ConfigError, match="unknown reben_7k split 'Austria'"):
        SOURCE.split_file("Austria", tmp_path)
    assert set(rb.REFERENCE_MEAN) == set(rb.REFERENCE_STD) == set(info.bands)


# --- the synthetic writer ---------------------------------------------------------------------------------------


def test_synthetic_files_are_native(tmp_path):
    counts = {"train": 2, "val": 1, "test": 1, "ood": 2, "austria": 1, "ireland": 1}
    splits = get_writer("reben_7k")(tmp_path, counts=counts)
    assert splits == tmp_path / "splits"
    for split, name in rb.SPLIT_FILES.items():
        official = read_split_ids(SOURCE.default_splits_dir / name, split)
        assert (splits / name).read_text() == "".join(f"{i}\n" for i in official[: counts[split]])
    patches = sorted((tmp_path / "BigEarthNet-S2").glob("*/*"))
    assert len(patches) == 8 and all(p.parent.name == rb.tile_folder(p.name) for p in patches)
    codes = set()
    for patch in patches:
        zone = int(rb.ID_PATTERN.match(patch.name).group("tile")[:2])
        with rasterio.open(rb.band_path(tmp_path, patch.name, "B02")) as src:
            corner = src.transform.c, src.transform.f
        for suffix, _, resolution in rb.BAND_FILES:
            with rasterio.open(rb.band_path(tmp_path, patch.name, suffix)) as src:
                side = 1200 // resolution
                assert (src.count, src.dtypes[0], src.height, src.width) == (1, "uint16", side, side)
                assert src.crs.to_epsg() == 32600 + zone and src.nodata is None
                assert (src.transform.a, -src.transform.e) == (resolution, resolution)
                assert (src.transform.c, src.transform.f) == corner
                assert 0 < src.read().min() and src.read().max() <= 10_000
        with rasterio.open(rb.reference_map_path(tmp_path, patch.name)) as src:
            assert (src.count, src.dtypes[0], src.height, src.width) == (1, "uint16", 120, 120)
            codes |= set(np.unique(src.read()).tolist())
    assert codes <= set(CLC_TO_BEN19) and codes & set(UNLABELLED_CODES) and len(codes) > 10


def test_synthetic_classes_are_spectrally_distinct(built):
    raw, splits, _ = built

    def pixels(split):
        ids = read_split_ids(SOURCE.split_file(split, splits), split)
        samples = [SOURCE.read_sample(raw, i) for i in ids]
        x = np.concatenate([s.image[:, :120, :120].reshape(12, -1).T for s in samples]).astype(np.float64)
        y = np.concatenate([s.mask[:120, :120].ravel() for s in samples])
        return x[y >= 0], y[y >= 0]

    x, y = pixels("train")
    present = np.unique(y)
    assert len(present) >= 8
    centroids = np.stack([x[y == k].mean(axis=0) for k in present])
    for split in ("test", "ireland"):
        xt, yt = pixels(split)
        keep = np.isin(yt, present)
        nearest = present[np.argmin(((xt[keep, None, :] - centroids[None]) ** 2).sum(-1), axis=1)]
        assert (nearest == yt[keep]).mean() > 0.9
    spectra = synth.class_spectra()
    gaps = np.sqrt(((spectra[:, None] - spectra[None]) ** 2).sum(-1))[np.triu_indices(19, 1)]
    assert gaps.min() > 8 * synth.NOISE


def test_synthetic_is_deterministic_per_seed(tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        synth.write_reben_7k(tmp_path / name, counts=ONE_EACH, seed=seed)
    a, b, c = (SOURCE.read_sample(tmp_path / n, ID) for n in "abc")
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"counts": {"train": 0}}, r"1\.\.4690"),
        ({"counts": {"ood": 808}}, r"1\.\.807"),
        ({"counts": {"Austria": 1}}, "Austria"),
        ({"size": 128}, "size must be 120, got 128; BigEarthNet patches are 120x120"),
    ],
)
def test_synthetic_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        synth.write_reben_7k(tmp_path, **kwargs)


def test_every_official_tile_lies_where_its_region_says():
    official = {s: read_split_ids(SOURCE.split_file(s, SOURCE.default_splits_dir), s) for s in SOURCE.info.splits}
    boxes = {"austria": AUSTRIA, "ireland": IRELAND, "train": (35.0, 72.0, -11.5, 35.0)}
    for split, box in boxes.items():
        for tile_id in {rb.tile_folder(i) + "_45_45" for i in official[split]}:  # the middle patch of each tile
            crs, west, top = synth._tile_corner(tile_id)
            lons, lats = rasterio.warp.transform(crs, "EPSG:4326", [west + 600], [top - 600])
            assert box[0] < lats[0] < box[1] and box[2] < lons[0] < box[3], tile_id
