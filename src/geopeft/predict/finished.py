"""A finished cell, loaded to predict: its best checkpoint in the model it was trained in, and its preprocessing.

The model is rebuilt as the cell built it (:func:`geopeft.cell.run_cell`): the random generators seeded with the
cell's seed, the backbone, neck and decoder at the training chip size (with the pretrained weights from the weights
root), the tuning method applied, then the trained parameters of ``ckpt/best.pt`` loaded; the frozen parameters are
thus the ones the cell trained around, pretrained or drawn. The input preprocessing is the one recorded in
``result.json`` (``provenance.normalisation``: the dataset's constant scale, then the study's or the train split's
per-band mean and std), so a scene is scaled and standardised exactly as the cell's test data were, with the same
float32 operations (:class:`geopeft.train.preprocess.BatchPreprocess`, without reBEN's padding: a scene is tiled at
the padded size). The forward pass runs under the cell's precision (bf16 autocast or fp32) and matmul precision.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from geopeft.cache.build import cache_path
from geopeft.cache.schema import read_header
from geopeft.cell import resolve_device
from geopeft.data.normalisation import InputNorm
from geopeft.data.registry import DatasetInfo, get_dataset
from geopeft.errors import CacheError, CheckpointError, ConfigError
from geopeft.io import read_json
from geopeft.models.build import build_segmentor, resolve_bands
from geopeft.models.segmentor import Segmentor
from geopeft.paths import CellPaths
from geopeft.result import CellResult
from geopeft.spec import CellSpec
from geopeft.train import checkpoint, precision
from geopeft.train.loop import autocast
from geopeft.train.preprocess import BatchPreprocess
from geopeft.tuning.registry import apply_tuning, load_trainable_state_dict


@dataclass(frozen=True)
class FinishedCell:
    """A done cell's model on its device, ready for batches of tiles.

    Args:
        spec: the cell spec.
        info: its dataset's facts (classes, bands, GSD).
        bands: the input bands, in channel order.
        prep: scale and standardisation of raw tiles.
        tile: the training chip size (after the dataset's padding): the tile side.
        model: the segmentor with the best checkpoint loaded, in eval mode.
        device: where it runs.
        best_epoch: the epoch of the checkpoint.
    """

    spec: CellSpec
    info: DatasetInfo
    bands: tuple[str, ...]
    prep: BatchPreprocess
    tile: int
    model: Segmentor
    device: torch.device
    best_epoch: int

    @property
    def where(self) -> str:
        """The cell as messages name it: ``slug [id]``."""
        return f"{self.spec.slug} [{self.spec.cell_id}]"

    def forward(
        self, raw: npt.NDArray[np.float32], metadata: dict[str, npt.NDArray[np.float32]]
    ) -> npt.NDArray[np.float32]:
        """Logits ``[B, classes, t, t]`` (float32, on the CPU) of raw tiles ``[B, C, t, t]`` in the file's units.

        Args:
            raw: the tiles' values as read (before scale and standardisation).
            metadata: per-tile metadata fields, ``[B]`` each (``gsd`` and the fields of the cell's kinds).
        """
        image = torch.from_numpy(raw).to(self.device)
        meta = {k: torch.from_numpy(v).to(self.device) for k, v in metadata.items()}
        with (
            torch.inference_mode(),
            precision.matmul_precision(self.spec.train.matmul_precision),
            autocast(self.device, self.spec.train.precision),
        ):
            logits = self.model(self.prep.image(image), meta)
        out: npt.NDArray[np.float32] = logits.float().cpu().numpy()
        return out


def training_size(cache_root: str | os.PathLike[str], info: DatasetInfo, where: str) -> int:
    """The chip size a cell of dataset ``info`` trained at: its val split's width in the cache, after padding.

    Raises:
        CacheError: the cache is not at hand; the message says to pass the size with ``--tile``.
    """
    path = cache_path(cache_root, info.name, info.val_split)
    try:
        header = read_header(path, info.name, info.val_split, cache_root)
    except CacheError as exc:
        raise CacheError(
            f"{where}: the training chip size is read from the cache, which is not usable ({exc}); pass it with "
            "--tile N (the chip size the cell was trained on, e.g. 512 for Sen1Floods11)"
        ) from None
    return max(int(header.shape[2]), info.pad_to)


def load_cell(
    cell_dir: Path,
    *,
    cache_root: str | os.PathLike[str],
    weights_root: str | os.PathLike[str],
    device: str = "auto",
    tile: int = 0,
) -> FinishedCell:
    """Load the finished cell in ``cell_dir`` for prediction.

    Args:
        cell_dir: the cell directory (``<sweep>/cells/<cell id>``).
        cache_root: the sweep's cache root (the training chip size is read from the val split's header).
        weights_root: the sweep's weights root (pretrained weights of a backbone that loads them).
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        tile: the training chip size when the cache is not at hand; 0 reads it from the cache.

    Raises:
        ConfigError: the cell is not done (no result), an invalid device or tile size.
        CheckpointError: its best checkpoint is missing or unreadable.
        CacheError: no usable cache and no ``tile``.
        GeopeftError: the result, spec or checkpoint does not belong to the cell or does not fit its model.
    """
    paths = CellPaths(Path(cell_dir))
    if not paths.result.is_file():
        raise ConfigError(
            f"{paths.dir}: the cell is not done (no result.json); predict with a done cell (see `geopeft status GRID`)"
        )
    result = CellResult.from_dict(read_json(paths.result), str(paths.result))
    spec = CellSpec.from_dict(result.spec, str(paths.result))
    if spec.cell_id != result.cell_id or paths.dir.name != spec.cell_id:
        raise ConfigError(f"{paths.result}: its spec is cell {spec.cell_id}, not {result.cell_id} of {paths.dir}")
    if not paths.best_ckpt.is_file():
        raise CheckpointError(
            f"{paths.best_ckpt}: missing; rerun the cell (geopeft rerun GRID --cells {spec.cell_id})"
        )
    where = f"{spec.slug} [{spec.cell_id}]"
    info = get_dataset(spec.dataset, where)
    norm = InputNorm.from_dict(result.provenance.get("normalisation", {}), str(paths.result))
    bands = resolve_bands(spec.model)
    if norm.bands != bands:
        raise ConfigError(f"{paths.result}: normalisation covers bands {norm.bands}, the model reads {bands}")
    if tile and (not isinstance(tile, int) or tile < 1):
        raise ConfigError(f"--tile must be a positive number of pixels, got {tile!r}")
    size = tile or training_size(cache_root, info, where)
    run_on = resolve_device(device)
    checkpoint.seed_everything(spec.seed)  # the frozen parameters a backbone without weights drew in the cell
    model = build_segmentor(
        spec.model,
        spec.decoder,
        num_classes=len(info.classes),
        img_size=size,
        where=where,
        weights_root=Path(weights_root),
    )
    apply_tuning(model, spec.tuning, where=where)
    load_trainable_state_dict(model, checkpoint.load(paths.best_ckpt)["model"], where=str(paths.best_ckpt))
    model.eval().to(run_on)
    return FinishedCell(
        spec=spec,
        info=info,
        bands=bands,
        prep=BatchPreprocess(norm, ignore_index=info.ignore_index),
        tile=size,
        model=model,
        device=run_on,
        best_epoch=result.train.best_epoch,
    )
