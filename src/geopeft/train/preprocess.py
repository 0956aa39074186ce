"""The study's batch preprocessing, on the device: scale, standardise, then pad.

The cache's loaders hand over batches in the stored dtype (int16/uint16/float32), augmented on the CPU; this module
does what the study's ``on_after_batch_transfer`` does on the accelerator, in the same float32 operations and order:

1. ``x = image.float() * scale`` (the dataset's constant scale; the study applies it in the dataset as
   ``image.astype(float32) * constant_scale`` before augmenting, which D4, a permutation, commutes with exactly);
2. ``x = (x - mean) / std`` per band (torchgeo/peft-geofm ``Normalize``, float32 constants);
3. reBEN only: ``F.pad(x, (0, p, 0, p), "reflect")`` to 128 and the mask padded with the ignore index
   (peft-geofm ``NormalizeAndPad``).

The mask becomes int64 on the device. The same code runs on CPU. ``geopeft predict`` applies it to GeoTIFF tiles.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from geopeft.data.normalisation import InputNorm
from geopeft.errors import ConfigError


class BatchPreprocess:
    """Scale → standardise → pad of a batch already on its device.

    Args:
        norm: the cell's input statistics (:func:`geopeft.data.normalisation.resolve`).
        pad_to: pad H and W on the right/bottom to this size (image by reflection, mask with ``ignore_index``);
            0 for none (the dataset's ``DatasetInfo.pad_to``).
        ignore_index: the mask value of padded pixels.
    """

    def __init__(self, norm: InputNorm, *, pad_to: int = 0, ignore_index: int = -1) -> None:
        self.norm = norm
        self.pad_to = pad_to
        self.ignore_index = ignore_index
        self.scale = float(np.float32(norm.scale))
        self._mean = torch.tensor(norm.mean, dtype=torch.float32).view(1, -1, 1, 1)
        self._std = torch.tensor(norm.std, dtype=torch.float32).view(1, -1, 1, 1)
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _stats(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._on:
            self._on[device] = (self._mean.to(device), self._std.to(device))
        return self._on[device]

    def size(self, height: int, width: int) -> tuple[int, int]:
        """The (H, W) a stored sample of ``height`` x ``width`` has after :meth:`image`."""
        return max(height, self.pad_to), max(width, self.pad_to)

    def image(self, raw: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` in the stored dtype → standardised float32, padded; on ``raw``'s device."""
        if raw.ndim != 4 or raw.shape[1] != len(self.norm.mean):
            raise ConfigError(
                f"preprocess: expected a [B, {len(self.norm.mean)}, H, W] batch of {', '.join(self.norm.bands)}, "
                f"got shape {tuple(raw.shape)}"
            )
        mean, std = self._stats(raw.device)
        x = raw.to(torch.float32, copy=True)  # one new float32 tensor; then in place (the same float32 operations)
        if self.scale != 1.0:
            x.mul_(self.scale)
        x.sub_(mean).div_(std)
        dh, dw = self._padding(x)
        return F.pad(x, (0, dw, 0, dh), mode="reflect") if dh or dw else x

    def mask(self, raw: torch.Tensor) -> torch.Tensor:
        """``[B, H, W]`` integer labels → int64, padded with the ignore index."""
        m = raw.to(torch.int64)
        dh, dw = self._padding(m)
        return F.pad(m, (0, dw, 0, dh), mode="constant", value=self.ignore_index) if dh or dw else m

    def _padding(self, x: torch.Tensor) -> tuple[int, int]:
        h, w = x.shape[-2:]
        return max(self.pad_to - h, 0), max(self.pad_to - w, 0)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """A new batch dict with ``image`` (and ``mask``, when present) preprocessed; other entries as they are."""
        out = dict(batch)
        out["image"] = self.image(batch["image"])
        if "mask" in batch:
            out["mask"] = self.mask(batch["mask"])
        return out
