"""Every cache codec round-trips; plugin codecs load their filter where needed; the conversion is exact."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from geopeft.cache import schema
from geopeft.cache.build import cache_path, prepare
from geopeft.cache.reader import CacheDataset, open_split
from geopeft.data.normalisation import InputNorm
from geopeft.data.synthetic import write_sen1floods11
from geopeft.data.transforms import normalise
from geopeft.errors import CacheError
from geopeft.train.preprocess import BatchPreprocess

pytest.importorskip("hdf5plugin")

COUNTS = {"train": 3, "val": 1, "test": 1, "bolivia": 2}
BANDS = ("SWIR_1", "BLUE", "NIR_NARROW", "RED")


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    root = tmp_path_factory.mktemp("codecs")
    splits = write_sen1floods11(root / "raw", counts=COUNTS, size=32)
    keys = {
        codec: prepare("sen1floods11", root / "raw", root / codec, splits_dir=splits, progress=False, codec=codec)
        for codec in schema.CODECS
    }
    return root, keys


def test_every_codec_reads_back_identical_samples_under_its_own_key(caches):
    root, outcomes = caches
    keys = {codec: tuple(o.key for o in split_outcomes) for codec, split_outcomes in outcomes.items()}
    assert len(set(keys.values())) == len(schema.CODECS), "the codec must change every split's key"
    reference = {}
    for codec in schema.CODECS:
        for split in COUNTS:
            path = cache_path(root / codec, "sen1floods11", split)
            with schema.open_h5(path) as f:
                stored = (f[schema.IMAGES][()], f[schema.MASKS][()], f[schema.IDS].asstr()[()].tolist())
                assert f.attrs["codec"] == codec
                assert (f[schema.IMAGES].compression is None) == (codec == "none")
            ds = open_split(root / codec, "sen1floods11", split, bands=BANDS, train=False)
            samples = [ds[i] for i in range(len(ds))]
            ds.close()
            if split not in reference:
                reference[split] = (stored, samples)
                continue
            (images, masks, ids), ref_samples = reference[split]
            assert np.array_equal(stored[0], images) and np.array_equal(stored[1], masks) and stored[2] == ids
            for got, want in zip(samples, ref_samples, strict=True):
                assert torch.equal(got["image"], want["image"]) and torch.equal(got["mask"], want["mask"])


def test_plugin_codec_decodes_in_a_fresh_process_and_in_workers(caches):
    root, _ = caches
    script = textwrap.dedent(
        f"""
        import sys
        from torch.utils.data import DataLoader
        from geopeft.cache.reader import open_split
        root = {str(root)!r}
        lzf = open_split(root + "/lzf", "sen1floods11", "train", bands={BANDS!r}, train=False)
        lzf[0]
        assert "hdf5plugin" not in sys.modules, "lzf must not import hdf5plugin"
        ds = open_split(root + "/blosc-lz4", "sen1floods11", "train", bands={BANDS!r}, train=False)
        for context in ("fork", "spawn"):
            batches = list(DataLoader(ds, batch_size=2, num_workers=2, multiprocessing_context=context))
            assert sum(len(b["index"]) for b in batches) == len(ds)
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_missing_plugin_is_a_clear_error(caches, tmp_path, monkeypatch):
    root, _ = caches
    monkeypatch.setitem(sys.modules, "hdf5plugin", None)  # makes `import hdf5plugin` raise ImportError
    with pytest.raises(CacheError, match=r"blosc-lz4.*pip install hdf5plugin"):
        schema.read_header(cache_path(root / "blosc-lz4", "sen1floods11", "val"), "sen1floods11", "val")
    with pytest.raises(CacheError, match="pip install hdf5plugin"):
        prepare("sen1floods11", root / "raw", tmp_path / "c", progress=False, codec="blosc-lz4")
    assert not (tmp_path / "c").exists()
    schema.load_plugins("lzf")  # built-in codecs need nothing


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.float32, np.float64])
@pytest.mark.parametrize("scale", [1.0, 1e-4])
@pytest.mark.parametrize("index", [None, [3, 0, 2]])
def test_device_conversion_of_every_stored_dtype_is_bit_identical_to_normalise(dtype, scale, index):
    """Selecting bands on the stored dtype, then scaling and standardising batch-wise, is exactly ``normalise``."""
    rng = np.random.default_rng(0)
    raw = (rng.normal(1000, 300, (2, 4, 8, 9))).astype(dtype)
    mean, std = rng.normal(0.1, 0.02, 4).tolist(), rng.uniform(0.01, 0.2, 4).tolist()
    sel = list(range(4)) if index is None else index
    norm = InputNorm(
        tuple("abcd"[i] for i in sel), scale, tuple(mean[i] for i in sel), tuple(std[i] for i in sel), "study", "t"
    )
    selected = torch.from_numpy(raw).index_select(1, torch.tensor(sel))
    got = BatchPreprocess(norm).image(selected).numpy()
    want = np.stack([normalise(r[sel], np.asarray(mean)[sel], np.asarray(std)[sel], scale=scale) for r in raw])
    assert got.dtype == np.float32 and np.array_equal(got, want)


