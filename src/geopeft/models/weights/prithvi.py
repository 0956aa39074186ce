"""Loading the official Prithvi EO checkpoints onto :class:`~geopeft.models.prithvi.PrithviViT`.

Both formats of architectures.md §1.4 are read: V1 (``Prithvi_EO_V1_100M.pt``) with flat MAE keys
(``cls_token``, ``blocks.{i}.*``, ``decoder_*``, ``mask_token``) and V2 (``Prithvi_EO_V2_*.pt``) with
``encoder.*`` / ``decoder.*`` keys, the TL files adding ``encoder.temporal_embed_enc.scale``,
``encoder.location_embed_enc.scale`` and their ``decoder.*_dec`` twins. :func:`checkpoint_filter_fn`
applies TerraTorch's ``checkpoint_filter_fn_vit`` rules in order; :func:`select_patch_embed_weights` maps
the patch-embedding input channels by band name; :func:`load_prithvi_weights` reads a local file (no
download) and loads it strictly: any key missing beyond :data:`EXPECTED_MISSING`, or left over, is a
:class:`~geopeft.errors.WeightsError` naming the keys and the file (TerraTorch only warns for local files).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from geopeft.data.bands import HLS_BANDS
from geopeft.errors import WeightsError
from geopeft.models.prithvi import PrithviViT
from geopeft.models.weights.files import read_weights_file

__all__ = [
    "EXPECTED_MISSING",
    "LEGACY_PREFIX",
    "PATCH_EMBED_KEY",
    "checkpoint_filter_fn",
    "load_prithvi_weights",
    "select_patch_embed_weights",
]

logger = logging.getLogger(__name__)

#: Prefix of old TerraTorch checkpoints, removed first.
LEGACY_PREFIX = "_timm_module."
#: Model key of the patch-embedding kernel ``[D, C, 1, p, p]``, remapped by band name.
PATCH_EMBED_KEY = "patch_embed.proj.weight"
#: Model keys a checkpoint may lack: the fixed position-embedding buffer, which is always the model's own
#: (rule 2 replaces the file's copy, so its absence changes nothing).
EXPECTED_MISSING: frozenset[str] = frozenset({"pos_embed"})


def _is_decoder_key(key: str) -> bool:
    """Rule 3: MAE decoder entries (``decoder*``, ``*_dec*``) and the V1 ``mask_token``."""
    return "decoder" in key or "_dec" in key or key == "mask_token"


def checkpoint_filter_fn(state_dict: Mapping[str, object], model: nn.Module) -> dict[str, Tensor]:
    """Map an official Prithvi state dict (V1 flat or V2 ``encoder.``/``decoder.``) onto ``model``'s keys.

    The rules of architectures.md §1.4, in order: (1) strip a legacy ``_timm_module.`` prefix;
    (2) replace every ``pos_embed`` with the model's own buffer; (3) drop keys containing ``decoder`` or
    ``_dec`` and ``mask_token``; (4) drop ``temporal_embed*`` / ``location_embed*`` keys when the model has
    no TL encoders; (5) strip the ``encoder.`` prefix. The patch-embedding channels are remapped by
    :func:`load_prithvi_weights` (rule 7); rule 6 (VPT prompts) belongs to the tuning code.

    Args:
        state_dict: the checkpoint's flat mapping of key to tensor.
        model: the target encoder; its ``pos_embed`` buffer and ``coords_encoding`` flag are read.

    Returns:
        The filtered mapping, keys as in ``model.state_dict()``.

    Raises:
        WeightsError: a non-string key or a non-tensor entry.
    """
    own_pos_embed = model.state_dict().get("pos_embed")
    has_coords = bool(getattr(model, "coords_encoding", False))
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise WeightsError(f"Prithvi checkpoint key {key!r} is not a string")
        if not isinstance(value, Tensor):
            raise WeightsError(f"Prithvi checkpoint entry {key!r} is a {type(value).__name__}, not a tensor")
        name = key.replace(LEGACY_PREFIX, "")
        tensor = own_pos_embed.detach().clone() if "pos_embed" in name and own_pos_embed is not None else value
        if _is_decoder_key(name):
            continue
        if not has_coords and ("temporal_embed" in name or "location_embed" in name):
            continue
        out[name.removeprefix("encoder.")] = tensor
    return out


def select_patch_embed_weights(ckpt_weight: Tensor, ckpt_bands: Sequence[str], model_bands: Sequence[str]) -> Tensor:
    """A patch-embedding kernel for ``model_bands`` built from one pretrained on ``ckpt_bands``.

    As TerraTorch's ``select_patch_embed_weights``: a new kernel ``[D, len(model_bands), *kernel]`` is
    xavier-uniform initialised on its flattened ``[D, -1]`` view, then the column of every model band found
    in ``ckpt_bands`` is copied from the checkpoint (matched by name). Which bands were copied and which
    stay random is logged at INFO.

    Args:
        ckpt_weight: the checkpoint kernel ``[D, len(ckpt_bands), t, p, p]``.
        ckpt_bands: the bands the checkpoint was pretrained on, in its channel order.
        model_bands: the model's input bands, in channel order.

    Returns:
        The new kernel, in ``ckpt_weight``'s dtype and device.

    Raises:
        WeightsError: the checkpoint kernel's channel count differs from ``len(ckpt_bands)``.
    """
    if ckpt_weight.ndim < 2 or ckpt_weight.shape[1] != len(ckpt_bands):
        raise WeightsError(
            f"Prithvi patch embedding {tuple(ckpt_weight.shape)} does not have one input channel per "
            f"pretrained band {list(ckpt_bands)}; pass the checkpoint's bands as pretrained_bands"
        )
    shape = (ckpt_weight.shape[0], len(model_bands), *ckpt_weight.shape[2:])
    weight = torch.empty(shape, dtype=ckpt_weight.dtype, device=ckpt_weight.device)
    nn.init.xavier_uniform_(weight.view(shape[0], -1))
    copied: list[str] = []
    for index, band in enumerate(model_bands):
        if band in ckpt_bands:
            weight[:, index] = ckpt_weight[:, list(ckpt_bands).index(band)]
            copied.append(band)
    random = [b for b in model_bands if b not in copied]
    logger.info(
        "Prithvi patch embedding: pretrained channels for %s; xavier-initialised for %s",
        copied or "no band",
        random or "no band",
    )
    return weight


def load_prithvi_weights(
    model: PrithviViT, path: str | Path, *, pretrained_bands: Sequence[str] = HLS_BANDS
) -> PrithviViT:
    """Load an official Prithvi checkpoint file ``path`` into ``model`` (strict up to ``EXPECTED_MISSING``).

    Args:
        model: the encoder to fill in place; its ``bands`` (or, when unknown, ``pretrained_bands`` if the
            channel counts agree) select the patch-embedding channels.
        path: a local ``Prithvi_EO_*.pt`` (read with ``torch.load(weights_only=True)``; no download).
        pretrained_bands: the checkpoint's bands in channel order (the six HLS bands for every release).

    Returns:
        ``model``.

    Raises:
        WeightsError: the file is missing or unreadable, keys are missing or unexpected (listed with the
            file), or a shape differs from the model's.
    """
    path = Path(path)
    try:
        filtered = checkpoint_filter_fn(read_weights_file(path, "Prithvi"), model)
    except WeightsError as exc:
        raise WeightsError(f"{path}: {exc}") from None
    model_bands = model.bands
    if model_bands is None:
        if model.in_chans != len(pretrained_bands):
            raise WeightsError(
                f"Prithvi weights {path}: the model has {model.in_chans} input channels but no band names; "
                f"build it with bands=... to map the {len(pretrained_bands)} pretrained bands"
            )
        model_bands = tuple(pretrained_bands)
    if PATCH_EMBED_KEY in filtered:
        try:
            filtered[PATCH_EMBED_KEY] = select_patch_embed_weights(
                filtered[PATCH_EMBED_KEY], pretrained_bands, model_bands
            )
        except WeightsError as exc:
            raise WeightsError(f"{path}: {exc}") from None
    own = model.state_dict()
    missing = sorted(set(own) - set(filtered) - EXPECTED_MISSING)
    unexpected = sorted(set(filtered) - set(own))
    if missing or unexpected:
        raise WeightsError(
            f"Prithvi weights {path} do not match the model: missing keys {missing}, unexpected keys {unexpected}"
        )
    bad = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in filtered.items()
        if v.shape != own[k].shape
    ]
    if bad:
        raise WeightsError(f"Prithvi weights {path}: shapes differ from the model: {'; '.join(bad)}")
    result = model.load_state_dict(filtered, strict=False)
    left = sorted(set(result.missing_keys) - EXPECTED_MISSING)
    if left or result.unexpected_keys:
        raise WeightsError(f"Prithvi weights {path}: load left missing {left}, unexpected {result.unexpected_keys}")
    return model
