"""Fine-tuning methods; importing the package registers ``full``, ``linear_probe``, ``lora`` and ``vpt``.

``peft`` is not imported here: it is loaded when LoRA is applied.
"""

from __future__ import annotations

from geopeft.tuning import freeze, lora, vit_adapter, vpt
from geopeft.tuning.registry import (
    ParamReport,
    apply_tuning,
    load_trainable_state_dict,
    register_tuning,
    trainable_state_dict,
    tuning_names,
    validate_tuning,
)

__all__ = [
    "ParamReport",
    "apply_tuning",
    "freeze",
    "load_trainable_state_dict",
    "lora",
    "register_tuning",
    "trainable_state_dict",
    "tuning_names",
    "validate_tuning",
    "vit_adapter",
    "vpt",
]
