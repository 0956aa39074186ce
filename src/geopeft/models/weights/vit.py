"""Loading timm's ImageNet-21k ViT-B/16 (``vit_base_patch16_224.augreg_in21k_ft_in1k``) onto ``vit_b16``.

The paper's "ViT (IN-21K)" baseline is TerraTorch's ``timm_vit_base_patch16_224.augreg_in21k_ft_in1k`` with
``in_chans=6`` and ``img_size`` = the chip size (study.md §1), i.e. ``timm.create_model(..., pretrained=True)``,
which reads the Hugging Face file ``timm/vit_base_patch16_224.augreg_in21k_ft_in1k/model.safetensors`` (timm's
own key names: ``cls_token``, ``pos_embed [1, 197, 768]``, ``patch_embed.proj.weight [768, 3, 16, 16]``,
``blocks.{0..11}.*``, ``norm.*``, ``head.* [1000, 768]``) and adapts it in three steps, which
:func:`load_vit_b16_weights` repeats with timm's own functions, in timm's order:

1. ``pos_embed`` is resampled from the 14×14 grid of 224-pixel images to the model's grid, the class token kept
   as is (``timm.layers.resample_abs_pos_embed``, bicubic with anti-aliasing, as timm's ``checkpoint_filter_fn``).
2. ``patch_embed.proj.weight`` goes from 3 input channels to ``in_chans`` with ``timm.models.adapt_input_conv``:
   the RGB kernels are repeated cyclically (R, G, B, R, G, B, …), cut to ``in_chans`` and scaled by
   ``3 / in_chans``.
3. The ImageNet classifier (``head.*``; ``fc_norm.*`` where a file has it) is dropped: the encoder has no head
   and pools nothing.

**Band semantics.** Neither timm nor TerraTorch selects RGB bands by name for this baseline (TerraTorch's
``select_patch_embed_weights`` serves its own geospatial backbones only), so neither does this loader: input
channel ``i`` gets the RGB kernel ``i mod 3``. With the HLS order (BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2)
BLUE meets the R kernel and RED the B kernel. That is physically arbitrary, but it is what the paper's ViT numbers
were trained from (full fine-tuning relearns the embedding), so it is reproduced rather than "corrected"; the
loader works for any band count.

Loading is strict: every model key must come from the file, and the file may add only :data:`IGNORED_KEYS`; any
other difference is a :class:`~geopeft.errors.WeightsError` naming the keys and the file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from timm.layers.pos_embed import resample_abs_pos_embed
from timm.models import adapt_input_conv
from torch import Tensor

from geopeft.errors import WeightsError
from geopeft.models.baselines import ViTB16Encoder
from geopeft.models.weights.files import read_weights_file

__all__ = [
    "IGNORED_KEYS",
    "PATCH_EMBED_KEY",
    "POS_EMBED_KEY",
    "PRETRAINED_IN_CHANS",
    "adapt_patch_embed",
    "load_vit_b16_weights",
    "resample_pos_embed",
]

#: The file's keys the encoder has no use for: the ImageNet-1k classifier (and ``fc_norm``, which timm only
#: uses with average pooling; the augreg release has none). The only extra keys a file may hold.
IGNORED_KEYS: frozenset[str] = frozenset({"head.weight", "head.bias", "fc_norm.weight", "fc_norm.bias"})
#: The patch-embedding kernel ``[D, 3, p, p]``, adapted to the model's input channels.
PATCH_EMBED_KEY = "patch_embed.proj.weight"
#: The learned position embedding ``[1, 1 + h·w, D]``, resampled to the model's grid.
POS_EMBED_KEY = "pos_embed"
#: Input channels of the ImageNet release (RGB).
PRETRAINED_IN_CHANS = 3

FAMILY = "ViT-B/16 ImageNet-21k"


def adapt_patch_embed(weight: Tensor, in_chans: int) -> Tensor:
    """The timm adaptation of an RGB patch kernel ``[D, 3, p, p]`` to ``in_chans`` input channels.

    ``timm.models.adapt_input_conv`` with ``base_chans=3``: one channel sums the RGB kernels; more channels repeat
    them cyclically and scale them by ``3 / in_chans``; three are returned unchanged.

    Raises:
        WeightsError: the kernel is not a 4-D tensor with 3 input channels.
    """
    if weight.ndim != 4 or weight.shape[1] != PRETRAINED_IN_CHANS:
        raise WeightsError(
            f"{PATCH_EMBED_KEY} has shape {tuple(weight.shape)}, expected [D, {PRETRAINED_IN_CHANS}, p, p] "
            "(the RGB kernel of the ImageNet release)"
        )
    return adapt_input_conv(in_chans, weight, base_chans=PRETRAINED_IN_CHANS)


def resample_pos_embed(pos_embed: Tensor, grid: tuple[int, int], num_prefix_tokens: int = 1) -> Tensor:
    """Resample a ``[1, prefix + s·s, D]`` position embedding of a square ``s×s`` grid to ``grid``.

    As timm's ``checkpoint_filter_fn``: ``resample_abs_pos_embed``, bicubic with anti-aliasing, the prefix
    (class token) rows unchanged. Returns ``pos_embed`` itself when the grids agree.

    Raises:
        WeightsError: ``pos_embed`` is not ``[1, prefix + s·s, D]`` for some square grid.
    """
    tokens = pos_embed.shape[1] - num_prefix_tokens if pos_embed.ndim == 3 else -1
    side = math.isqrt(tokens) if tokens > 0 else 0
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1 or side * side != tokens:
        raise WeightsError(
            f"{POS_EMBED_KEY} has shape {tuple(pos_embed.shape)}, expected [1, {num_prefix_tokens} + s*s, D] "
            "(a class token and a square grid, 197 tokens for 224-pixel images)"
        )
    if (side, side) == tuple(grid):
        return pos_embed
    resampled: Tensor = resample_abs_pos_embed(  # timm leaves the return type unannotated
        pos_embed,
        new_size=list(grid),
        old_size=[side, side],
        num_prefix_tokens=num_prefix_tokens,
        interpolation="bicubic",
        antialias=True,
    )
    return resampled


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    raw: Mapping[Any, Any] = read_weights_file(path, FAMILY)
    bad = [repr(k) for k, v in raw.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise WeightsError(f"{FAMILY} weights {path}: entries {bad[:5]} are not named tensors; is it a state dict?")
    return dict(raw)


def load_vit_b16_weights(model: ViTB16Encoder, path: str | Path) -> ViTB16Encoder:
    """Load timm's ``vit_base_patch16_224.augreg_in21k_ft_in1k`` file ``path`` into ``model`` (see the module doc).

    Args:
        model: the encoder to fill in place, at any chip size and band count (any width and depth whose keys
            the file has: the loader checks shapes, not sizes).
        path: a local ``.safetensors`` (or ``torch.save``) file with timm's key names; no download.

    Returns:
        ``model``.

    Raises:
        WeightsError: the file is missing or unreadable, a model key is missing, the file has keys beyond
            :data:`IGNORED_KEYS`, or a shape differs after the adaptation; the keys and the file are named.
    """
    path = Path(path)
    state = _read_state_dict(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own) - IGNORED_KEYS)
    if missing or unexpected:
        raise WeightsError(
            f"{FAMILY} weights {path} do not match the vit_b16 encoder: missing keys {missing}, unexpected keys "
            f"{unexpected} (only {sorted(IGNORED_KEYS)} may be extra); is it timm's "
            "vit_base_patch16_224.augreg_in21k_ft_in1k model.safetensors?"
        )
    filtered = {k: v for k, v in state.items() if k in own}
    prefix = 0 if model.no_embed_class else model.num_prefix_tokens
    grid = model.patch_embed.grid_size
    try:
        filtered[POS_EMBED_KEY] = resample_pos_embed(filtered[POS_EMBED_KEY], (grid[0], grid[1]), prefix)
        filtered[PATCH_EMBED_KEY] = adapt_patch_embed(filtered[PATCH_EMBED_KEY], model.in_chans)
    except WeightsError as exc:
        raise WeightsError(f"{FAMILY} weights {path}: {exc}") from None
    shapes = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in filtered.items()
        if v.shape != own[k].shape
    ]
    if shapes:
        raise WeightsError(f"{FAMILY} weights {path}: shapes differ from the model: {'; '.join(shapes)}")
    model.load_state_dict(filtered, strict=True)
    return model
