"""Pure per-sample transforms on numpy arrays (``image`` is ``[C, H, W]``, ``mask`` is ``[H, W]``).

They run inside DataLoader workers, before the arrays become tensors, so they use numpy and never torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from geopeft.errors import ConfigError

#: Number of elements of the dihedral group D4 (4 rotations, each with or without a flip).
D4_SIZE = 8

FloatArray = npt.NDArray[np.float32]
ImageT = TypeVar("ImageT", bound=np.generic)
MaskT = TypeVar("MaskT", bound=np.generic)
Bands = Sequence[float] | npt.NDArray[np.floating[Any]]


def normalise(image: npt.NDArray[np.generic], mean: Bands, std: Bands, *, scale: float = 1.0) -> FloatArray:
    """Standardise each band: ``(image[c] * scale - mean[c]) / std[c]``, computed in float32.

    Args:
        image: ``[C, H, W]`` array of any real dtype.
        mean: ``C`` per-band means (of the scaled values).
        std: ``C`` per-band standard deviations (non-zero).
        scale: constant factor applied first (the dataset's ``scale``, e.g. 1e-4 for S2 DN).

    Returns:
        A new float32 ``[C, H, W]`` array.

    Raises:
        ConfigError: ``mean`` or ``std`` does not have one value per band, or a ``std`` is zero.
    """
    m = np.asarray(mean, dtype=np.float32)
    s = np.asarray(std, dtype=np.float32)
    if image.ndim != 3 or m.shape != (image.shape[0],) or s.shape != (image.shape[0],):
        raise ConfigError(
            f"normalise: image of shape {image.shape} needs one mean and std per band, got {m.shape} and {s.shape}"
        )
    if not np.all(s != 0):
        raise ConfigError(f"normalise: std must be non-zero for every band, got {s.tolist()}")
    out = image.astype(np.float32)
    if scale != 1.0:
        out *= np.float32(scale)
    out -= m[:, None, None]
    out /= s[:, None, None]
    return out


def d4(image: npt.NDArray[ImageT], mask: npt.NDArray[MaskT], k: int) -> tuple[npt.NDArray[ImageT], npt.NDArray[MaskT]]:
    """Apply the same element of D4 to an image and its mask.

    ``k % 4`` quarter turns counter-clockwise in the (H, W) plane, then a left-right flip when ``k >= 4``;
    ``k == 0`` is the identity. For non-square inputs odd turns swap H and W.

    Args:
        image: ``[C, H, W]``.
        mask: ``[H, W]``.
        k: which of the 8 transforms, ``0 <= k < 8``.

    Returns:
        ``(image, mask)`` transformed, as new C-contiguous arrays.

    Raises:
        ConfigError: ``k`` is outside 0..7 or the shapes do not match.
    """
    if not (isinstance(k, (int, np.integer)) and 0 <= k < D4_SIZE):
        raise ConfigError(f"d4: k must be an integer in 0..{D4_SIZE - 1}, got {k!r}")
    if image.ndim != 3 or mask.shape != image.shape[1:]:
        raise ConfigError(
            f"d4: image [C, H, W] and mask [H, W] must share H and W, got {image.shape} and {mask.shape}"
        )
    img, msk = np.rot90(image, k % 4, axes=(1, 2)), np.rot90(mask, k % 4, axes=(0, 1))
    if k >= 4:
        img, msk = img[:, :, ::-1], msk[:, ::-1]
    return np.ascontiguousarray(img), np.ascontiguousarray(msk)


def pad_right_bottom(
    image: npt.NDArray[ImageT], mask: npt.NDArray[MaskT], size: int, ignore_index: int = -1
) -> tuple[npt.NDArray[ImageT], npt.NDArray[MaskT]]:
    """Pad ``[C, H, W]`` / ``[H, W]`` to ``size`` on the right and bottom.

    The image by reflection (``F.pad(x, (0, p, 0, p), "reflect")``, as the study pads reBEN's 120 to 128), the mask
    with ``ignore_index``. A side already at least ``size`` is left as it is.
    """
    dh, dw = max(size - mask.shape[0], 0), max(size - mask.shape[1], 0)
    if not (dh or dw):
        return image, mask
    padded_image = np.pad(image, ((0, 0), (0, dh), (0, dw)), mode="reflect")
    padded_mask = np.pad(mask, ((0, dh), (0, dw)), mode="constant", constant_values=ignore_index)
    return padded_image, padded_mask
