"""The catalogue of official pretrained weights a spec's ``model.weights`` may name, and loading them.

A spec's ``model.weights`` is ``none`` (random initialisation) or the name of a :class:`PretrainedWeights` entry.
The name is part of the cell id; where the file lies is not: it is ``<weights_root>/<filename>``, with the
weights root taken from the run environment (:attr:`geopeft.spec.RunEnv.weights_root`). Files are never
downloaded at run time (compute nodes usually have no internet): ``geopeft weights fetch`` gets them once, on a
node that can reach the URL, and the sweep refuses to submit while one is missing.

The entries follow architectures.md §1.2 (Prithvi EO 1.0/2.0, ``ibm-nasa-geospatial`` on Hugging Face), §2.5
(Clay v1 base, ``made-with-clay/Clay-legacy``), §3 (DeCUR, torchgeo's URL pinned to a commit) and study.md §1 (the
ViT-B/16 baseline: timm's ``vit_base_patch16_224.augreg_in21k_ft_in1k`` from its Hugging Face repository, the file
``timm.create_model(..., pretrained=True)`` reads). No SHA-256 is pinned for them (``sha256=None``): none could be
checked from here, and an invented value would only break the download. Integrity is trust-on-first-use through a
sidecar instead (:mod:`geopeft.models.weights.integrity`).
Tests and users register further entries (e.g. a tiny backbone's) with :func:`register_weights`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from torch import nn

from geopeft.errors import ConfigError, WeightsError, unknown_choice
from geopeft.models.baselines import ViTB16Encoder
from geopeft.models.clay import ClayEncoder, load_clay_weights
from geopeft.models.prithvi import PrithviViT
from geopeft.models.registry import get_backbone
from geopeft.models.resnet import ResNetEncoder, load_decur_weights
from geopeft.models.weights.integrity import check_hex, read_sidecar, verify_file, write_sidecar
from geopeft.models.weights.prithvi import load_prithvi_weights
from geopeft.models.weights.vit import load_vit_b16_weights
from geopeft.registry import Registry

__all__ = [
    "NO_WEIGHTS",
    "LoadedWeights",
    "PretrainedWeights",
    "check_weights_name",
    "describe_weights",
    "fetch_hint",
    "get_weights",
    "load_pretrained",
    "register_weights",
    "weights_file",
    "weights_names",
]

#: The ``model.weights`` value for random initialisation.
NO_WEIGHTS = "none"
#: Loads a local file into a backbone in place (raises :class:`WeightsError` on any mismatch).
WeightsLoader = Callable[[nn.Module, Path], Any]
M = TypeVar("M", bound=nn.Module)


@dataclass(frozen=True)
class PretrainedWeights:
    """One official weights file.

    Args:
        name: the ``model.weights`` value, part of the cell id.
        backbones: the registered backbones the file fits.
        filename: the file's name under the weights root.
        url: where ``geopeft weights fetch`` downloads it from (a Hugging Face ``resolve`` URL).
        loader: puts the file into a freshly built backbone (band selection by name included).
        sha256: the SHA-256 the file must have, or None when no trustworthy value is known (see the module doc).
    """

    name: str
    backbones: tuple[str, ...]
    filename: str
    url: str
    loader: WeightsLoader
    sha256: str | None = None

    def __post_init__(self) -> None:
        if not self.name or self.name == NO_WEIGHTS:
            raise ConfigError(f"weights name {self.name!r} is reserved or empty; choose another")
        if not self.backbones:
            raise ConfigError(f"weights {self.name}: list the backbones the file fits")
        if Path(self.filename).name != self.filename:
            raise ConfigError(f"weights {self.name}: filename {self.filename!r} must be a bare file name")
        if self.sha256 is not None:
            try:
                object.__setattr__(self, "sha256", check_hex(self.sha256, f"weights {self.name}: sha256"))
            except WeightsError as exc:
                raise ConfigError(str(exc)) from None


@dataclass(frozen=True)
class LoadedWeights:
    """What was loaded into a backbone: the catalogue name, the file and its SHA-256."""

    name: str
    path: Path
    sha256: str


_WEIGHTS: Registry[PretrainedWeights] = Registry("model.weights")


def register_weights(entry: PretrainedWeights) -> PretrainedWeights:
    """Add ``entry`` to the catalogue (its backbones must be registered); a duplicate name raises ``ValueError``."""
    for backbone in entry.backbones:
        get_backbone(backbone, f"weights {entry.name}")
    _WEIGHTS.add(entry.name, entry)
    return entry


def get_weights(name: str, where: str = "") -> PretrainedWeights:
    """The catalogue entry ``name``; an unknown name raises a :class:`ConfigError` listing the known ones."""
    return _WEIGHTS.get(name, where)


def weights_names(backbone: str | None = None) -> list[str]:
    """Catalogue names in registration order; with ``backbone``, only those that fit it."""
    return [n for n in _WEIGHTS if backbone is None or backbone in _WEIGHTS.get(n).backbones]


def check_weights_name(backbone: str, weights: str, where: str = "") -> None:
    """Plan-time check that ``weights`` is ``none`` or a catalogue entry that fits ``backbone``.

    Raises:
        ConfigError: an unknown name, or one made for other backbones; the message names the file, the given
            value and the names allowed for ``backbone``.
    """
    allowed = [NO_WEIGHTS, *weights_names(backbone)]
    if weights == NO_WEIGHTS:
        return
    if weights not in _WEIGHTS:
        raise unknown_choice("model.weights", weights, allowed, where)
    entry = _WEIGHTS.get(weights)
    if backbone not in entry.backbones:
        prefix = f"{where}: " if where else ""
        raise ConfigError(
            f"{prefix}model.weights {weights!r} ({entry.filename}) is made for {', '.join(entry.backbones)}, not "
            f"backbone {backbone}; allowed for {backbone}: {', '.join(allowed)}"
        )


def weights_file(name: str, root: str | Path) -> Path:
    """Where the file of catalogue entry ``name`` lies under the weights root ``root``."""
    return Path(root) / get_weights(name).filename


def fetch_hint(name: str, root: str | Path) -> str:
    """The command that downloads entry ``name`` into ``root``."""
    return f"geopeft weights fetch {name} --root {root}"


def _verified(name: str, root: str | Path, where: str) -> tuple[PretrainedWeights, Path, str]:
    entry = get_weights(name, where)
    path = Path(root) / entry.filename
    prefix = f"{where}: " if where else ""
    if not path.is_file():
        raise WeightsError(
            f"{prefix}weights {name}: {path} does not exist; fetch it on a node with internet access: "
            f"{fetch_hint(name, root)}"
        )
    try:
        sha = verify_file(path, pinned=entry.sha256, fix=f"{fetch_hint(name, root)} --force")
    except WeightsError as exc:
        raise WeightsError(f"{prefix}weights {name}: {exc}") from None
    return entry, path, sha


def load_pretrained(backbone: nn.Module, name: str, root: str | Path, where: str = "") -> LoadedWeights:
    """Verify the file of entry ``name`` under ``root`` and load it into ``backbone`` in place.

    The file is hashed and checked against its sidecar (and the catalogue's pin); after the first successful
    load of a file without a sidecar, the sidecar is written, so every later load checks against it.

    Args:
        backbone: a freshly built backbone of one of the entry's backbones.
        name: the catalogue name (``model.weights``).
        root: the weights root.
        where: the cell, prepended to messages.

    Raises:
        WeightsError: the file is missing (the fetch command is named), its hash differs from the sidecar or the
            pin, or the loader rejects it (keys and shapes named).
    """
    entry, path, sha = _verified(name, root, where)
    try:
        entry.loader(backbone, path)
    except WeightsError as exc:
        prefix = f"{where}: " if where else ""
        raise WeightsError(f"{prefix}weights {name}: {exc}") from None
    if read_sidecar(path) is None:
        write_sidecar(path, sha)
    return LoadedWeights(name, path, sha)


def describe_weights(name: str, root: str | Path) -> dict[str, str | None]:
    """The provenance of a cell's weights: name, file and SHA-256 (re-checked against the sidecar; no re-read).

    ``none`` gives nulls for the file and the hash.
    """
    if name == NO_WEIGHTS:
        return {"name": name, "file": None, "sha256": None}
    _, path, sha = _verified(name, root, "")
    return {"name": name, "file": str(path), "sha256": sha}


def _expect(model: nn.Module, cls: type[M], name: str, path: Path) -> M:
    if not isinstance(model, cls):
        raise WeightsError(f"{path} holds {name} weights for a {cls.__name__}, not a {type(model).__name__}")
    return model


def _load_prithvi(model: nn.Module, path: Path) -> None:
    load_prithvi_weights(_expect(model, PrithviViT, "Prithvi", path), path)


def _load_clay(model: nn.Module, path: Path) -> None:
    load_clay_weights(_expect(model, ClayEncoder, "Clay", path), path)


def _load_decur(model: nn.Module, path: Path) -> None:
    load_decur_weights(_expect(model, ResNetEncoder, "DeCUR", path), path)


def _load_vit_b16(model: nn.Module, path: Path) -> None:
    load_vit_b16_weights(_expect(model, ViTB16Encoder, "ViT-B/16 ImageNet-21k", path), path)


def _hf(repo: str, file: str, revision: str = "main") -> str:
    return f"https://huggingface.co/{repo}/resolve/{revision}/{file}"


_PRITHVI = "ibm-nasa-geospatial/Prithvi-EO-"
for _backbone, _repo, _file in (
    ("prithvi_eo_v1_100", "1.0-100M", "Prithvi_EO_V1_100M.pt"),
    ("prithvi_eo_v2_100_tl", "2.0-100M-TL", "Prithvi_EO_V2_100M_TL.pt"),
    ("prithvi_eo_v2_300", "2.0-300M", "Prithvi_EO_V2_300M.pt"),
    ("prithvi_eo_v2_300_tl", "2.0-300M-TL", "Prithvi_EO_V2_300M_TL.pt"),
    ("prithvi_eo_v2_600", "2.0-600M", "Prithvi_EO_V2_600M.pt"),
    ("prithvi_eo_v2_600_tl", "2.0-600M-TL", "Prithvi_EO_V2_600M_TL.pt"),
):
    register_weights(PretrainedWeights(_backbone, (_backbone,), _file, _hf(_PRITHVI + _repo, _file), _load_prithvi))
register_weights(
    PretrainedWeights(
        "clay_v1_base",
        ("clay_v1_base",),
        "clay-v1-base.ckpt",
        _hf("made-with-clay/Clay-legacy", "v1/clay-v1-base.ckpt"),
        _load_clay,
    )
)
# torchgeo's ResNet50_Weights.SENTINEL2_ALL_DECUR. The "-fc6b09ff" in the name follows torch.hub's convention of a
# SHA-256 prefix; that could not be confirmed against the file from here, so it is not enforced.
register_weights(
    PretrainedWeights(
        "decur_resnet50",
        ("decur_resnet50",),
        "rn50_ssl4eo-s12_ms_decur_ep100-fc6b09ff.pth",
        _hf(
            "torchgeo/decur",
            "rn50_ssl4eo-s12_ms_decur_ep100-fc6b09ff.pth",
            revision="eba7ae5945d482a4319be046d34b552db5dd9950",
        ),
        _load_decur,
    )
)
# timm's ImageNet-21k (augreg, fine-tuned on 1k) ViT-B/16, the paper's "ViT (IN-21K)" baseline. The repository names
# its file model.safetensors; it is stored under the model's name so that it cannot be mistaken for another.
register_weights(
    PretrainedWeights(
        "vit_b16",
        ("vit_b16",),
        "vit_base_patch16_224.augreg_in21k_ft_in1k.safetensors",
        _hf("timm/vit_base_patch16_224.augreg_in21k_ft_in1k", "model.safetensors"),
        _load_vit_b16,
    )
)
