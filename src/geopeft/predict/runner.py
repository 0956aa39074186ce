"""Predict a scene of any size with a finished cell: tiles in batches, blended logits, rows written as they finish.

The scene is walked one row of tiles at a time (:class:`~geopeft.predict.tiling.TileGrid`). Each batch of up to
``batch`` tiles of that row is read as one window of the scene, run through the model at the training chip size, and
its logits are added, weighted, to a strip of rows (:class:`~geopeft.predict.blend.Strip`); when a tile row is done,
the rows above the next one are final and are written to the outputs. Memory therefore depends on the tile size,
the batch and the scene's width, never on its height: nothing holds the whole scene. Tiles whose pixels are all nodata
are not run.

Per-tile metadata, for the backbones that read it, is made as the cache makes it per chip: ``gsd`` is the dataset's;
``location`` is the latitude and longitude of the tile's centre pixel; ``time`` comes from ``date`` (the scene's
acquisition date-time, which a GeoTIFF does not record in a standard way).
"""

from __future__ import annotations

import datetime as dt
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from geopeft.cache.metadata import FIELDS, GSD, time_fields
from geopeft.errors import ConfigError, unknown_choice
from geopeft.predict.blend import Strip
from geopeft.predict.finished import FinishedCell
from geopeft.predict.output import Outputs, OutputSpec
from geopeft.predict.scene import Scene
from geopeft.predict.tiling import BLENDS, TileGrid, weights

Metadata = dict[str, npt.NDArray[np.float32]]


@dataclass(frozen=True)
class PredictOptions:
    """How to predict a scene.

    Args:
        blend: weight ramp of overlapping tiles, ``cosine`` or ``linear`` (:mod:`geopeft.predict.tiling`).
        overlap: pixels shared by neighbouring tiles; ``None``: a quarter of the tile.
        batch: tiles per forward pass (memory grows with it).
        bands: the scene's band names in file order; empty: its band descriptions, else the dataset's file order.
        date: the scene's acquisition date-time (ISO 8601), for cells that read ``time`` metadata.
        progress: show a progress bar (on stderr).
    """

    blend: str = field(default="cosine", metadata={"help": "cosine | linear"})
    overlap: int | None = field(default=None, metadata={"help": "pixels; None = tile // 4"})
    batch: int = field(default=8, metadata={"help": "tiles per forward pass"})
    bands: tuple[str, ...] = field(default=(), metadata={"help": "the scene's band names in file order"})
    date: str | None = field(default=None, metadata={"help": "acquisition date-time, ISO 8601"})
    progress: bool = field(default=True, metadata={"help": "progress bar on stderr"})

    def __post_init__(self) -> None:
        if self.blend not in BLENDS:
            raise unknown_choice("--blend", self.blend, BLENDS)
        if not isinstance(self.batch, int) or isinstance(self.batch, bool) or self.batch < 1:
            raise ConfigError(f"--batch must be a positive number of tiles, got {self.batch!r}")
        if self.overlap is not None and (not isinstance(self.overlap, int) or self.overlap < 0):
            raise ConfigError(f"--overlap must be a number of pixels >= 0, got {self.overlap!r}")
        object.__setattr__(self, "bands", tuple(b.strip() for b in self.bands if b.strip()))
        if self.date is not None:
            try:
                dt.datetime.fromisoformat(self.date)
            except ValueError:
                raise ConfigError(
                    f"--date {self.date!r} is not ISO 8601; e.g. 2019-03-12 or 2019-03-12T10:30"
                ) from None


@dataclass(frozen=True)
class PredictReport:
    """What :func:`predict_scene` did.

    Args:
        scene: the input GeoTIFF.
        outputs: the files written (classes, then probabilities when asked).
        height: scene rows.
        width: scene columns.
        tile: tile side.
        overlap: tile overlap in pixels.
        tiles: tiles in the grid.
        tiles_run: tiles run through the model (all-nodata tiles are not).
        nodata_pixels: pixels written as nodata.
        band_source: where the scene's band names came from.
        notes: remarks for the user (e.g. a pixel size other than the training data's).
        seconds: wall time.
    """

    scene: Path
    outputs: tuple[Path, ...]
    height: int
    width: int
    tile: int
    overlap: int
    tiles: int
    tiles_run: int
    nodata_pixels: int
    band_source: str
    notes: tuple[str, ...]
    seconds: float

    def summary(self) -> str:
        """A few lines for the terminal."""
        lines = [
            f"{self.scene}: {self.height} x {self.width} px, bands named by {self.band_source}",
            f"{self.tiles_run} of {self.tiles} tiles of {self.tile} px (overlap {self.overlap}) in "
            f"{self.seconds:.1f} s; {self.nodata_pixels} nodata pixel(s)",
            *(f"wrote {path}" for path in self.outputs),
            *(f"note: {note}" for note in self.notes),
        ]
        return "\n".join(lines)


