"""Apply a finished cell to new imagery: a GeoTIFF of any size in, a georeferenced class GeoTIFF out.

:func:`load_cell` rebuilds a done cell's model from its directory; :func:`predict_scene` tiles a scene at the cell's
training size, blends the overlapping tiles' logits and writes the classes (and, when asked, the probabilities) row
strip by row strip. ``geopeft predict`` (``hpc/predict.py``) picks the cell of a sweep and calls both.
"""

from geopeft.predict.finished import FinishedCell, load_cell, training_size
from geopeft.predict.output import NODATA_CLASS
from geopeft.predict.runner import PredictOptions, PredictReport, predict_scene
from geopeft.predict.tiling import BLENDS, TileGrid, weights

__all__ = [
    "BLENDS",
    "NODATA_CLASS",
    "FinishedCell",
    "PredictOptions",
    "PredictReport",
    "TileGrid",
    "load_cell",
    "predict_scene",
    "training_size",
    "weights",
]
