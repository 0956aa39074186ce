"""LoRA on the backbone through ``peft.get_peft_model``, as TerraTorch's ``peft_config`` path.

The fused qkv projections (Prithvi's and timm's ``attn.qkv``, Clay's ``to_qkv``) are first split into three
Linears ``q``, ``k`` and ``v`` (TerraTorch's ``replace_qkv``), so that LoRA can target the query and value
projections alone. Only the backbone is wrapped: ``peft`` freezes everything in it but the
``lora_A``/``lora_B`` matrices, and the neck and decoder stay fully trainable. The paper's targets depend on
the backbone family (:data:`LAYOUTS`): q, v and the two MLP Linears, ``mlp.fc1``/``mlp.fc2`` in a Prithvi
block and ``net.1``/``net.3`` in Clay's ``FeedForward``. ``peft`` is imported inside :func:`apply_lora`
only (it takes seconds to import). A LoRA backbone is never frozen: ``freeze_backbone: true`` is refused,
where TerraTorch silently freezes the adapters too and nothing trains (architectures.md §4.3).
:mod:`geopeft.tuning.export` merges the adapters back into a plain backbone.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from geopeft.errors import ConfigError
from geopeft.models.catalog import meta_backbone
from geopeft.models.segmentor import Segmentor
from geopeft.tuning.registry import register_tuning


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class LoraSettings:
    """LoRA settings (the paper's values by default).

    Args:
        r: rank of the update.
        alpha: scaling numerator; the update is scaled by ``alpha / r``.
        dropout: dropout on the LoRA branch input.
        target_modules: module name suffixes to adapt; after the qkv split the attention projections are
            ``q``, ``k`` and ``v``. Empty (the default) means the backbone family's paper targets
            (:data:`LAYOUTS`).
        freeze_backbone: accepted only as ``false`` (TerraTorch's key): LoRA already freezes every
            backbone weight but its adapters, and freezing those too would train nothing.
    """

    r: int = field(default=16, metadata={"help": "LoRA rank"})
    alpha: int = field(default=16, metadata={"help": "LoRA alpha (scale = alpha / r)"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA branch"})
    target_modules: tuple[str, ...] = field(
        default=(), metadata={"help": "module name suffixes to adapt; () = the backbone's paper targets"}
    )
    freeze_backbone: bool = field(default=False, metadata={"help": "must stay false: LoRA trains the backbone"})

    def __post_init__(self) -> None:
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r < 1:
            raise ConfigError(f"lora option r must be a positive integer, got {self.r!r}")
        if not isinstance(self.alpha, int) or isinstance(self.alpha, bool) or self.alpha < 1:
            raise ConfigError(f"lora option alpha must be a positive integer, got {self.alpha!r}")
        if not _is_number(self.dropout) or not 0 <= self.dropout < 1:
            raise ConfigError(f"lora option dropout must lie in [0, 1), got {self.dropout!r}")
        targets = self.target_modules
        if (
            isinstance(targets, str)
            or not isinstance(targets, (list, tuple))
            or not all(isinstance(t, str) and t for t in targets)
        ):
            raise ConfigError(f"lora option target_modules must be a list of module names, got {targets!r}")
        object.__setattr__(self, "target_modules", tuple(targets))
        if self.freeze_backbone is not False:
            raise ConfigError(
                f"lora option freeze_backbone must be false, got {self.freeze_backbone!r}: LoRA already freezes "
                "every backbone weight but its adapters, and a frozen LoRA backbone trains nothing; drop the "
                "option, or use method linear_probe to train only the decoder"
            )

    def check_backbone(self, name: str, where: str = "") -> None:
        """Plan-time check that backbone ``name`` has a fused qkv Linear to adapt (:func:`find_layout`).

        The backbone is inspected on the ``meta`` device, so a refused cell is refused before submission with
        the same message training would give.
        """
        found = _backbone_layout(name)
        if isinstance(found, str):
            raise ConfigError(f"{where}: {found}" if where else found)


@dataclass(frozen=True)
class LoraLayout:
    """Where LoRA goes in one backbone family.

    Args:
        family: backbone family, for messages.
        qkv: last name component of its fused qkv Linears.
        targets: the paper's target suffixes after the split (architectures.md §4.2).
    """

    family: str
    qkv: str
    targets: tuple[str, ...]


#: Backbone families LoRA knows, tried in order; a backbone matches when a Linear is named ``*.{qkv}``.
LAYOUTS: tuple[LoraLayout, ...] = (
    LoraLayout("Prithvi / timm ViT", "qkv", ("q", "v", "fc1", "fc2")),
    LoraLayout("Clay", "to_qkv", ("q", "v", "net.1", "net.3")),
)


@functools.cache
def _backbone_layout(name: str) -> LoraLayout | str:
    """The layout of registered backbone ``name``, or why none fits (once per backbone: planning asks per cell)."""
    try:
        return find_layout(meta_backbone(name))
    except ConfigError as exc:
        return str(exc)


def find_layout(backbone: nn.Module, where: str = "") -> LoraLayout:
    """The :class:`LoraLayout` of ``backbone``: the first whose fused qkv Linear it holds.

    Raises:
        ConfigError: no layout matches (e.g. a ResNet), naming the qkv names looked for.
    """
    last = {name.rsplit(".", 1)[-1] for name, m in backbone.named_modules() if isinstance(m, nn.Linear)}
    for layout in LAYOUTS:
        if layout.qkv in last:
            return layout
    prefix = f"{where}: " if where else ""
    looked = ", ".join(f"{lay.qkv} ({lay.family})" for lay in LAYOUTS)
    raise ConfigError(
        f"{prefix}lora applies to ViT backbones with a fused qkv Linear ({looked}); "
        f"{type(backbone).__name__} has none; use method full or linear_probe for it"
    )


class QKVSplit(nn.Module):
    """A fused ``Linear(d, 3d)`` as three Linears ``q``, ``k``, ``v``; the output is their concatenation.

    The three layers hold copies of the row blocks ``[0:d]``, ``[d:2d]`` and ``[2d:3d]`` of the fused
    weight and bias, so the module computes what the fused layer did and the attention code around it is
    unchanged.

    Args:
        fused: the fused projection; its output width must be three times its input width.
    """

    def __init__(self, fused: nn.Linear) -> None:
        super().__init__()
        dim = fused.in_features
        if fused.out_features != 3 * dim:
            raise ConfigError(f"cannot split a Linear({dim}, {fused.out_features}) into q, k, v: it is not d → 3d")
        bias = fused.bias is not None
        factory = {"device": fused.weight.device, "dtype": fused.weight.dtype}
        self.q = nn.Linear(dim, dim, bias=bias, **factory)
        self.k = nn.Linear(dim, dim, bias=bias, **factory)
        self.v = nn.Linear(dim, dim, bias=bias, **factory)
        with torch.no_grad():
            for i, part in enumerate((self.q, self.k, self.v)):
                part.weight.copy_(fused.weight[i * dim : (i + 1) * dim])
                part.weight.requires_grad_(fused.weight.requires_grad)
                if fused.bias is not None and part.bias is not None:
                    part.bias.copy_(fused.bias[i * dim : (i + 1) * dim])
                    part.bias.requires_grad_(fused.bias.requires_grad)

    def forward(self, x: Tensor) -> Tensor:
        """``[..., d]`` → ``[..., 3d]`` = ``cat(q(x), k(x), v(x))``; under autocast ``x`` is cast once."""
        x = autocast_input(x)
        return torch.cat([self.q(x), self.k(x), self.v(x)], dim=-1)


def autocast_input(x: Tensor) -> Tensor:
    """``x`` in the autocast dtype when autocast is on for its device, else ``x`` unchanged.

    Autocast casts a float32 input anew for every Linear that reads it and keeps each copy for the backward
    pass; casting once up front lets q, k, v and the LoRA branches share one copy (the values are the same).
    """
    device_type = x.device.type
    if x.is_floating_point() and torch.is_autocast_enabled(device_type):
        return x.to(torch.get_autocast_dtype(device_type))
    return x


def _cast_once(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Forward pre-hook on a LoRA layer: :func:`autocast_input` on its input, shared by base and adapter."""
    if args and isinstance(args[0], Tensor):
        return (autocast_input(args[0]), *args[1:])
    return args


def split_qkv(module: nn.Module, suffix: str = "qkv") -> int:
    """Replace every ``nn.Linear`` named ``*.{suffix}`` inside ``module`` by a :class:`QKVSplit`, in place.

    Args:
        module: e.g. a ViT backbone.
        suffix: last component of the fused projections' names.

    Returns:
        The number of layers replaced.
    """
    found = [
        (name, child)
        for name, child in module.named_modules()
        if name.rsplit(".", 1)[-1] == suffix and isinstance(child, nn.Linear)
    ]
    for name, child in found:
        parent_name, _, attr = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, attr, QKVSplit(child))
    return len(found)


def _check_targets(module: nn.Module, targets: tuple[str, ...], where: str) -> None:
    """Every target must name at least one Linear (peft matches names equal to it or ending in ``.target``)."""
    names = {name: child for name, child in module.named_modules() if isinstance(child, nn.Linear)}
    unmatched = [t for t in targets if not any(n == t or n.endswith(f".{t}") for n in names)]
    if unmatched:
        prefix = f"{where}: " if where else ""
        allowed = sorted({n.rsplit(".", 1)[-1] for n in names})
        raise ConfigError(
            f"{prefix}lora option target_modules: {unmatched} match no Linear layer of the backbone; "
            f"Linear layer names end in: {', '.join(allowed)}"
        )


@register_tuning("lora", LoraSettings)
def apply_lora(model: Segmentor, settings: LoraSettings, where: str) -> None:
    """Split qkv, wrap ``model.backbone`` with ``peft.get_peft_model`` and keep neck and decoder trainable.

    Raises:
        ConfigError: the backbone is already wrapped, has no fused qkv Linear (a ResNet), or a target
            matches no Linear.
    """
    # Imported here, not at module level: importing peft takes seconds and planning never needs it.
    from peft import LoraConfig, PeftModel, get_peft_model
    from peft.tuners.lora import LoraLayer

    prefix = f"{where}: " if where else ""
    if isinstance(model.backbone, PeftModel):
        raise ConfigError(f"{prefix}lora: the backbone is already wrapped by peft; build a fresh model")
    layout = find_layout(model.backbone, where)
    targets = settings.target_modules or layout.targets
    split_qkv(model.backbone, layout.qkv)
    _check_targets(model.backbone, targets, where)
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(targets),
        bias="none",
    )
    model.backbone = get_peft_model(model.backbone, config)
    for module in model.backbone.modules():
        if isinstance(module, LoraLayer):
            # peft casts the adapter's input back to the adapter's float32, and autocast then casts it to
            # bf16 again and keeps that copy: one extra activation per layer. The input arrives cast once
            # (_cast_once), and the adapter reads it as is; autocast still runs the matmuls in its dtype.
            module.cast_input_dtype_enabled = False
            module.register_forward_pre_hook(_cast_once)
    model.neck.requires_grad_(True)
    model.decoder.requires_grad_(True)
