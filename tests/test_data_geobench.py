from __future__ import annotations

import json
import re

import h5py
import numpy as np
import pytest
import torch
from helpers import preprocessed

from geopeft.cache.build import prepare
from geopeft.cache.reader import open_split
from geopeft.data import geobench as gb
from geopeft.data.registry import get_dataset, get_source, read_split_ids
from geopeft.data.synthetic import geobench as synth
from geopeft.data.synthetic.registry import get_writer
from geopeft.errors import ConfigError, DataError

NAMES = ("m_cashew_plantation", "m_sa_crop_type")
COUNTS = {"train": 5, "val": 2, "test": 3}
BANDS = ("CLOUD_PROBABILITY", "SWIR_2", "BLUE", "NIR_NARROW")
SIZE = 32


@pytest.fixture(scope="module", params=NAMES)
def built(request, tmp_path_factory):
    name = request.param
    root = tmp_path_factory.mktemp(name)
    splits = get_writer(name)(root / "raw", counts=COUNTS, size=SIZE, seed=1)
    prepare(name, root / "raw", root / "cache", splits_dir=splits, progress=False)
    return name, root / "raw", root / "cache", splits


@pytest.fixture(params=NAMES)
def raw(request, tmp_path):
    """A fresh tiny copy per test, for the tests that break files: (source, raw root, split folder, first id)."""
    source = get_source(request.param)
    splits = get_writer(request.param)(tmp_path, counts={"train": 2, "val": 1, "test": 1}, size=16)
    return source, tmp_path, splits, read_split_ids(splits / "train.txt", "train")[0]


def edit(path, drop=(), **put):
    """Delete the datasets named in ``drop`` and (re)write the datasets given as keyword arguments."""
    with h5py.File(path, "a") as f:
        for key in (*drop, *put):
            if key in f:
                del f[key]
        for key, data in put.items():
            f.create_dataset(key, data=data)


def band_keys(path):
    with h5py.File(path) as f:
        return sorted(k for k in f if k != "label")


@pytest.mark.parametrize("name", NAMES)
def test_dataset_facts(name):
    info = get_dataset(name)
    assert info.bands == gb.GEOBENCH_BANDS and len(info.bands) == 13 and info.bands[-1] == "CLOUD_PROBABILITY"
    assert "CIRRUS" not in info.bands and info.bands[9:12] == ("WATER_VAPOR", "SWIR_1", "SWIR_2")
    assert len(info.classes) == {"m_cashew_plantation": 7, "m_sa_crop_type": 10}[name]
    assert (info.splits, info.regions, info.gsd, info.scale) == (("train", "val", "test"), ("test",), 10.0, 1.0)


def test_every_split_through_a_dataloader(built):
    name, raw, cache, splits = built
    source, classes = get_source(name), len(get_dataset(name).classes)
    for split in get_dataset(name).splits:
        ids = read_split_ids(source.split_file(split, splits), split)
        ds = open_split(cache, name, split, bands=BANDS, train=split == "train")
        assert len(ds) == len(ids) == COUNTS[split]
        images, masks = preprocessed(ds, batch_size=2)
        assert images.shape == (len(ids), len(BANDS), SIZE, SIZE) and images.dtype == torch.float32
        assert masks.shape == (len(ids), SIZE, SIZE) and masks.dtype == torch.int64
        assert masks.min() >= 0 and masks.max() < classes  # the synthetic labels ignore nothing
        assert torch.isfinite(images).all()
        for i, sample_id in enumerate(ids):
            meta = ds.metadata(i)
            assert (meta.id, meta.lat, meta.lon) == (sample_id, None, None)
            if name == "m_cashew_plantation":
                date = re.search(r"\d{4}-\d{2}-\d{2}", band_keys(source.sample_path(raw, sample_id))[0]).group()
                assert meta.date == f"{date}T00:00:00"
            else:
                assert meta.date is None


