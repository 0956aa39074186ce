"""The float32 matmul precision of a cell (``train.matmul_precision``) and the TF32 flags its result records.

:func:`matmul_precision` applies :func:`torch.set_float32_matmul_precision` for the duration of a cell and restores
the previous value afterwards, so cells (and tests) run one after another in a process do not inherit each other's
setting. ``highest`` is torch's default and what the study's Lightning runs used (they do not set it): float32
matmuls stay float32. ``high`` lets CUDA matmuls use TF32, ``medium`` also bf16. cuDNN convolutions follow their own
flag, ``torch.backends.cudnn.allow_tf32`` (torch's default: on), which this module records but leaves alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from geopeft.errors import unknown_choice
from geopeft.spec import MATMUL_PRECISIONS


@contextlib.contextmanager
def matmul_precision(value: str) -> Iterator[None]:
    """Run the body with ``torch.set_float32_matmul_precision(value)``, then restore the previous value.

    Args:
        value: ``highest``, ``high`` or ``medium`` (a cell's ``spec.train.matmul_precision``).

    Raises:
        ConfigError: ``value`` is none of them (a spec validates it already; this guards direct calls).
    """
    if value not in MATMUL_PRECISIONS:
        raise unknown_choice("train.matmul_precision", value, MATMUL_PRECISIONS)
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(value)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def describe() -> dict[str, object]:
    """The precision settings now in force, for a result's provenance (recorded on CPU too: they are flags)."""
    return {
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
    }
