"""Synthetic datasets in their native file formats (GeoTIFF, HDF5, ...), for ``make demo`` and the tests.

Use :func:`get_writer` with a dataset name; :func:`write_sen1floods11` is kept as a direct name.
"""

from geopeft.data.synthetic.registry import get_writer, register_synthetic, synthetic_names
from geopeft.data.synthetic.sen1floods11 import write_sen1floods11

__all__ = ["get_writer", "register_synthetic", "synthetic_names", "write_sen1floods11"]
