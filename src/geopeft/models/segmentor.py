"""The single module the trainer sees: pad → backbone → neck → decoder → crop, as TerraTorch's PixelWiseModel.

Contracts between the parts:

* ``backbone(image, **inputs)`` returns a list of feature tensors (for a ViT: the block outputs,
  ``[B, 1 + tokens, D]``; for a CNN: feature maps ``[B, C_i, H/s_i, W/s_i]``, finest first, as described
  by the backbone's ``BackboneInfo.out_channels`` and ``strides``). A backbone that uses per-sample
  metadata lists its keyword arguments in a ``metadata_keys`` attribute and has a ``metadata_inputs``
  function that makes them from the batch's backbone-neutral metadata (:mod:`geopeft.models.metadata`);
  a backbone without one gets no metadata.
* ``neck(features, grid=(h, w))`` turns them into the decoder's inputs; ``grid`` is the token grid of the
  padded image (padded size // ``patch_size``; CNN necks ignore it).
* ``decoder(features)`` returns logits ``[B, num_classes, H', W']``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from geopeft.errors import ConfigError
from geopeft.models.registry import BackboneInfo


def pad_to_multiple(image: Tensor, multiple: int) -> Tensor:
    """Reflect-pad ``image`` on the right and bottom so that H and W are multiples of ``multiple``.

    TerraTorch's current ``pad_images`` pads to twice the patch size; the paper's chip sizes (512, 256,
    224 and reBEN's 120 → 128) give the same padded size either way.

    Args:
        image: ``[B, C, H, W]``.
        multiple: the multiple, usually the backbone's patch size.
    """
    h, w = image.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if not pad_h and not pad_w:
        return image
    if pad_h >= h or pad_w >= w:
        raise ConfigError(
            f"a {h}×{w} image is too small to reflect-pad to a multiple of {multiple}; use chips of at least "
            f"{multiple // 2 + 1} pixels"
        )
    return F.pad(image, (0, pad_w, 0, pad_h), mode="reflect")


class Segmentor(nn.Module):
    """Backbone + neck + decoder for semantic segmentation.

    Args:
        backbone: returns a list of features (see the module docstring).
        neck: maps the features and the token grid to the decoder's inputs.
        decoder: maps them to logits (includes the class head).
        patch_size: the backbone's token stride (a CNN's pad multiple, 32 for a ResNet); inputs are
            reflect-padded to a multiple of it.
        metadata_keys: the backbone's metadata keyword arguments.
        metadata_inputs: batch metadata → those keyword arguments (the backbone's ``metadata_inputs``);
            ``None`` for a backbone that takes no metadata.
        backbone_info: the description of ``backbone`` (set by ``build_segmentor``).
        head_builder: rebuilds ``(neck, decoder)`` for another backbone description (set by
            ``build_segmentor``; a tuning method that replaces the backbone, e.g. ViT-Adapter, uses it).
    """

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        decoder: nn.Module,
        *,
        patch_size: int,
        metadata_keys: Sequence[str] = (),
        metadata_inputs: Callable[[Mapping[str, Tensor]], dict[str, Tensor]] | None = None,
        backbone_info: BackboneInfo | None = None,
        head_builder: Callable[[BackboneInfo], tuple[nn.Module, nn.Module]] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.decoder = decoder
        self.patch_size = patch_size
        self.metadata_keys = tuple(metadata_keys)
        self.metadata_inputs = metadata_inputs
        self.backbone_info = backbone_info
        self.head_builder = head_builder

    def forward(self, image: Tensor, metadata: dict[str, Tensor] | None = None) -> Tensor:
        """Segment a batch.

        Args:
            image: ``[B, C, H, W]``.
            metadata: the batch's per-sample metadata, ``[B]`` tensors by field name
                (:mod:`geopeft.cache.metadata`); turned into the backbone's inputs by ``metadata_inputs``.

        Returns:
            Logits ``[B, num_classes, H, W]``.
        """
        height, width = image.shape[-2:]
        padded = pad_to_multiple(image, self.patch_size)
        kwargs = self.metadata_inputs(metadata) if metadata and self.metadata_inputs else {}
        unexpected = sorted(set(kwargs) - set(self.metadata_keys))
        if unexpected:
            raise ConfigError(
                f"the backbone takes no {', '.join(unexpected)} (it takes {self.metadata_keys or 'no metadata'}); "
                "drop model.metadata or pick a backbone that encodes it (`geopeft models`)"
            )
        features = self.backbone(padded, **kwargs)
        grid = (padded.shape[-2] // self.patch_size, padded.shape[-1] // self.patch_size)
        logits: Tensor = self.decoder(self.neck(features, grid=grid))
        if logits.shape[-2:] != padded.shape[-2:]:
            logits = F.interpolate(logits, size=padded.shape[-2:], mode="bilinear")
        return logits[..., :height, :width]