def test_band_order_is_the_sorted_key_order(built):
    name, raw, cache, _ = built
    ds = open_split(cache, name, "test", bands=BANDS, train=False)
    index = [gb.GEOBENCH_BANDS.index(b) for b in BANDS]
    for i in range(len(ds)):
        with h5py.File(get_source(name).sample_path(raw, ds.metadata(i).id)) as f:
            keys = sorted(k for k in f if k != "label")
            expected = np.stack([f[keys[j]][()] for j in index]).astype(ds.header.dtype)
            label = f["label"][()]
        assert gb.band_code(keys[index[0]]) == "CLOUD" and gb.band_code(keys[index[3]]) == "08A"
        np.testing.assert_array_equal(ds[i]["image"].numpy(), expected)  # the stored values, exactly
        np.testing.assert_array_equal(ds[i]["mask"].numpy(), label)


def test_train_statistics_are_those_of_the_raw_train_split(built):
    name, raw, cache, splits = built
    source = get_source(name)
    ids = read_split_ids(splits / "train.txt", "train")
    stack = np.stack([source.read_sample(raw, i).image for i in ids]).astype(np.float64)
    header = open_split(cache, name, "val", bands=BANDS, train=False).header
    np.testing.assert_allclose(header.mean, stack.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(header.std, stack.std(axis=(0, 2, 3)), rtol=1e-5)


def test_a_band_the_dataset_lacks_is_a_clear_error(built):
    name, _, cache, _ = built
    with pytest.raises(ConfigError, match="'CIRRUS' not available; available bands: COASTAL_AEROSOL"):
        open_split(cache, name, "train", bands=("BLUE", "CIRRUS"), train=False)


def test_read_sample_native_dtypes(raw):
    source, root, _, sample_id = raw
    sample = source.read_sample(root, sample_id)
    cashew = source.info.name == "m_cashew_plantation"
    assert sample.image.shape == (13, 16, 16) and sample.image.dtype == (np.float32 if cashew else np.int16)
    assert sample.mask.dtype == np.int16 and sample.mask.min() >= 0
    assert (sample.date is not None) == cashew and (sample.lat, sample.lon) == (None, None)


def test_missing_partition_names_the_expected_path(raw):
    source, root, splits, _ = raw
    source.partition_path(root).unlink()
    with pytest.raises(DataError, match=re.escape(str(source.partition_path(root)))) as info:
        prepare(source.info.name, root, root / "cache", splits_dir=splits, progress=False)
    assert "not found" in str(info.value) and "--raw" in str(info.value)


def test_split_file_id_without_file_names_file_and_split(raw):
    source, root, splits, _ = raw
    with (splits / "valid.txt").open("a") as f:
        f.write("sample_999\n")
    with pytest.raises(DataError) as info:
        prepare(source.info.name, root, root / "cache", splits_dir=splits, progress=False)
    message = str(info.value)
    assert "split val" in message and str(source.sample_path(root, "sample_999")) in message and "--raw" in message


def test_split_file_id_from_another_partition_split(raw):
    source, root, splits, _ = raw
    test_id = read_split_ids(splits / "test.txt", "test")[0]
    with (splits / "train.txt").open("a") as f:
        f.write(f"{test_id}\n")
    with pytest.raises(DataError, match=rf"split train: id\(s\) {test_id} are not in the 'train' list of "):
        prepare(source.info.name, root, root / "cache", splits_dir=splits, progress=False)


def test_without_split_files_prepare_uses_the_native_partition(raw):
    source, root, splits, _ = raw
    outcomes = prepare(source.info.name, root, root / "cache", progress=False)
    partition = source.read_partition(root)
    assert {o.split: o.n for o in outcomes} == {split: len(ids) for split, ids in partition.items()}
    assert {o.split: o.n for o in outcomes} == {
        split: len(read_split_ids(source.split_file(split, splits), split)) for split in partition
    }


def test_missing_partition_names_the_expected_file(raw):
    source, root, _, _ = raw
    source.partition_path(root).unlink()
    with pytest.raises(DataError, match=r"default_partition\.json not found"):
        prepare(source.info.name, root, root / "cache", progress=False)


def test_write_split_files_exports_the_partition(raw):
    source, root, _, _ = raw
    out = source.write_split_files(root, root / "exported")
    partition = json.loads(source.partition_path(root).read_text())
    assert {p.name for p in out.iterdir()} == {"train.txt", "valid.txt", "test.txt"}
    for split, key in gb.PARTITION_KEYS.items():
        assert read_split_ids(source.split_file(split, out), split) == partition[key]


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ("{not json", "not JSON"),
        ("[]", "holds a list"),
        ('{"train": ["a"], "test": ["b"]}', "'valid' is missing"),
        ('{"train": ["a"], "valid": ["a"], "test": ["b"]}', "a listed more than once"),
    ],
)
def test_malformed_partition(raw, doc, match):
    source, root, _, _ = raw
    source.partition_path(root).write_text(doc)
    with pytest.raises(DataError, match=match):
        source.read_partition(root)


