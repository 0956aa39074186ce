"""Reading local checkpoint files: the one place that calls ``torch.load`` on a user's weights.

Weights are never downloaded at run time: a separate step fetches and verifies them, and compute nodes only
read local files, with ``weights_only=True`` so that a checkpoint cannot run code.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from geopeft.errors import WeightsError


def read_weights_file(path: str | Path, family: str) -> Mapping[str, Any]:
    """The mapping stored in a checkpoint file (a state dict, or a Lightning checkpoint holding one).

    Args:
        path: the local file.
        family: the backbone family (``Prithvi``, ``Clay``, ``DeCUR``), named in messages.

    Raises:
        WeightsError: the file is missing, cannot be read with ``weights_only=True``, or holds no mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{family} weights file {path} does not exist; fetch it first (make weights)")
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
