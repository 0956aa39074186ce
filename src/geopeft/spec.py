"""Typed, frozen specifications of a cell: what is trained, on what, and how.

A :class:`CellSpec` holds only the settings that change the result. Its :attr:`CellSpec.cell_id` is a
short hash of their canonical JSON, so the same settings always map to the same cell directory, and
paths, worker counts or the cluster never change it. Where things run lives in :class:`RunEnv`.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from geopeft.errors import ConfigError, unknown_choice

#: Bumped when the meaning of a spec field changes, so that old cell ids cannot be reused by mistake. 2: the study's
#: normalisation, mIoU over the classes present and the study's Clay wavelengths; every field is written.
SPEC_VERSION = 2

PRECISIONS = ("fp32", "bf16")
#: Per-sample metadata a cell may feed its backbone, in canonical order: ``time`` (acquisition date and hour) and
#: ``location`` (latitude and longitude of the chip centre). The GSD is not listed: backbones that read it (Clay)
#: always get the dataset's.
METADATA_KINDS = ("time", "location")
STRATEGIES = ("ddp", "deepspeed_zero1", "deepspeed_zero2", "deepspeed_zero3")
#: ``train.normalisation``: the study's published per-band statistics, or those of the cell's own train split
#: (:mod:`geopeft.data.normalisation`).
NORMALISATIONS = ("study", "train_split")
#: ``train.matmul_precision``: :func:`torch.set_float32_matmul_precision` for the cell (``highest`` = no TF32).
MATMUL_PRECISIONS = ("highest", "high", "medium")

Options = tuple[tuple[str, Any], ...]


def _is_number(value: Any) -> bool:
    """A YAML number: an int or a float, never a bool (``lr: true`` is a typo, not 1.0)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _require_str(value: Any, key: str) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} must be a non-empty string, got {value!r}", key)


def _options(value: Mapping[str, Any] | Options | None, where: str) -> Options:
    """Normalise an options mapping to a sorted tuple of pairs (hashable, canonical)."""
    if value is None:
        return ()
    items = value.items() if isinstance(value, Mapping) else value
    out = []
    for key, val in items:
        if not isinstance(key, str):
            raise ConfigError(f"{where}: option names must be strings, got {key!r}")
        if isinstance(val, list):
            val = tuple(val)
        out.append((key, val))
    return tuple(sorted(out))


@dataclass(frozen=True)
class ModelSpec:
    """The backbone.

    Args:
        name: backbone registry name, e.g. ``prithvi_eo_v2_300`` or ``prithvi_tiny``.
        bands: input bands by name; empty means the backbone's default bands.
        weights: ``none`` for random init, else the name of a registered weights file.
        metadata: per-sample metadata fed to the backbone, a subset of :data:`METADATA_KINDS` (stored in that
            order); empty, the paper's default, feeds none. Only backbones that encode it accept it (Prithvi TL
            variants, Clay), and only datasets that record it.
    """

    name: str = field(metadata={"help": "backbone registry name"})
    bands: tuple[str, ...] = field(default=(), metadata={"help": "input bands; () = backbone default"})
    weights: str = field(default="none", metadata={"help": "'none' or a registered weights name"})
    metadata: tuple[str, ...] = field(default=(), metadata={"help": "subset of time, location; () = none"})

    def __post_init__(self) -> None:
        _require_str(self.name, "model.name")
        _require_str(self.weights, "model.weights")
        if isinstance(self.bands, str) or not all(isinstance(b, str) and b for b in self.bands):
            raise ConfigError(f"model.bands must be a list of band names, got {self.bands!r}", "model.bands")
        object.__setattr__(self, "bands", tuple(self.bands))
        object.__setattr__(self, "metadata", _metadata_kinds(self.metadata, self.name))

    @property
    def label(self) -> str:
        """The name as tables show it: ``name`` plus ``+kind`` per metadata kind, e.g. ``prithvi_tiny_tl+time``."""
        return "".join((self.name, *(f"+{kind}" for kind in self.metadata)))


