"""Fine-tuning methods by name, the trainable-parameter report, and the state dict of what was trained.

Each method registers an ``apply(model, settings, where)`` function together with its frozen settings
dataclass. :func:`validate_tuning` only parses the settings, so planning a sweep never imports ``peft``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Protocol

from torch import Tensor, nn

from geopeft.errors import WeightsError
from geopeft.models.registry import settings_from_options
from geopeft.models.segmentor import Segmentor
from geopeft.registry import Registry
from geopeft.spec import TuningSpec


class ApplyFn(Protocol):
    """Mutates a segmentor in place for a method: wraps modules, sets ``requires_grad``."""

    def __call__(self, model: Segmentor, settings: Any, where: str) -> None:
        """Apply the method with its parsed ``settings``."""
        ...


@dataclass(frozen=True)
class TuningMethod:
    """A registered fine-tuning method.

    Args:
        name: registry name, e.g. ``lora``.
        settings_cls: frozen dataclass its options are parsed into.
        apply: the function that applies it to a segmentor.
    """

    name: str
    settings_cls: type[Any]
    apply: ApplyFn


@dataclass(frozen=True)
class ParamReport:
    """Trainable and total parameter counts of a model.

    Args:
        trainable: elements of parameters with ``requires_grad``.
        total: elements of all parameters.
    """

    trainable: int
    total: int

    @property
    def fraction(self) -> float:
        """Trainable share of the total (0 for an empty model)."""
        return self.trainable / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict with ``trainable``, ``total`` and ``fraction``."""
        return {"trainable": self.trainable, "total": self.total, "fraction": self.fraction}


_METHODS: Registry[TuningMethod] = Registry("tuning method")


def register_tuning(name: str, spec_cls: type[Any]) -> Callable[[ApplyFn], ApplyFn]:
    """Decorator registering ``apply`` with its settings dataclass under ``name``.

    Args:
        name: registry name; a duplicate raises ``ValueError``.
        spec_cls: frozen dataclass of the method's settings.
    """

    def deco(apply: ApplyFn) -> ApplyFn:
        _METHODS.add(name, TuningMethod(name, spec_cls, apply))
        return apply

    return deco


def tuning_names() -> list[str]:
    """Registered method names, in registration order."""
    return _METHODS.names()


def tuning_option_names(method: str) -> list[str]:
    """The option keys of ``method`` (its settings dataclass's fields); an unknown method raises."""
    return [f.name for f in fields(_METHODS.get(method).settings_cls)]


def tuning_settings(spec: TuningSpec, where: str = "") -> Any:
    """Parse ``spec.options`` into the method's settings dataclass.

    Raises:
        ConfigError: unknown method (listing the known ones), unknown option key (listing the allowed
            keys) or a bad value.
    """
    method = _METHODS.get(spec.method, where)
    return settings_from_options(method.settings_cls, spec.opts, spec.method, where)


def validate_tuning(spec: TuningSpec, where: str = "", backbone: str | None = None) -> None:
    """Plan-time check of a tuning spec; builds nothing and imports no tuning library.

    Args:
        spec: the tuning spec.
        where: file or cell the spec came from, prepended to messages.
        backbone: the cell's backbone name; a method whose settings have ``check_backbone(name, where)``
            (e.g. ``vit_adapter``, Prithvi only) refuses a backbone it cannot tune.
    """
    settings = tuning_settings(spec, where)
    check = getattr(settings, "check_backbone", None)
    if backbone is not None and check is not None:
        check(backbone, where)


def count_parameters(model: nn.Module) -> ParamReport:
    """Count trainable and total parameter elements (shared parameters once)."""
    params = list(model.parameters())
    return ParamReport(
        trainable=sum(p.numel() for p in params if p.requires_grad),
        total=sum(p.numel() for p in params),
    )


def apply_tuning(model: Segmentor, spec: TuningSpec, where: str = "") -> ParamReport:
    """Apply a fine-tuning method to ``model`` in place and report its parameters.

    Args:
        model: a freshly built segmentor (a method may replace ``model.backbone``).
        spec: the tuning spec.
        where: file or cell the spec came from, prepended to messages.
    """
    settings = tuning_settings(spec, where)
    _METHODS.get(spec.method).apply(model, settings, where)
    return count_parameters(model)


def trainable_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """What a checkpoint must hold to restore training: the trained parameters and their modules' buffers.

    That is every parameter with ``requires_grad``, plus the persistent buffers (e.g. BatchNorm running
    statistics) of each module that directly owns such a parameter, plus the running statistics of every
    BatchNorm layer, trained or not: a frozen BatchNorm in train mode still updates them (linear probing
    of a ResNet, see :mod:`geopeft.tuning.freeze`). Names are ``model.state_dict()`` keys.
    """
    out: dict[str, Tensor] = {}
    for prefix, module in model.named_modules():
        own = dict(module.named_parameters(recurse=False))
        is_bn = isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats
        if not is_bn and not any(p.requires_grad for p in own.values()):
            continue
        dot = f"{prefix}." if prefix else ""
        out.update({dot + name: p.detach() for name, p in own.items() if p.requires_grad})
        skipped: set[str] = getattr(module, "_non_persistent_buffers_set", set())
        out.update({dot + name: b.detach() for name, b in module.named_buffers(recurse=False) if name not in skipped})
    return out


def _listing(keys: set[str], limit: int = 5) -> str:
    shown = ", ".join(sorted(keys)[:limit])
    return f"{shown}, … ({len(keys)} in all)" if len(keys) > limit else shown


def load_trainable_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor], where: str = "") -> None:
    """Load what :func:`trainable_state_dict` saved into a model built and tuned the same way.

    Args:
        model: the model, with the same tuning method already applied.
        state_dict: the saved tensors.
        where: the checkpoint file, prepended to messages.

    Raises:
        WeightsError: keys missing from or unexpected in ``state_dict``, or a shape mismatch.
    """
    prefix = f"{where}: " if where else ""
    expected = set(trainable_state_dict(model))
    missing, unexpected = expected - set(state_dict), set(state_dict) - expected
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected {_listing(unexpected)}")
        raise WeightsError(
            f"{prefix}checkpoint does not match the model's trained parameters ({'; '.join(parts)}); "
            "build the model with the same backbone, decoder and tuning method as the checkpoint"
        )
    try:
        model.load_state_dict(dict(state_dict), strict=False)
    except RuntimeError as exc:
        raise WeightsError(f"{prefix}checkpoint does not fit the model: {exc}") from None
