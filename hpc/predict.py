"""``geopeft predict``: pick a done cell of a sweep (``--cell`` or ``--best``) and apply it to a GeoTIFF scene.

``--best key=value,...`` chooses among the done cells of the manifest whose spec matches every filter. Keys are
``model`` (the backbone name, or its label with ``+time``/``+location``), ``method`` (the tuning method), ``decoder``,
``dataset``, ``seed``, or any dotted spec field (``train.lr``, ``tuning.options.r``). The cells must be of one dataset
(mIoU is not comparable across datasets). The winner has the highest **validation mIoU at its best epoch** (the
epoch whose checkpoint ``ckpt/best.pt`` holds, from ``metrics.jsonl``): the study selects checkpoints and compares
configurations on validation data, and choosing by test mIoU would make the test score of the chosen cell optimistic.
Only when a matching cell lacks that record (an old or hand-copied cell without ``metrics.jsonl``) are all of them
ranked by the mIoU of the dataset's in-distribution test region instead, and the output says so. A tie is an error
naming the tied cells.

Nothing here imports torch until a cell is loaded (``hpc.cli`` imports this module).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from geopeft.errors import ConfigError, GeopeftError
from geopeft.io import read_json, read_jsonl
from geopeft.paths import CellPaths
from geopeft.result import CellResult
from hpc.state.manifest import Entry, Manifest, read_manifest

#: ``--best`` keys that abbreviate a spec field.
ALIASES = {"method": "tuning.method", "tuning": "tuning.method", "decoder": "decoder.name", "seed": "seed"}


@dataclass(frozen=True)
class Choice:
    """The cell to predict with, and why it was chosen.

    Args:
        entry: its manifest entry.
        paths: its directory.
        reason: one line for the user.
    """

    entry: Entry
    paths: CellPaths
    reason: str


def parse_filters(text: str) -> dict[str, str]:
    """``model=prithvi_tiny,method=lora`` -> ``{"model": "prithvi_tiny", "method": "lora"}``.

    Raises:
        ConfigError: an item without ``=``, an empty key or value, or a key given twice.
    """
    out: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ConfigError(
                f"--best {text!r}: {item!r} is not key=value; e.g. --best model=prithvi_tiny,method=lora"
            )
        if key in out:
            raise ConfigError(f"--best {text!r}: {key} is given twice")
        out[key] = value
    return out


_ABSENT = object()


def _field(spec: dict[str, Any], key: str) -> Any:
    """The value of a (dotted) ``--best`` key in a spec dict, or ``_ABSENT``."""
    node: Any = spec
    for part in ALIASES.get(key, key).split("."):
        if not isinstance(node, dict) or part not in node:
            return _ABSENT
        node = node[part]
    return node


def _check_keys(entries: list[Entry], filters: dict[str, str]) -> None:
    """A :class:`ConfigError` for a key that names a field of no cell (a typo)."""
    specs = [e.spec.to_dict() for e in entries]
    for key in filters:
        if key != "model" and all(_field(spec, key) is _ABSENT for spec in specs):
            known = ", ".join(sorted({"dataset", "model", *ALIASES}))
            raise ConfigError(f"--best: unknown key {key!r}; use {known}, or a dotted spec field such as train.lr")


def matches(entry: Entry, filters: dict[str, str]) -> bool:
    """Whether ``entry``'s spec has every filtered value (compared as text; ``model`` also matches the label)."""
    spec = entry.spec.to_dict()
    for key, wanted in filters.items():
        if key == "model":
            if wanted not in (entry.spec.model.name, entry.spec.model.label):
                return False
            continue
        value = _field(spec, key)
        if value is _ABSENT or (str(value) != wanted and not _same_number(value, wanted)):
            return False
    return True


def _same_number(value: Any, text: str) -> bool:
    try:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and float(text) == float(value)
    except ValueError:
        return False


def _done(manifest: Manifest, entry: Entry) -> CellResult | None:
    """The result of a done cell, ``None`` when it has none (an invalid one is not done either)."""
    paths = manifest.paths.cell(entry.cell_id)
    if not paths.result.is_file():
        return None
    try:
        return CellResult.from_dict(read_json(paths.result), str(paths.result))
    except GeopeftError:
        return None


def val_miou_at_best(paths: CellPaths, result: CellResult) -> float | None:
    """The validation mIoU of the epoch whose weights ``best.pt`` holds (``metrics.jsonl``), or ``None``."""
    for record in read_jsonl(paths.metrics_log):
        if record.get("epoch") == result.train.best_epoch and isinstance(record.get("val_miou"), (int, float)):
            return float(record["val_miou"])
    return None


