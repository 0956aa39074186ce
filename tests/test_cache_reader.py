from __future__ import annotations

import pickle
import shutil
from dataclasses import replace

import h5py
import numpy as np
import pytest
import rasterio
import torch
from torch.utils.data import DataLoader

from geopeft.cache.build import cache_path, prepare
from geopeft.cache.reader import CacheDataset, d4_into, open_split
from geopeft.data import sen1floods11 as s1f
from geopeft.data.normalisation import resolve
from geopeft.data.transforms import d4
from geopeft.errors import CacheError, ConfigError
from geopeft.train.loaders import Batched, as_batch
from geopeft.train.preprocess import BatchPreprocess

COUNTS = {"train": 6, "val": 2, "test": 2, "bolivia": 3}
BANDS = ("SWIR_1", "BLUE", "NIR_NARROW", "RED")
REBUILD = "`geopeft prepare sen1floods11 --raw <RAW_DIR> --cache "


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from geopeft.data.synthetic import write_sen1floods11

    root = tmp_path_factory.mktemp("s1f")
    splits = write_sen1floods11(root / "raw", counts=COUNTS, size=32)
    prepare("sen1floods11", root / "raw", root / "cache", splits_dir=splits, progress=False)
    return root / "raw", root / "cache"


@pytest.fixture()
def cache_copy(built, tmp_path):
    shutil.copytree(built[1], tmp_path / "cache")
    return tmp_path / "cache"


def test_loader_with_workers_yields_stored_dtype_batches(built):
    ds = open_split(built[1], "sen1floods11", "train", bands=BANDS, train=True)
    assert (len(ds), ds.num_classes, ds.bands, ds.shape) == (6, 2, BANDS, (4, 32, 32))
    loader = DataLoader(Batched(ds), batch_size=4, num_workers=2, collate_fn=as_batch)
    batches = list(loader)
    assert [b["image"].shape for b in batches] == [torch.Size([4, 4, 32, 32]), torch.Size([2, 4, 32, 32])]
    images = torch.cat([b["image"] for b in batches])
    masks = torch.cat([b["mask"] for b in batches])
    assert images.dtype == torch.int16 and masks.dtype == torch.int16 and masks.shape == (6, 32, 32)
    assert (masks == -1).any() and set(masks.unique().tolist()) == {-1, 0, 1}
    assert sorted(torch.cat([b["index"] for b in batches]).tolist()) == list(range(6))
    assert batches[0]["metadata"]["gsd"].tolist() == [10.0] * 4
    # standardised on the device with the train split's own statistics: about zero mean, unit variance per band
    norm = resolve("train_split", "sen1floods11", BANDS, scale=1e-4, study=None, train_split=ds.header.train_stats())
    per_band = BatchPreprocess(norm).image(images).transpose(0, 1).reshape(4, -1)
    assert per_band.mean(dim=1).abs().max() < 1e-3
    assert (per_band.std(dim=1) - 1).abs().max() < 1e-2
    # a plain DataLoader over the dataset collates single samples as usual
    plain = next(iter(DataLoader(ds, batch_size=2)))
    assert plain["image"].shape == (2, 4, 32, 32) and plain["image"].dtype == torch.int16


def test_band_order_and_values_are_the_geotiffs(built):
    ds = open_split(built[1], "sen1floods11", "test", bands=BANDS, train=False)
    sample = ds[1]
    sample_id = ds.metadata(1).id
    with rasterio.open(s1f.image_path(built[0], sample_id)) as src:
        raw = src.read()
    with rasterio.open(s1f.label_path(built[0], sample_id)) as src:
        label = src.read(1)
    index = [s1f.INFO.bands.index(b) for b in BANDS]
    np.testing.assert_array_equal(sample["image"].numpy(), raw[index])
    np.testing.assert_array_equal(sample["mask"].numpy(), label)
    assert sample["index"] == 1


def test_train_augmentation_is_one_d4_element_on_image_and_mask(built):
    plain = open_split(built[1], "sen1floods11", "train", bands=BANDS, train=False)[0]
    augmented = open_split(built[1], "sen1floods11", "train", bands=BANDS, train=True)
    seen = set()
    for epoch in range(24):  # the element is drawn from (seed, epoch, index)
        augmented.set_epoch(0, epoch)
        sample = augmented[0]
        matches = [
            k
            for k in range(8)
            if all(
                np.array_equal(a, b)
                for a, b in zip(
                    d4(plain["image"].numpy(), plain["mask"].numpy(), k),
                    (sample["image"].numpy(), sample["mask"].numpy()),
                    strict=True,
                )
            )
        ]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 4


def test_bolivia_region_and_metadata(built):
    ds = open_split(built[1], "sen1floods11", "bolivia", bands=s1f.INFO.bands, train=False)
    assert len(ds) == 3 and ds[2]["image"].shape == (13, 32, 32)
    meta = [ds.metadata(i) for i in range(3)]
    assert [m.id for m in meta] == ["Bolivia_103757", "Bolivia_129334", "Bolivia_195474"]
    assert all(m.date == "2018-02-15T12:00:00" and -16 < m.lat < -13 and -66 < m.lon < -64 for m in meta)


def test_pickling_drops_the_handle(built):
    ds = open_split(built[1], "sen1floods11", "val", bands=BANDS, train=False)
    first = ds[0]["image"]
    assert ds._file is not None
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._file is None
    torch.testing.assert_close(clone[0]["image"], first)
    ds.close()
    torch.testing.assert_close(ds[0]["image"], first)