def test_reader_returns_fresh_arrays(caches):
    root, _ = caches
    ds = open_split(root / "blosc-lz4", "sen1floods11", "train", bands=BANDS, train=True)
    first = ds[0]
    kept = first["image"].clone(), first["mask"].clone()
    for i in range(len(ds)):
        ds[i]
    assert torch.equal(first["image"], kept[0]) and torch.equal(first["mask"], kept[1])
    assert sum(len(b["index"]) for b in DataLoader(ds, batch_size=2)) == len(ds)
    with h5py.File(cache_path(root / "blosc-lz4", "sen1floods11", "train")) as f:
        assert f[schema.IMAGES].chunks == (1, *f[schema.IMAGES].shape[1:])


def test_prepare_cli_chooses_the_codec_and_names_the_choices_for_a_bad_one(caches, tmp_path):
    from typer.testing import CliRunner

    from hpc.cli import app

    root, _ = caches
    args = ["prepare", "sen1floods11", "--raw", str(root / "raw"), "--cache", str(tmp_path / "c")]
    splits = ["--splits", str(root / "raw" / "splits")] if (root / "raw" / "splits").is_dir() else []
    result = CliRunner().invoke(app, [*args, *splits, "--codec", "blosc-lz4"])
    assert result.exit_code == 0, result.output
    with schema.open_h5(cache_path(tmp_path / "c", "sen1floods11", "val")) as f:
        assert f.attrs["codec"] == "blosc-lz4"
    default = CliRunner().invoke(app, [*args[:-1], str(tmp_path / "d"), *splits])
    assert default.exit_code == 0, default.output
    with schema.open_h5(cache_path(tmp_path / "d", "sen1floods11", "val")) as f:
        assert f.attrs["codec"] == schema.DEFAULT_CODEC == "none"
    bad = CliRunner().invoke(app, [*args, *splits, "--codec", "zip"])
    assert bad.exit_code == 2 and "codec" in bad.output and "blosc-lz4" in bad.output


@pytest.mark.parametrize("codec", schema.CODECS)
def test_a_flipped_byte_in_any_codec_is_an_error_not_wrong_pixels(caches, tmp_path, codec):
    root, _ = caches
    path = tmp_path / "train.h5"
    path.write_bytes(cache_path(root / codec, "sen1floods11", "train").read_bytes())
    with h5py.File(path) as f:
        info = f[schema.IMAGES].id.get_chunk_info(1)
    data = bytearray(path.read_bytes())
    data[info.byte_offset + info.size // 2] ^= 0x01
    path.write_bytes(bytes(data))
    header = schema.read_header(path, "sen1floods11", "train")
    ds = CacheDataset(header, BANDS, train=False)
    ds[0]  # the other chunks still read
    with pytest.raises(CacheError, match="sample 1 cannot be read"):
        ds[1]
