"""Grid files: one readable YAML that expands, in code, to every cell of a study.

A grid file has shared ``defaults``, ``axes`` whose cartesian product gives the cells, ``overrides``
that set values on the cells matching a pattern (e.g. a learning rate per model × method), and
``exclude`` patterns. ``cache`` is the HDF5 cache directory and the optional ``weights`` the directory of
the pretrained weights files (default: ``weights`` beside the cache). Keys are checked: a typo raises an
error naming the file, the key and the allowed keys, before anything is submitted. A cell whose ``train.lr`` is
``search`` takes its rate from the ``lr_search`` stage (:mod:`hpc.plan.lr_search`). Example (``sweeps/demo.yaml``)::

    name: demo
    output: runs/demo
    cache: data/cache
    defaults: {model: {name: prithvi_tiny}, train: {lr: 1.0e-3, batch_size: 4, max_epochs: 8}}
    axes: {tuning: [{method: full}, {method: lora}], dataset: [sen1floods11], seed: [0, 1]}
    overrides: [{where: {tuning.method: full}, set: {train.lr: 3.0e-4}}]
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from geopeft.errors import ConfigError, GeopeftError
from geopeft.spec import CellSpec, RunEnv
from hpc.plan.keys import Origins, check_path, key_of, leaf_paths
from hpc.scheduler.names import check_name, check_script_path

if TYPE_CHECKING:
    from hpc.plan.lr_search import LrPlan

TOP_KEYS = (
    "name",
    "description",
    "output",
    "cache",
    "weights",
    "raw",
    "env",
    "defaults",
    "axes",
    "overrides",
    "exclude",
    "lr_search",
)
SECTIONS = ("model", "tuning", "decoder", "train")
AXES = (*SECTIONS, "dataset", "seed")
ENV_KEYS = ("num_workers", "threads", "device")


@dataclass(frozen=True)
class Grid:
    """A parsed grid file.

    Args:
        path: the grid file.
        name: sweep name.
        output: the sweep directory (absolute).
        env: where and how cells run.
        cells: the expanded cells, in a stable order (axes in file order, values in list order).
        sha256: hash of the file's bytes, recorded in the manifest.
        raw: the optional ``raw`` mapping, dataset -> its native files (checked by ``hpc.prepare.caches``): a SLURM
            sweep whose cache is missing builds it there in a prepare job first.
        stage: ``seeds`` (every cell with its rate) or ``lr`` (the learning-rate search; see
        :mod:`hpc.plan.lr_search`).
        plan: what the stage decided: the cells waiting for their search, the choices to record.
    """

    path: Path
    name: str
    output: Path
    env: RunEnv
    cells: tuple[CellSpec, ...]
    sha256: str
    raw: Mapping[str, Any] = field(default_factory=dict)
    stage: str = "seeds"
    plan: LrPlan | None = None


def load_grid(path: str | Path, *, stage: str = "seeds") -> Grid:
    """Read and expand a grid file for ``stage``; every error names the file and the offending key."""
    from hpc.plan.lr_search import LrPlan  # here: stages reads manifests, whose module imports this one

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: grid file not found; pass a YAML file such as sweeps/demo.yaml")
    raw = p.read_bytes()
    try:
        doc = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    where = str(p)
    _require_mapping(doc, where)
    _check_keys(doc, TOP_KEYS, where)
    for key in ("name", "output", "cache"):
        if not isinstance(doc.get(key), str):
            raise ConfigError(f"{where}: '{key}' is required and must be a string")
    check_name(doc["name"], f"{where}: name")
    check_script_path(str(Path(doc["output"]).resolve()), f"{where}: output")
    env_doc = doc.get("env", {})
    _require_mapping(env_doc, f"{where}: env")
    _check_keys(env_doc, ENV_KEYS, f"{where}: env")
    weights = doc.get("weights", "")
    if not isinstance(weights, str):
        raise ConfigError(f"{where}: 'weights' must be the directory of the pretrained weights files (a string)")
    env = RunEnv(
        cache_root=str(Path(doc["cache"]).resolve()),
        weights_root=str(Path(weights).resolve()) if weights else "",
        **env_doc,
    )
    plan = LrPlan.make(doc, Path(doc["output"]).resolve(), stage, where)
    cells = expand(doc, where, plan)
    return Grid(
        path=p.resolve(),
        name=doc["name"] + ("-lr" if stage == "lr" else ""),
        output=plan.output,
        env=env,
        cells=tuple(cells),
        sha256=hashlib.sha256(raw).hexdigest(),
        raw=_raw_mapping(doc.get("raw", {}), where),
        stage=stage,
        plan=plan,
    )


def sweep_root(grid_or_dir: str | Path) -> Path:
    """The sweep directory of a grid file (its ``output``), or the directory itself.

    Reads only the ``output`` key, so status and tables never import torch to expand cells.
    """
    p = Path(grid_or_dir)
    if p.is_dir():
        return p.resolve()
    if not p.is_file():
        raise ConfigError(f"{p}: neither a grid file nor a sweep directory")
    try:
        doc = yaml.safe_load(p.read_bytes())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    if not isinstance(doc, Mapping) or not isinstance(doc.get("output"), str):
        raise ConfigError(f"{p}: 'output' is required and must be a string")
    return Path(doc["output"]).resolve()


def expand(doc: Mapping[str, Any], where: str, plan: LrPlan | None = None) -> list[CellSpec]:
    """The cells of a parsed grid document, validated against the registries (``plan``: the stage's rates)."""
    defaults = doc.get("defaults", {})
    _require_mapping(defaults, f"{where}: defaults")
    _check_keys(defaults, AXES, f"{where}: defaults")
    axes = doc.get("axes", {})
    _require_mapping(axes, f"{where}: axes")
    _check_keys(axes, AXES, f"{where}: axes")
    for name, values in axes.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: axes.{name} must be a non-empty list")
    overrides = _patterns(doc.get("overrides", []), f"{where}: overrides", with_set=True)
    excludes = _patterns(doc.get("exclude", []), f"{where}: exclude", with_set=False)

    base = Origins()
    for key, value in defaults.items():
        base.record(key, f"defaults.{key}", value)
    cells: list[CellSpec] = []
    seen: dict[str, str] = {}
    matched = [False] * len(overrides)
    names = list(axes)
    for combo in itertools.product(*(range(len(axes[n])) for n in names)):
        label = ", ".join(f"axes.{n}[{i}]" for n, i in zip(names, combo, strict=True))
        cell = copy.deepcopy(dict(defaults))
        origins = base.copy()
        for n, i in zip(names, combo, strict=True):
            _merge(cell, n, axes[n][i], f"{where}: axes.{n}[{i}]")
            origins.record(n, f"axes.{n}[{i}]", axes[n][i])
        if any(_matches(cell, pattern) for pattern in excludes):
            continue
        for k, (pattern, settings) in enumerate(overrides):
            if _matches(cell, pattern):
                matched[k] = True
                for dotted, value in settings.items():
                    _set(cell, dotted, value, f"{where}: overrides[{k}].set.{dotted}")
                    origins.record(dotted, f"overrides[{k}].set.{dotted}", value)
        for path in leaf_paths(cell):
            check_path(path, f"{where}: {origins.of(path) or label}")
        for one in plan.cells(cell, label) if plan else [cell]:
            spec = _to_spec(one, where, label, origins)
            if spec.cell_id in seen:
                raise ConfigError(f"{where}: {label} repeats the cell of {seen[spec.cell_id]}; remove one of them")
            seen[spec.cell_id] = label
            cells.append(spec)
    unmatched = [k for k, hit in enumerate(matched) if not hit]
    if unmatched:
        k = unmatched[0]
        raise ConfigError(
            f"{where}: overrides[{k}].where {dict(overrides[k][0])} matches no cell of the grid; fix its values "
            "(they must equal a cell's, e.g. the model's registry name) or remove the override"
        )
    if not cells:
        raise (plan and plan.empty_error()) or ConfigError(
            f"{where}: the grid expands to no cells; check axes and exclude"
        )
    return cells


def _to_spec(cell: dict[str, Any], where: str, label: str, origins: Origins | None = None) -> CellSpec:
    """The spec of one expanded cell; a bad value is reported at the place in the file it came from."""
    for key in ("model", "dataset"):
        if key not in cell:
            raise ConfigError(f"{where}: {label}: no '{key}' given in defaults or axes")
    cell.setdefault("tuning", {"method": "full"})
    cell.setdefault("decoder", {"name": "linear"})
    if "lr" not in cell.get("train", {}):
        raise ConfigError(f"{where}: {label}: no learning rate; set train.lr in defaults, axes or overrides")
    prefix = f"{where}: {label}"
    try:
        spec = CellSpec.from_dict(cell, prefix)
        validate_spec(spec, prefix)
    except ConfigError as exc:
        found = key_of(exc, cell)
        key = found or ""
        origin = origins.of(key) if origins is not None and key else None
        if origin is None:
            raise ConfigError(f"{prefix}: {_strip(str(exc), prefix)}", key) from None
        raise ConfigError(f"{where}: {origin}: {_strip(str(exc), prefix)} (in the cell {label})", key) from None
    return spec


def _strip(message: str, prefix: str) -> str:
    """The message without the cell prefix the validators put in front of it."""
    while message.startswith(f"{prefix}: "):
        message = message[len(prefix) + 2 :]
    return message


def validate_spec(spec: CellSpec, where: str) -> None:
    """Check names and options against the registries (dataset, backbone, decoder, tuning method, metadata, bands).

    A cell normalised with the study's statistics needs a non-zero published std for every band it reads
    (``train_split`` statistics exist only once the cache is built; the cell checks them when it starts). A
    tuning method that cannot tune the backbone (LoRA or VPT on a ResNet) is refused here, from the method's own
    check. Errors carry the dotted key of the step that refused (:attr:`ConfigError.key`).
    """
    # Imported here: the registries pull in torch, which `geopeft status` never needs.
    from geopeft.data.bands import select_indices
    from geopeft.data.normalisation import resolve
    from geopeft.data.registry import get_dataset
    from geopeft.models.build import resolve_bands
    from geopeft.models.build import validate as validate_model
    from geopeft.tuning.registry import validate_tuning

    key = "dataset"
    try:
        info = get_dataset(spec.dataset, where=f"{where}: dataset")
        key = "model.metadata"
        info.require_metadata(spec.model.metadata, where)
        key = "model.name"
        validate_model(spec.model, spec.decoder, where=where)
        bands = resolve_bands(spec.model)
        key = "model.bands"
        select_indices(info.bands, bands, f"{where}: model.bands of {spec.model.name} on dataset {spec.dataset}")
        if spec.train.normalisation == "study":
            key = "train.normalisation"
            resolve("study", spec.dataset, bands, scale=info.scale, study=info.study_stats, where=where)
        key = "tuning.method"
        validate_tuning(spec.tuning, where=where, backbone=spec.model.name)
    except ConfigError as exc:
        raise ConfigError(str(exc), exc.key or _refine(key, str(exc))) from None
    except GeopeftError as exc:
        raise ConfigError(f"{where}: {exc}", key) from exc


def _refine(step: str, message: str) -> str:
    """The key of a step's error, made precise where its message says more (a decoder, an option, weights)."""
    option = re.search(r" options? '?(\w+)", message)
    if step == "model.name":
        if "decoder" in message:
            return f"decoder.options.{option.group(1)}" if option else "decoder.name"
        if "weights" in message:
            return "model.weights"
    if step == "tuning.method" and option:
        return f"tuning.options.{option.group(1)}"
    return step


def _merge(cell: dict[str, Any], axis: str, value: Any, where: str) -> None:
    if axis in SECTIONS:
        _require_mapping(value, where)
        section = cell.setdefault(axis, {})
        _require_mapping(section, where)
        for key, val in value.items():
            if key == "options" and isinstance(val, Mapping):
                section["options"] = {**section.get("options", {}), **val}
            else:
                section[key] = val
    else:
        if isinstance(value, (Mapping, list)):
            raise ConfigError(f"{where}: {axis} values must be scalars, got {value!r}")
        cell[axis] = value


def _patterns(items: Any, where: str, *, with_set: bool) -> list[Any]:
    if not isinstance(items, list):
        raise ConfigError(f"{where}: must be a list")
    out: list[Any] = []
    for i, item in enumerate(items):
        _require_mapping(item, f"{where}[{i}]")
        if with_set:
            _check_keys(item, ("where", "set"), f"{where}[{i}]")
            _require_mapping(item.get("where", {}), f"{where}[{i}].where")
            _require_mapping(item.get("set"), f"{where}[{i}].set")
            for part in ("where", "set"):
                for dotted in item.get(part, {}):
                    check_path(dotted, f"{where}[{i}].{part}")
            out.append((item.get("where", {}), item["set"]))
        else:
            for dotted in item:
                check_path(dotted, f"{where}[{i}]")
            out.append(item)
    return out


def _get(cell: Mapping[str, Any], dotted: str) -> Any:
    node: Any = cell
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _set(cell: dict[str, Any], dotted: str, value: Any, where: str) -> None:
    *parents, last = dotted.split(".")
    node = cell
    for part in parents:
        node = node.setdefault(part, {})
        _require_mapping(node, where)
    node[last] = value


def _matches(cell: Mapping[str, Any], pattern: Mapping[str, Any]) -> bool:
    for dotted, expected in pattern.items():
        actual = _get(cell, dotted)
        if isinstance(expected, list):
            if actual not in expected:
                return False
        elif actual != expected:
            return False
    return True


def _raw_mapping(value: Any, where: str) -> dict[str, Any]:
    _require_mapping(value, f"{where}: raw")
    return dict(value)


def _require_mapping(value: Any, where: str) -> None:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")


def _check_keys(d: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = [k for k in d if k not in allowed]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(allowed)}")