def _metadata_kinds(value: Any, model: str) -> tuple[str, ...]:
    """``model.metadata`` checked and put in :data:`METADATA_KINDS` order."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ConfigError(
            f"model {model}: metadata must be a list drawn from {', '.join(METADATA_KINDS)}, got {value!r}; "
            "e.g. metadata: [time, location]",
            "model.metadata",
        )
    unknown = [v for v in value if v not in METADATA_KINDS]
    if unknown:
        raise unknown_choice("model.metadata kind", unknown[0], METADATA_KINDS, f"model {model}")
    if len(set(value)) != len(value):
        raise ConfigError(
            f"model {model}: metadata lists a kind twice ({list(value)}); give each once", "model.metadata"
        )
    return tuple(kind for kind in METADATA_KINDS if kind in value)


@dataclass(frozen=True)
class TuningSpec:
    """The fine-tuning method and its settings (validated by the method's own dataclass).

    Args:
        method: tuning registry name, e.g. ``lora`` or ``full``.
        options: method settings such as ``r`` and ``alpha`` for LoRA.
    """

    method: str = field(metadata={"help": "tuning registry name"})
    options: Options = field(default=(), metadata={"help": "method settings"})

    def __post_init__(self) -> None:
        _require_str(self.method, "tuning.method")
        object.__setattr__(self, "options", _options(self.options, f"tuning {self.method}"))

    @property
    def opts(self) -> dict[str, Any]:
        """The options as a dict."""
        return dict(self.options)


@dataclass(frozen=True)
class DecoderSpec:
    """The neck and decoder head.

    Args:
        name: decoder registry name, e.g. ``linear``.
        options: decoder settings (channels, selected block indices, ...).
    """

    name: str = field(default="linear", metadata={"help": "decoder registry name"})
    options: Options = field(default=(), metadata={"help": "decoder settings"})

    def __post_init__(self) -> None:
        _require_str(self.name, "decoder.name")
        object.__setattr__(self, "options", _options(self.options, f"decoder {self.name}"))

    @property
    def opts(self) -> dict[str, Any]:
        """The options as a dict."""
        return dict(self.options)


@dataclass(frozen=True)
class TrainSpec:
    """Optimisation settings (the paper's protocol by default).

    Args:
        lr: AdamW learning rate.
        batch_size: effective batch size (all ranks and accumulation steps together).
        max_epochs: upper bound on epochs.
        patience: early-stopping patience on validation loss, in epochs.
        lr_patience: ReduceLROnPlateau patience.
        lr_factor: ReduceLROnPlateau factor.
        weight_decay: AdamW weight decay.
        precision: ``fp32`` or ``bf16``.
        strategy: ``ddp`` or ``deepspeed_zero{1,2,3}``.
        activation_checkpointing: recompute the backbone's transformer blocks in the backward pass instead of
            keeping their activations (:mod:`geopeft.train.memory`): less memory, about one more backbone
            forward per step, the same gradients.
        normalisation: the per-band statistics inputs are standardised with: ``study`` (the study's published
            numbers) or ``train_split`` (the cell's own train split).
        matmul_precision: float32 matmul precision of the cell (``highest``; ``high``/``medium`` allow TF32/bf16
            internally, as TerraTorch's import sets ``medium``).
    """

    lr: float = field(metadata={"help": "AdamW learning rate"})
    batch_size: int = field(default=8, metadata={"help": "effective batch size"})
    max_epochs: int = field(default=100, metadata={"help": "maximum epochs"})
    patience: int = field(default=15, metadata={"help": "early stopping patience (val loss)"})
    lr_patience: int = field(default=4, metadata={"help": "ReduceLROnPlateau patience"})
    lr_factor: float = field(default=0.5, metadata={"help": "ReduceLROnPlateau factor"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    precision: str = field(default="fp32", metadata={"help": "fp32 | bf16"})
    strategy: str = field(default="ddp", metadata={"help": "ddp | deepspeed_zero1/2/3"})
    activation_checkpointing: bool = field(default=False, metadata={"help": "recompute ViT blocks in backward"})
    normalisation: str = field(default="study", metadata={"help": "study | train_split"})
    matmul_precision: str = field(default="highest", metadata={"help": "highest | high | medium"})

    def __post_init__(self) -> None:
        if not (_is_number(self.lr) and self.lr > 0):
            raise ConfigError(f"train.lr must be a positive number, got {self.lr!r}", "train.lr")
        for name in ("batch_size", "max_epochs", "patience", "lr_patience"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"train.{name} must be a positive integer, got {value!r}", f"train.{name}")
        if not (_is_number(self.lr_factor) and 0 < self.lr_factor < 1):
            raise ConfigError(f"train.lr_factor must lie in (0, 1), got {self.lr_factor!r}", "train.lr_factor")
        if not (_is_number(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(
                f"train.weight_decay must be a number >= 0, got {self.weight_decay!r}", "train.weight_decay"
            )
        if self.precision not in PRECISIONS:
            raise unknown_choice("train.precision", self.precision, PRECISIONS)
        if self.strategy not in STRATEGIES:
            raise unknown_choice("train.strategy", self.strategy, STRATEGIES)
        if not isinstance(self.activation_checkpointing, bool):
            raise ConfigError(
                f"train.activation_checkpointing must be true or false, got {self.activation_checkpointing!r}"
            )
        if self.normalisation not in NORMALISATIONS:
            raise unknown_choice("train.normalisation", self.normalisation, NORMALISATIONS)
        if self.matmul_precision not in MATMUL_PRECISIONS:
            raise unknown_choice("train.matmul_precision", self.matmul_precision, MATMUL_PRECISIONS)
        object.__setattr__(self, "lr", float(self.lr))
        object.__setattr__(self, "lr_factor", float(self.lr_factor))
        object.__setattr__(self, "weight_decay", float(self.weight_decay))


@dataclass(frozen=True)
class CellSpec:
    """One training run: model x tuning method x decoder x dataset x seed (+ hyper-parameters).

    Args:
        model: the backbone.
        tuning: the fine-tuning method.
        decoder: the neck and decoder.
        dataset: dataset registry name; every region of it is evaluated.
        train: optimisation settings.
        seed: the random seed.
    """

    model: ModelSpec
    tuning: TuningSpec
    decoder: DecoderSpec
    dataset: str
    train: TrainSpec
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}", "seed")
        _require_str(self.dataset, "dataset")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (options as mappings)."""
        d = asdict(self)
        d["tuning"]["options"] = dict(self.tuning.options)
        d["decoder"]["options"] = dict(self.decoder.options)
        d["model"]["bands"] = list(self.model.bands)
        d["model"]["metadata"] = list(self.model.metadata)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "cell spec") -> CellSpec:
        """Inverse of :meth:`to_dict`; unknown or missing keys raise a :class:`ConfigError`."""
        _check_keys(d, cls, where)
        parts: dict[str, Any] = {}
        for f, sub in (("model", ModelSpec), ("tuning", TuningSpec), ("decoder", DecoderSpec), ("train", TrainSpec)):
            value = d[f] if f in d else {}
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}: {f} must be a mapping, got {value!r}")
            _check_keys(value, sub, f"{where}: {f}")
            try:
                parts[f] = sub(**value)
            except TypeError as exc:
                raise ConfigError(f"{where}: {f}: {exc}") from exc
        return cls(dataset=d["dataset"], seed=d.get("seed", 0), **parts)

    def canonical_json(self) -> str:
        """The hashed form: sorted keys, no whitespace, plus :data:`SPEC_VERSION`."""
        return json.dumps({"spec_version": SPEC_VERSION, **self.to_dict()}, sort_keys=True, separators=(",", ":"))

    @functools.cached_property
    def cell_id(self) -> str:
        """12 hex digits of the SHA-256 of :meth:`canonical_json` (computed once: planning 10,000 cells asks often)."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:12]

    @property
    def slug(self) -> str:
        """A readable name, e.g. ``prithvi_tiny/lora/linear/sen1floods11/s0`` (the model's :attr:`ModelSpec.label`)."""
        return f"{self.model.label}/{self.tuning.method}/{self.decoder.name}/{self.dataset}/s{self.seed}"


def _check_keys(d: Mapping[str, Any], cls: type, where: str) -> None:
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {', '.join(sorted(names))}")
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    missing = required - set(d)
    if missing:
        raise ConfigError(f"{where}: missing key(s) {sorted(missing)}")


@dataclass(frozen=True)
class RunEnv:
    """Where and how a cell runs; never part of the cell id.

    Args:
        cache_root: directory of the HDF5 caches (``<cache_root>/<dataset>/<split>.h5``).
        num_workers: DataLoader workers per rank.
        threads: torch intra-op threads per process (0 = torch's default).
        device: ``auto``, ``cpu`` or ``cuda``.
        weights_root: directory of the pretrained weights files (``<weights_root>/<file>``, fetched with
            ``geopeft weights fetch``); empty means ``weights`` beside the cache directory.
    """

    cache_root: str
    num_workers: int = 0
    threads: int = 0
    device: str = "auto"
    weights_root: str = ""

    def __post_init__(self) -> None:
        if not self.weights_root:
            object.__setattr__(self, "weights_root", str(Path(self.cache_root).parent / "weights"))
        if self.device not in ("auto", "cpu", "cuda"):
            raise unknown_choice("env.device", self.device, ("auto", "cpu", "cuda"))
        for name in ("num_workers", "threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"env.{name} must be an integer >= 0, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict."""
        return asdict(self)