def test_bad_requests(built):
    with pytest.raises(ConfigError, match=r"band\(s\) 'THERMAL' not available"):
        open_split(built[1], "sen1floods11", "val", bands=["THERMAL"], train=False)
    with pytest.raises(ConfigError, match="unknown sen1floods11 split 'ood'"):
        open_split(built[1], "sen1floods11", "ood", bands=BANDS, train=False)
    with pytest.raises(ConfigError, match="at least one band"):
        open_split(built[1], "sen1floods11", "val", bands=[], train=False)
    with pytest.raises(IndexError):
        open_split(built[1], "sen1floods11", "val", bands=BANDS, train=False)[2]


def test_missing_cache(tmp_path):
    with pytest.raises(CacheError) as info:
        open_split(tmp_path, "sen1floods11", "test", bands=BANDS, train=False)
    assert str(cache_path(tmp_path, "sen1floods11", "test")) in str(info.value)
    assert REBUILD + f"{tmp_path}`" in str(info.value)


def test_truncated_cache(cache_copy):
    path = cache_path(cache_copy, "sen1floods11", "train")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CacheError, match="corrupt or truncated") as info:
        open_split(cache_copy, "sen1floods11", "train", bands=BANDS, train=True)
    assert str(path) in str(info.value) and REBUILD in str(info.value)


def test_garbage_file(cache_copy):
    path = cache_path(cache_copy, "sen1floods11", "val")
    path.write_bytes(b"not hdf5 at all")
    with pytest.raises(CacheError, match=r"val\.h5: cannot be read"):
        open_split(cache_copy, "sen1floods11", "val", bands=BANDS, train=False)


def test_corrupt_chunk_is_reported_on_read(cache_copy):
    path = cache_path(cache_copy, "sen1floods11", "val")
    with h5py.File(path) as f:
        offset = f["images"].id.get_chunk_info(1).byte_offset
    data = bytearray(path.read_bytes())
    data[offset : offset + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    ds = open_split(cache_copy, "sen1floods11", "val", bands=BANDS, train=False)
    with pytest.raises(CacheError, match="sample 1 cannot be read") as info:
        ds[1]
    assert REBUILD in str(info.value)


@pytest.mark.parametrize(
    ("attr", "value", "match"),
    [
        ("builder_version", 999, "builder version 999"),
        ("split", "val", "holds sen1floods11/val"),
        ("mean", [0.0] * 13, "key"),
    ],
)
def test_mismatched_attributes(cache_copy, attr, value, match):
    path = cache_path(cache_copy, "sen1floods11", "test")
    with h5py.File(path, "a") as f:
        f.attrs[attr] = value
    with pytest.raises(CacheError, match=match) as info:
        open_split(cache_copy, "sen1floods11", "test", bands=BANDS, train=False)
    assert REBUILD in str(info.value)


def test_dataset_class_is_exported():
    assert issubclass(CacheDataset, torch.utils.data.Dataset)


@pytest.mark.parametrize("k", range(8))
def test_d4_into_is_transforms_d4(k):
    rng = np.random.default_rng(k)
    image, mask = rng.integers(-5, 5, (3, 6, 6)).astype(np.int16), rng.integers(-1, 2, (6, 6)).astype(np.int16)
    want_image, want_mask = d4(image, mask, k)
    out_image, out_mask = torch.empty(3, 6, 6, dtype=torch.int16), torch.empty(6, 6, dtype=torch.int16)
    d4_into(torch.from_numpy(image), k, out_image)
    d4_into(torch.from_numpy(mask), k, out_mask)
    assert np.array_equal(out_image.numpy(), want_image) and np.array_equal(out_mask.numpy(), want_mask)


@pytest.mark.parametrize("bands", [BANDS, s1f.INFO.bands])
def test_read_batch_equals_single_samples_for_every_d4_element(built, bands):
    ds = open_split(built[1], "sen1floods11", "train", bands=bands, train=True)
    with h5py.File(cache_path(built[1], "sen1floods11", "train")) as f:
        stored, stored_masks = f["images"][:], f["masks"][:]
    index = [s1f.INFO.bands.index(b) for b in bands]
    elements = set()
    for epoch in range(12):
        ds.set_epoch(3, epoch)
        batch = ds.read_batch([5, 0, 2, 1, 4, 3])
        for j, i in enumerate([5, 0, 2, 1, 4, 3]):
            k = ds.d4_element(i)
            elements.add(k)
            image, mask = d4(stored[i][index], stored_masks[i], k)
            assert np.array_equal(batch["image"][j].numpy(), image) and np.array_equal(batch["mask"][j].numpy(), mask)
            assert torch.equal(ds[i]["image"], batch["image"][j])
    assert len(elements) == 8


def test_train_split_preprocessing_is_normalise_bit_for_bit(built):
    """Device-side standardisation with the stored train statistics is exactly ``transforms.normalise``."""
    from geopeft.data.transforms import normalise

    ds = open_split(built[1], "sen1floods11", "val", bands=BANDS, train=False)
    index = [s1f.INFO.bands.index(b) for b in BANDS]
    mean, std = np.array(ds.header.mean)[index], np.array(ds.header.std)[index]
    norm = resolve("train_split", "sen1floods11", BANDS, scale=1e-4, study=None, train_split=ds.header.train_stats())
    batch = ds.read_batch([0, 1])
    expected = np.stack([normalise(img, mean, std, scale=ds.header.scale) for img in batch["image"].numpy()])
    np.testing.assert_array_equal(BatchPreprocess(norm).image(batch["image"]).numpy(), expected)


def test_non_square_samples_cannot_be_augmented(built):
    header = open_split(built[1], "sen1floods11", "val", bands=BANDS, train=False).header
    oblong = replace(header, shape=(13, 32, 16))
    with pytest.raises(ConfigError, match=r"D4 augmentation needs square samples, this cache holds 32x16"):
        CacheDataset(oblong, BANDS, train=True)