def choose(manifest: Manifest, *, cell: str | None = None, best: str | None = None) -> Choice:
    """The cell of ``--cell ID`` (a prefix) or ``--best FILTERS`` (see the module docstring).

    Raises:
        ConfigError: neither or both given; no such cell, or not done; no done cell matches; matching cells of
            several datasets; a tie.
    """
    where = manifest.paths.manifest
    if (cell is None) == (best is None):
        raise ConfigError("say which cell predicts: --cell ID or --best key=value,... (e.g. method=lora)")
    if cell is not None:
        found = [e for e in manifest.entries if e.cell_id.startswith(cell)]
        if len(found) != 1:
            what = "no cell" if not found else f"{len(found)} cells"
            raise ConfigError(f"{where}: {what} with id starting {cell!r}; see `geopeft status`")
        if _done(manifest, found[0]) is None:
            raise ConfigError(f"cell {found[0].cell_id} ({found[0].spec.slug}) is not done; see `geopeft status`")
        return Choice(found[0], manifest.paths.cell(found[0].cell_id), f"cell {found[0].cell_id} {found[0].spec.slug}")
    assert best is not None
    filters = parse_filters(best)
    _check_keys(list(manifest.entries), filters)
    matching = [e for e in manifest.entries if matches(e, filters)]
    done = [(e, r) for e in matching if (r := _done(manifest, e)) is not None]
    if not done:
        detail = f"{len(matching)} match, none is done" if matching else "none matches"
        raise ConfigError(
            f"--best {best}: of the {len(manifest.entries)} cells of {where}, {detail}; see `geopeft status`"
        )
    datasets = sorted({e.spec.dataset for e, _ in done})
    if len(datasets) > 1:
        raise ConfigError(f"--best {best}: done cells of datasets {', '.join(datasets)} match; add dataset=NAME")
    return _best(manifest, best, done)


def _best(manifest: Manifest, best: str, done: list[tuple[Entry, CellResult]]) -> Choice:
    """The highest-scoring of ``done`` (validation mIoU at the best epoch, else in-distribution test mIoU)."""
    vals = [val_miou_at_best(manifest.paths.cell(e.cell_id), r) for e, r in done]
    if all(v is not None for v in vals):
        criterion = "validation mIoU at the best epoch"
        scores = [float(v) for v in vals if v is not None]
    else:
        lacking = next(e.cell_id for (e, _), v in zip(done, vals, strict=True) if v is None)
        from geopeft.data.registry import get_dataset

        test = get_dataset(done[0][0].spec.dataset).regions[0]  # the in-distribution test split
        criterion = f"{test} mIoU (cell {lacking} has no validation record in metrics.jsonl)"
        scores = [r.regions[test].miou for _, r in done]
    top = max(scores)
    tied = [e for (e, _), s in zip(done, scores, strict=True) if s == top]
    if len(tied) > 1:
        names = ", ".join(f"{e.cell_id} ({e.spec.slug})" for e in tied)
        raise ConfigError(f"--best {best}: cells {names} tie at {criterion} {100 * top:.2f}; pick one with --cell ID")
    entry = tied[0]
    reason = (
        f"cell {entry.cell_id} {entry.spec.slug}: the best {criterion} ({100 * top:.2f}) of the {len(done)} done "
        f"cell(s) matching {best}"
    )
    return Choice(entry, manifest.paths.cell(entry.cell_id), reason)


Opt = typer.Option


def predict(
    grid: Annotated[Path, typer.Argument(help="grid file (sweeps/*.yaml) or sweep directory")],
    scene: Annotated[Path, Opt("--in", help="GeoTIFF scene (bands named by descriptions or --bands)")],
    out: Annotated[Path, Opt("--out", help="class GeoTIFF to write (uint8, nodata 255)")],
    cell: Annotated[str | None, Opt(help="the done cell's id (a prefix)")] = None,
    best: Annotated[str | None, Opt(help="key=value,...: the matching done cell of best val mIoU")] = None,
    probabilities: Annotated[Path | None, Opt(help="also write the softmax here (float16 band per class)")] = None,
    bands: Annotated[str | None, Opt(help="the scene's band names in file order, comma-separated")] = None,
    blend: Annotated[str, Opt(help="weights of overlapping tiles: cosine | linear")] = "cosine",
    overlap: Annotated[int | None, Opt(help="pixels shared by neighbouring tiles (default: tile / 4)")] = None,
    batch: Annotated[int, Opt(help="tiles per forward pass")] = 8,
    device: Annotated[str, Opt(help="auto (CUDA when present) | cpu | cuda")] = "auto",
    date: Annotated[str | None, Opt(help="acquisition date (ISO 8601), for cells that read time")] = None,
    tile: Annotated[int, Opt(help="training chip size, when the sweep's cache is not at hand")] = 0,
    progress: Annotated[bool, Opt(help="progress bar on stderr")] = True,
) -> None:
    """Apply a done cell to a GeoTIFF of any size: a class GeoTIFF (and --probabilities) on the scene's grid."""
    from geopeft.predict import PredictOptions, load_cell, predict_scene
    from hpc.plan.grid import sweep_root

    manifest = read_manifest(sweep_root(grid))
    choice = choose(manifest, cell=cell, best=best)
    options = PredictOptions(
        blend=blend,
        overlap=overlap,
        batch=batch,
        bands=tuple((bands or "").split(",")),
        date=date,
        progress=progress,
    )
    typer.echo(f"predicting with {choice.reason}")
    env = manifest.env
    model = load_cell(
        choice.paths.dir, cache_root=env.cache_root, weights_root=env.weights_root, device=device, tile=tile
    )
    report = predict_scene(model, scene, out, probabilities=probabilities, options=options)
    typer.echo(report.summary())
