from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest
import rasterio

from geopeft.cache import build, schema
from geopeft.cache.build import cache_path, cache_state, prepare
from geopeft.data import sen1floods11 as s1f
from geopeft.data.synthetic import write_sen1floods11
from geopeft.errors import ConfigError, DataError

COUNTS = {"train": 4, "val": 2, "test": 3, "bolivia": 2}
SPLITS = ("train", "val", "test", "bolivia")


@pytest.fixture()
def raw(tmp_path):
    splits = write_sen1floods11(tmp_path / "raw", counts=COUNTS, size=32)
    return tmp_path / "raw", splits, tmp_path / "cache"


def run(raw, **kwargs):
    root, splits, cache = raw
    return prepare("sen1floods11", root, cache, splits_dir=splits, progress=False, **kwargs)


def visible_and_tmp(cache):
    folder = cache / "sen1floods11"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_prepare_builds_one_file_per_split(raw):
    outcomes = run(raw)
    assert [o.split for o in outcomes] == list(SPLITS)
    assert all(o.built for o in outcomes)
    assert {o.split: o.n for o in outcomes} == COUNTS
    assert len({o.key for o in outcomes}) == 4
    assert visible_and_tmp(raw[2]) == sorted(f"{s}.h5" for s in SPLITS)
    with h5py.File(outcomes[3].path) as f:
        assert f["images"].shape == (2, 13, 32, 32) and f["images"].dtype == np.int16
        assert f["images"].chunks == (1, 13, 32, 32) and f["images"].compression is None  # the default codec: none
        assert f["masks"].dtype == np.int16 and (f["masks"][:] == -1).any()
        assert list(f["ids"].asstr()[:]) == ["Bolivia_103757", "Bolivia_129334"]
        assert f["date"].asstr()[0] == "2018-02-15T12:00:00" and np.isfinite(f["lat"][:]).all()
        assert list(f.attrs["bands"]) == list(s1f.INFO.bands) and f.attrs["key"] == outcomes[3].key


def test_statistics_are_the_train_pixels_after_scale(raw):
    outcomes = run(raw)
    train_ids = (raw[1] / "train_data.txt").read_text().split()
    pixels = []
    for sample_id in train_ids:
        with rasterio.open(s1f.image_path(raw[0], sample_id)) as src:
            pixels.append(src.read().reshape(13, -1) * 1e-4)
    allpix = np.concatenate(pixels, axis=1)
    for outcome in outcomes:  # every split stores the train statistics
        with h5py.File(outcome.path) as f:
            np.testing.assert_allclose(f.attrs["mean"], allpix.mean(axis=1), rtol=1e-10)
            np.testing.assert_allclose(f.attrs["std"], allpix.std(axis=1), rtol=1e-8)