def predict_scene(
    cell: FinishedCell,
    scene_path: Path,
    out: Path,
    *,
    probabilities: Path | None = None,
    options: PredictOptions | None = None,
) -> PredictReport:
    """Predict the GeoTIFF ``scene_path`` with ``cell``; write the classes to ``out`` (and probabilities).

    Raises:
        DataError: the scene is unreadable or lacks a band the cell reads; an output cannot be written.
        ConfigError: an invalid option, or time metadata the cell needs without ``options.date``.
    """
    opts = options or PredictOptions()
    start = time.monotonic()
    kinds = cell.spec.model.metadata
    if "time" in kinds and opts.date is None:
        raise ConfigError(
            f"cell {cell.where} reads the acquisition time (model.metadata: time); give the scene's with --date"
        )
    overlap = cell.tile // 4 if opts.overlap is None else opts.overlap
    info = cell.info
    with Scene(
        scene_path, cell.bands, given=opts.bands, dataset=info.name, native=info.bands, cell=cell.where
    ) as scene:
        grid = TileGrid(scene.height, scene.width, cell.tile, overlap)
        blend = weights(cell.tile, overlap, opts.blend)[: grid.tile_height, : grid.tile_width]
        strip = Strip(len(info.classes), grid.tile_height, scene.width)
        spec = OutputSpec(scene.height, scene.width, scene.profile, info.classes, cell.spec.cell_id, cell.spec.slug)
        run = nodata = 0
        with (
            Outputs(spec, out, probabilities) as outputs,
            tqdm(
                total=grid.n_tiles, desc=scene_path.name, unit="tile", disable=not opts.progress, file=sys.stderr
            ) as bar,
        ):
            for r, y in enumerate(grid.rows):
                for i in range(0, len(grid.cols), opts.batch):
                    xs = grid.cols[i : i + opts.batch]
                    run += _run_batch(cell, scene, grid, strip, blend, y, xs, opts.date)
                    bar.update(len(xs))
                rows = strip.take(grid.finished_below(r))
                nodata += int(rows.valid.size - np.count_nonzero(rows.valid))
                outputs.write(rows)
        notes = _pixel_size_notes(scene, info.gsd)
    written = (out,) if probabilities is None else (out, probabilities)
    return PredictReport(
        scene=scene_path,
        outputs=written,
        height=grid.height,
        width=grid.width,
        tile=cell.tile,
        overlap=overlap,
        tiles=grid.n_tiles,
        tiles_run=run,
        nodata_pixels=nodata,
        band_source=scene.bands.source,
        notes=notes,
        seconds=time.monotonic() - start,
    )


def _run_batch(
    cell: FinishedCell,
    scene: Scene,
    grid: TileGrid,
    strip: Strip,
    blend: npt.NDArray[np.float32],
    y: int,
    xs: Sequence[int],
    date: str | None,
) -> int:
    """Read the tiles at row ``y``, columns ``xs`` as one window, run those with data, add them to the strip."""
    h, w = grid.tile_height, grid.tile_width
    x0 = xs[0]
    values, valid = scene.read(y, x0, h, xs[-1] + w - x0)
    keep = []
    for x in xs:
        tile_valid = valid[:, x - x0 : x - x0 + w]
        strip.mark(y, x, tile_valid)
        if tile_valid.any():
            keep.append(x)
    if not keep:
        return 0
    raw = np.stack([pad_tile(values[:, :, x - x0 : x - x0 + w], grid.tile) for x in keep])
    logits = cell.forward(raw, tile_metadata(cell, scene, [(y + h // 2, x + w // 2) for x in keep], date))
    for x, tile_logits in zip(keep, logits, strict=True):
        strip.add(y, x, tile_logits[:, :h, :w], blend)
    return len(keep)


def pad_tile(values: npt.NDArray[np.float32], tile: int) -> npt.NDArray[np.float32]:
    """``[C, h, w]`` values reflect-padded on the right and bottom to ``[C, tile, tile]`` (scenes below a tile)."""
    _, h, w = values.shape
    if h == tile and w == tile:
        return values
    widths = ((0, 0), (0, tile - h), (0, tile - w))
    padded = np.pad(values, widths, mode="reflect") if min(h, w) > 1 else np.pad(values, widths, mode="edge")
    return padded


def tile_metadata(cell: FinishedCell, scene: Scene, centres: Sequence[tuple[int, int]], date: str | None) -> Metadata:
    """Per-tile metadata as the cache gives it per chip: ``gsd``, and the fields of the cell's metadata kinds.

    Args:
        cell: the cell (its dataset's GSD, its ``model.metadata``).
        scene: the open scene (for the position of each tile).
        centres: the centre pixel (row, column) of each tile.
        date: the scene's acquisition date-time (needed for ``time``).
    """
    n = len(centres)
    out: Metadata = {GSD: np.full(n, cell.info.gsd, dtype=np.float32)}
    kinds = cell.spec.model.metadata
    if "time" in kinds:
        assert date is not None  # predict_scene checked it
        for name, value in zip(FIELDS["time"], time_fields(date), strict=True):
            out[name] = np.full(n, value, dtype=np.float32)
    if "location" in kinds:
        lats, lons = scene.lat_lon([r for r, _ in centres], [c for _, c in centres])
        out["lat"], out["lon"] = np.asarray(lats, dtype=np.float32), np.asarray(lons, dtype=np.float32)
    return out


def _pixel_size_notes(scene: Scene, gsd: float) -> tuple[str, ...]:
    """A note when a projected scene's pixels are not the size of the training data's (``gsd`` metres)."""
    crs = scene.src.crs
    if crs is None or not crs.is_projected or (crs.linear_units or "").lower() not in ("metre", "meter", "m"):
        return ()
    sizes = [abs(float(v)) for v in scene.src.res]
    if all(math.isclose(s, gsd, rel_tol=0.01) for s in sizes):
        return ()
    shown = " x ".join(f"{s:g}" for s in sizes)
    return (f"the scene's pixels are {shown} m, the cell was trained on {gsd:g} m pixels; resample the scene",)