def test_wrong_band_count(raw):
    source, root, _, sample_id = raw
    path = source.sample_path(root, sample_id)
    edit(path, drop=[band_keys(path)[0]])
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: 12 band\(s\) .* expected the 13 GEO-Bench bands"):
        source.read_sample(root, sample_id)


def test_wrong_band_names(raw):
    source, root, _, sample_id = raw
    path = source.sample_path(root, sample_id)
    first = band_keys(path)[0]
    with h5py.File(path) as f:
        data = f[first][()]
    edit(path, drop=[first], **{"10 - SWIR - Cirrus": data})
    with pytest.raises(DataError, match=r"'10 - SWIR - Cirrus'.*expected the 13 GEO-Bench bands 01, 02"):
        source.read_sample(root, sample_id)


@pytest.mark.parametrize("dtype", ["uint8", "int64", "complex64"])
def test_wrong_dtype(raw, dtype):
    source, root, _, sample_id = raw
    path = source.sample_path(root, sample_id)
    key = band_keys(path)[3]
    edit(path, **{key: np.ones((16, 16), dtype=dtype)})
    with pytest.raises(DataError, match=rf"band '{re.escape(key)}' has dtype {dtype}, expected one of"):
        source.read_sample(root, sample_id)


@pytest.mark.parametrize("bad", ["too_high", -2, 0.5])
def test_label_outside_the_classes(raw, bad):
    source, root, _, sample_id = raw
    path = source.sample_path(root, sample_id)
    classes = len(source.info.classes)
    value = classes if bad == "too_high" else bad
    label = np.zeros((16, 16), dtype=np.float32 if isinstance(value, float) else np.int64)
    label[3, 4] = value
    edit(path, label=label)
    expected = (
        "label holds non-integer"
        if isinstance(value, float)
        else rf"label value\(s\) \[{value}\] outside -1..{classes - 1}"
    )
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: {expected}.*re-download GEO-Bench"):
        source.read_sample(root, sample_id)


def test_ignored_label_and_nan_pixels_become_minus_one(raw):
    source, root, _, sample_id = raw
    path = source.sample_path(root, sample_id)
    keys = band_keys(path)
    label = np.ones((16, 16), dtype=np.float32)
    label[0, 0], label[1, 1] = -1, np.nan
    image = np.full((16, 16), 500.0, dtype=np.float32)
    image[2, 2] = np.nan
    edit(path, label=label, **{k: image for k in keys})
    sample = source.read_sample(root, sample_id)
    assert sample.image.dtype == np.float32 and sample.image[:, 2, 2].tolist() == [0.0] * 13
    assert sorted(zip(*np.nonzero(sample.mask == -1), strict=True)) == [(0, 0), (1, 1), (2, 2)]
    assert (sample.mask[sample.mask != -1] == 1).all()


def test_shapes_and_layout_errors(raw):
    source, root, _, sample_id = raw
    path = source.sample_path(root, sample_id)
    keys = band_keys(path)
    edit(path, label=np.zeros((16, 8), dtype=np.int64))
    with pytest.raises(DataError, match=r"is 16x16 pixels but 'label' is 16x8"):
        source.read_sample(root, sample_id)
    edit(path, **{keys[0]: np.zeros((2, 16, 16), dtype=np.float32)})
    with pytest.raises(DataError, match=r"is \(2, 16, 16\), expected one 2-D array"):
        source.read_sample(root, sample_id)
    edit(path, drop=["label"])
    with pytest.raises(DataError, match="no 'label' dataset"):
        source.read_sample(root, sample_id)
    path.write_bytes(b"not an hdf5 file")
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: cannot be read as HDF5"):
        source.read_sample(root, sample_id)