def test_reused_when_unchanged_and_rebuilt_when_a_source_changes(raw):
    first = run(raw)
    again = run(raw)
    assert [o.built for o in again] == [False] * 4
    assert [o.key for o in again] == [o.key for o in first]
    # a test-split image of another size: only the test split is rebuilt
    path = s1f.image_path(raw[0], "Ghana_313799")
    with rasterio.open(path) as src:
        profile, data = src.profile, src.read()
    with rasterio.open(path, "w", **{**profile, "compress": "deflate"}) as dst:
        dst.write(data // 2)
    changed = run(raw)
    assert [o.built for o in changed] == [False, False, True, False]
    assert changed[2].key != first[2].key
    assert cache_state(raw[2], "sen1floods11", raw[0], raw[1])["test"] == changed[2].key


def test_changed_train_source_rebuilds_every_split(raw):
    first = run(raw)
    path = s1f.image_path(raw[0], "Ghana_103272")
    path.write_bytes(path.read_bytes() + b"\0" * 16)  # same pixels, other size
    assert list(cache_state(raw[2], "sen1floods11", raw[0], raw[1]).values()) == [None] * 4
    outcomes = run(raw)
    assert all(o.built for o in outcomes)
    assert all(a.key != b.key for a, b in zip(first, outcomes, strict=True))


def test_changed_split_file_rebuilds_that_split(raw):
    run(raw)
    valid = raw[1] / "valid_data.txt"
    valid.write_text(valid.read_text().splitlines()[0] + "\n")
    outcomes = run(raw)
    assert [o.built for o in outcomes] == [False, True, False, False]
    assert outcomes[1].n == 1


def test_force_and_codec(raw):
    first = run(raw)
    forced = run(raw, force=True)
    assert all(o.built for o in forced) and [o.key for o in forced] == [o.key for o in first]
    packed = run(raw, codec="lzf")
    assert all(o.built for o in packed) and packed[0].key != first[0].key
    with h5py.File(packed[0].path) as f:
        assert f["images"].compression == "lzf" and f["images"].shuffle
    with pytest.raises(ConfigError, match="unknown codec 'zstd'"):
        run(raw, codec="zstd")


@pytest.mark.parametrize("exc", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_failure_mid_build_leaves_nothing_visible(raw, monkeypatch, exc):
    real = build.write_sample
    calls = []

    def flaky(f, i, sample):
        calls.append(i)
        if len(calls) > 5:  # the whole train split (4) and one val sample are written first
            raise exc
        real(f, i, sample)

    monkeypatch.setattr(build, "write_sample", flaky)
    with pytest.raises(type(exc)):
        run(raw)
    assert visible_and_tmp(raw[2]) == ["train.h5"]  # the finished train split stays, no half val file or tmp
    monkeypatch.setattr(build, "write_sample", real)
    assert [o.built for o in run(raw)] == [False, True, True, True]


def test_failure_in_the_first_split_leaves_no_file(raw, monkeypatch):
    def boom(f, i, sample):
        raise RuntimeError("boom")

    monkeypatch.setattr(build, "write_sample", boom)
    with pytest.raises(RuntimeError):
        run(raw)
    assert visible_and_tmp(raw[2]) == []


def test_bad_inputs_fail_before_building(raw):
    s1f.image_path(raw[0], "Bolivia_129334").unlink()
    with pytest.raises(DataError, match=r"split bolivia: 1 file\(s\).*Bolivia_129334_S2Hand\.tif"):
        run(raw)
    assert visible_and_tmp(raw[2]) == []
    with pytest.raises(DataError, match=r"raw folder .* does not exist"):
        prepare("sen1floods11", raw[0] / "nope", raw[2], progress=False)
    with pytest.raises(ConfigError, match="unknown dataset"):
        prepare("nope", raw[0], raw[2])


def test_cache_state_missing_corrupt_and_version(raw):
    assert cache_state(raw[2], "sen1floods11") == dict.fromkeys(SPLITS)
    outcomes = run(raw)
    assert cache_state(raw[2], "sen1floods11") == {o.split: o.key for o in outcomes}
    path = cache_path(raw[2], "sen1floods11", "val")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with h5py.File(cache_path(raw[2], "sen1floods11", "test"), "a") as f:
        f.attrs["builder_version"] = schema.BUILDER_VERSION + 1
    state = cache_state(raw[2], "sen1floods11")
    assert state["val"] is None and state["test"] is None and state["train"] == outcomes[0].key
    assert [o.built for o in run(raw)] == [False, True, True, False]


def test_build_module_does_not_import_torch():
    code = "import sys, geopeft.cache.build; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def flip_a_byte_of_chunk(path, index):
    with h5py.File(path) as f:
        info = f["images"].id.get_chunk_info(index)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2)
        byte = fh.read(1)
        fh.seek(info.byte_offset + info.size // 2)
        fh.write(bytes([byte[0] ^ 0xFF]))


def test_prepare_verifies_chunks_and_rebuilds_a_corrupt_file_keeping_it_aside(raw):
    first = run(raw)
    with h5py.File(first[1].path) as f:
        good = f["images"][:]
    flip_a_byte_of_chunk(first[1].path, 1)
    assert schema.first_bad_chunk(first[1].path).startswith("images of sample 1: ")
    assert schema.first_bad_chunk(first[0].path) is None
    again = run(raw)
    assert [o.built for o in again] == [False, True, False, False]
    assert again[1].corrupt is not None and "images of sample 1" in again[1].corrupt[1]
    aside = again[1].corrupt[0]
    assert aside.is_file() and aside.name.startswith("val.corrupt-") and aside.suffix == ".h5"
    with h5py.File(again[1].path) as f:
        np.testing.assert_array_equal(f["images"][:], good)
    assert again[1].key == first[1].key and schema.first_bad_chunk(again[1].path) is None
    # verify=False trusts the header (the fast path for a cache just verified)
    flip_a_byte_of_chunk(again[1].path, 0)
    assert [o.built for o in run(raw, verify=False)] == [False] * 4
