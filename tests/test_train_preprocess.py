"""The study's normalisation: its constants, the plan-time refusals, and the device-side batch preprocessing."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from geopeft.data.normalisation import BandStats, InputNorm, resolve
from geopeft.data.registry import dataset_names, get_dataset
from geopeft.data.transforms import d4
from geopeft.errors import ConfigError
from geopeft.train.preprocess import BatchPreprocess

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "normalisation.json"


@pytest.mark.skipif(not REFERENCE.is_file(), reason="the study's reference folder is not beside this checkout")
@pytest.mark.parametrize("name", ["sen1floods11", "burn_scars", "reben_7k", "m_cashew_plantation", "m_sa_crop_type"])
def test_each_dataset_carries_the_studys_constants(name):
    ref = json.loads(REFERENCE.read_text())[name]
    info = get_dataset(name)
    assert info.study_stats is not None
    assert info.study_stats.mean == ref["mean"] and info.study_stats.std == ref["std"]
    assert info.scale == ref["constant_scale"]
    assert "peft-geofm" in info.study_stats.source


def test_every_dataset_has_published_statistics_for_its_bands():
    for name in dataset_names():
        info = get_dataset(name)
        assert info.study_stats is not None and set(info.study_stats.mean) == set(info.bands), name


def test_resolve_selects_bands_in_channel_order():
    info = get_dataset("sen1floods11")
    norm = resolve("study", info.name, ["RED", "BLUE"], scale=info.scale, study=info.study_stats)
    assert norm.mean == (0.12353792, 0.1412956) and norm.std == (0.08692279, 0.07406382)
    assert norm.kind == "study" and norm.scale == 1e-4
    assert InputNorm.from_dict(json.loads(json.dumps(norm.to_dict())), "result.json") == norm


def test_zero_std_band_is_refused_with_its_name():
    info = get_dataset("m_sa_crop_type")
    with pytest.raises(ConfigError, match=r"cell A: band\(s\) CLOUD_PROBABILITY of m_sa_crop_type have std 0 .*drop"):
        resolve("study", info.name, ["BLUE", "CLOUD_PROBABILITY"], scale=1.0, study=info.study_stats, where="cell A")
    resolve("study", info.name, ["BLUE"], scale=1.0, study=info.study_stats)  # the other bands are fine


def test_train_split_statistics_and_missing_ones():
    own = BandStats(mean={"BLUE": 1.0}, std={"BLUE": 2.0}, source="train split of x.h5")
    norm = resolve("train_split", "d", ["BLUE"], scale=1.0, study=None, train_split=own)
    assert (norm.mean, norm.std, norm.kind) == ((1.0,), (2.0,), "train_split")
    with pytest.raises(ConfigError, match=r"no published normalisation statistics; set train\.normalisation"):
        resolve("study", "d", ["BLUE"], scale=1.0, study=None)
    with pytest.raises(ConfigError, match=r"gives no study statistics for band\(s\) RED"):
        resolve("study", "d", ["RED"], scale=1.0, study=own)


def _study_order(raw: np.ndarray, k: int, scale: float, mean: list[float], std: list[float], pad: int) -> np.ndarray:
    """peft-geofm's order with numpy: float32 * scale in the dataset, D4, then Normalize and reflect-pad."""
    x = raw.astype(np.float32) * scale
    x, _ = d4(x, np.zeros(raw.shape[1:], np.int16), k)
    m = np.asarray(mean, dtype=np.float32)[:, None, None]
    s = np.asarray(std, dtype=np.float32)[:, None, None]
    x = (x - m) / s
    return np.pad(x, ((0, 0), (0, pad), (0, pad)), mode="reflect") if pad else x


@pytest.mark.parametrize(("name", "dtype", "pad"), [("sen1floods11", np.int16, 0), ("reben_7k", np.uint16, 8)])
def test_device_preprocessing_equals_the_studys_order_bit_for_bit(name, dtype, pad):
    info = get_dataset(name)
    bands = list(info.bands)[:4]
    norm = resolve("study", name, bands, scale=info.scale, study=info.study_stats)
    prep = BatchPreprocess(norm, pad_to=info.pad_to, ignore_index=-1)
    rng = np.random.default_rng(0)
    size = 120 if pad else 64
    raws = rng.integers(0, 10000, (3, len(bands), size, size)).astype(dtype)
    ks = [1, 4, 7]
    # our order: D4 on the stored dtype (the workers), then scale/normalise/pad batch-wise (the device)
    augmented = np.stack([d4(r, np.zeros((size, size), np.int16), k)[0] for r, k in zip(raws, ks, strict=True)])
    ours = prep.image(torch.from_numpy(augmented))
    expected = np.stack(
        [_study_order(r, k, info.scale, norm.mean, norm.std, pad) for r, k in zip(raws, ks, strict=True)]
    )
    assert ours.dtype == torch.float32 and ours.shape == (3, len(bands), size + pad, size + pad)
    assert torch.equal(ours, torch.from_numpy(expected))
    assert prep.size(size, size) == (size + pad, size + pad)


def test_mask_is_padded_with_the_ignore_index_and_widened():
    norm = InputNorm(("BLUE",), 1.0, (0.0,), (1.0,), "study", "test")
    mask = torch.tensor([[[0, 1], [1, -1]]], dtype=torch.int16)
    out = BatchPreprocess(norm, pad_to=3).mask(mask)
    assert out.dtype == torch.int64
    assert out.tolist() == [[[0, 1, -1], [1, -1, -1], [-1, -1, -1]]]
    assert BatchPreprocess(norm).mask(mask).tolist() == mask.tolist()


def test_wrong_band_count_is_one_clear_error():
    norm = InputNorm(("BLUE", "RED"), 1.0, (0.0, 0.0), (1.0, 1.0), "study", "test")
    with pytest.raises(ConfigError, match=r"expected a \[B, 2, H, W\] batch of BLUE, RED, got shape \(1, 3, 4, 4\)"):
        BatchPreprocess(norm).image(torch.zeros(1, 3, 4, 4, dtype=torch.int16))