def test_key_helpers():
    assert [gb.band_code(k) for k in ("02 - Blue_2019-11-17", "08A - Vegetation Red Edge", "CLOUD_PROBABILITY")] == [
        "02",
        "08A",
        "CLOUD",
    ]
    assert gb.band_code("Cloud Probability_2020-01-04") == "CLOUD"
    assert gb.parse_key_date(["02 - Blue_2019-11-17", "03 - Green_2019-11-18"], "x") == "2019-11-17T00:00:00"
    assert gb.parse_key_date(["02 - Blue"], "x") is None
    with pytest.raises(DataError, match="not a calendar date"):
        gb.parse_key_date(["02 - Blue_2019-13-40"], "x.hdf5")
    assert synth.KEY_NAMES == tuple(sorted(synth.KEY_NAMES)) and len(synth.KEY_NAMES) == 13


@pytest.mark.parametrize("name", NAMES)
def test_synthetic_native_layout(tmp_path, name):
    writer, source = get_writer(name), get_source(name)
    assert writer.__kwdefaults__["size"] == 64
    splits = writer(tmp_path, size=16)
    assert splits == tmp_path / "splits" / name
    partition = json.loads(source.partition_path(tmp_path).read_text())
    assert {key: len(ids) for key, ids in partition.items()} == {"train": 16, "valid": 6, "test": 6}
    pattern = r"sample_\d+" if source.dated else rf"{synth.SA_CROP_PREFIX}\d{{4}}_[01]"
    ids = [i for key in ("train", "valid", "test") for i in partition[key]]
    assert all(re.fullmatch(pattern, i) for i in ids) and len(set(ids)) == 28
    assert len(list((tmp_path / source.folder).glob("*.hdf5"))) == 28
    with h5py.File(source.sample_path(tmp_path, ids[0])) as f:
        keys = sorted(k for k in f if k != "label")
        date = re.search(r"_\d{4}-\d{2}-\d{2}$", keys[0])
        suffix = date.group() if source.dated else ""
        assert keys == [f"{k}{suffix}" for k in synth.KEY_NAMES]
        cloud = f[keys[-1]][()]
        assert f["label"].dtype == (np.int64 if source.dated else np.int16)
    assert set(np.unique(cloud)) <= (set(range(101)) if source.dated else {0, 1})


@pytest.mark.parametrize("name", NAMES)
def test_synthetic_is_deterministic_for_a_seed(tmp_path, name):
    for folder, seed in (("a", 3), ("b", 3), ("c", 4)):
        get_writer(name)(tmp_path / folder, counts={"train": 1, "val": 1, "test": 1}, size=16, seed=seed)
    source = get_source(name)
    sample_id = read_split_ids(tmp_path / "a" / "splits" / name / "train.txt", "train")[0]
    a, b, c = (source.read_sample(tmp_path / folder, sample_id) for folder in "abc")
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert not np.array_equal(a.image, c.image)


def test_synthetic_classes_are_spectrally_distinct(built):
    name, raw, _, splits = built
    source, classes = get_source(name), len(get_dataset(name).classes)

    def pixels(split):
        samples = [source.read_sample(raw, i) for i in read_split_ids(source.split_file(split, splits), split)]
        x = np.concatenate([s.image.reshape(13, -1).T for s in samples]).astype(np.float64)
        y = np.concatenate([s.mask.ravel() for s in samples])
        clear = x[:, -1] == 0
        assert 0.001 < 1 - clear.mean() < 0.1  # a few cloud pixels
        return x[clear, :12], y[clear]

    x, y = pixels("train")
    present = np.unique(y)
    assert len(present) >= classes - 1
    centroids = np.stack([x[y == k].mean(axis=0) for k in present])
    xt, yt = pixels("test")
    keep = np.isin(yt, present)
    nearest = present[np.argmin(((xt[keep, None, :] - centroids[None]) ** 2).sum(-1), axis=1)]
    assert (nearest == yt[keep]).mean() > 0.9


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"counts": {"tset": 1}}, "tset"), ({"counts": {"train": 0}}, "at least 1"), ({"size": 8}, "size")],
)
def test_synthetic_bad_arguments(tmp_path, kwargs, match):
    for name in NAMES:
        with pytest.raises(ConfigError, match=match):
            get_writer(name)(tmp_path, **kwargs)
