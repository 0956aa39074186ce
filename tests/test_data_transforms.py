from __future__ import annotations

import numpy as np
import pytest

from geopeft.data.transforms import D4_SIZE, d4, normalise
from geopeft.errors import ConfigError


def test_d4_transforms_are_distinct_and_consistent():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 1000, (3, 5, 5)).astype(np.int16)
    mask = image[1].astype(np.int64)
    outputs = []
    for k in range(D4_SIZE):
        img, msk = d4(image, mask, k)
        assert img.shape == image.shape and msk.shape == mask.shape
        assert img.flags["C_CONTIGUOUS"] and msk.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(img[1], msk)  # same geometric transform on image and mask
        outputs.append(img.tobytes())
    assert len(set(outputs)) == D4_SIZE
    np.testing.assert_array_equal(d4(image, mask, 0)[0], image)


def test_d4_matches_rotation_and_flip():
    image = np.arange(12).reshape(1, 3, 4)
    img, msk = d4(image, image[0], 5)
    np.testing.assert_array_equal(img[0], np.fliplr(np.rot90(image[0])))
    assert img.shape == (1, 4, 3) and msk.shape == (4, 3)


@pytest.mark.parametrize("k", [-1, 8, 2.0])
def test_d4_rejects_bad_k(k):
    with pytest.raises(ConfigError, match="k must be"):
        d4(np.zeros((1, 2, 2)), np.zeros((2, 2)), k)


def test_d4_rejects_mismatched_mask():
    with pytest.raises(ConfigError, match="share H and W"):
        d4(np.zeros((1, 2, 2)), np.zeros((3, 2)), 1)


def test_normalise():
    image = np.array([[[1000, 3000]], [[0, 10000]]], dtype=np.int16)
    out = normalise(image, [0.2, 0.5], [0.1, 0.5], scale=1e-4)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[[-1.0, 1.0]], [[-1.0, 1.0]]], rtol=1e-6)
    np.testing.assert_allclose(normalise(image.astype(np.float32), [0, 0], [2, 2]), image / 2)
    assert image[0, 0, 0] == 1000  # input untouched


def test_normalise_rejects_wrong_stats():
    with pytest.raises(ConfigError, match="one mean and std per band"):
        normalise(np.zeros((3, 2, 2)), [0, 0], [1, 1])
    with pytest.raises(ConfigError, match="non-zero"):
        normalise(np.zeros((1, 2, 2)), [0], [0])


def test_pad_right_bottom_matches_torch_reflect_and_ignores_the_mask():
    import torch

    from geopeft.data.transforms import pad_right_bottom

    image = np.arange(2 * 5 * 5, dtype=np.float32).reshape(2, 5, 5)
    mask = np.zeros((5, 5), dtype=np.int16)
    padded, padded_mask = pad_right_bottom(image, mask, 8)
    expected = torch.nn.functional.pad(torch.from_numpy(image)[None], (0, 3, 0, 3), mode="reflect")[0].numpy()
    np.testing.assert_array_equal(padded, expected)
    assert (padded_mask[5:] == -1).all() and (padded_mask[:, 5:] == -1).all() and (padded_mask[:5, :5] == 0).all()
    same, same_mask = pad_right_bottom(image, mask, 5)
    assert same is image and same_mask is mask
