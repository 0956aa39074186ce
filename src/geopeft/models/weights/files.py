"""Reading local checkpoint files: the one place that opens a user's weights.

Weights are never downloaded at run time: a separate step fetches and verifies them, and compute nodes only
read local files. Pickled checkpoints (``.pt``, ``.pth``, ``.ckpt``) are read with ``weights_only=True`` so that a
checkpoint cannot run code; ``.safetensors`` files (Hugging Face's timm releases) are read with
``safetensors.torch.load_file``, a format that holds tensors only.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from geopeft.errors import WeightsError

#: The suffix of files read with safetensors instead of ``torch.load``.
SAFETENSORS_SUFFIX = ".safetensors"


def read_weights_file(path: str | Path, family: str) -> Mapping[str, Any]:
    """The mapping stored in a checkpoint file (a state dict, or a Lightning checkpoint holding one).

    A file named ``*.safetensors`` is read with ``safetensors.torch.load_file`` (a flat mapping of tensors);
    anything else with ``torch.load(weights_only=True)``. Both load onto the CPU.

    Args:
        path: the local file.
        family: the backbone family (``Prithvi``, ``Clay``, ``DeCUR``, ``ViT-B/16``), named in messages.

    Raises:
        WeightsError: the file is missing, cannot be read in its format, or holds no mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{family} weights file {path} does not exist; fetch it first (make weights)")
    if path.suffix == SAFETENSORS_SUFFIX:
        try:
            return load_file(path, device="cpu")
        except Exception as exc:
            raise WeightsError(
                f"cannot read {family} weights {path} as safetensors ({exc}); the file is truncated or not a "
                "safetensors file: fetch it again (geopeft weights fetch ... --force)"
            ) from exc
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(
            f"cannot read {family} weights {path} with weights_only=True ({exc}); "
            "re-save the state dict alone with torch.save"
        ) from exc
    if not isinstance(raw, Mapping):
        raise WeightsError(f"{family} weights {path} hold a {type(raw).__name__}, not a state dict")
    return raw
