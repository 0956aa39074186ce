"""reBEN 7k (BigEarthNet v2.0 Sentinel-2 patches): the native GeoTIFF reader (spec/study.md §3.3).

Layout under the raw root, as BigEarthNet v2.0 unpacks (``<tile>`` is the patch id without its last two parts)::

    BigEarthNet-S2/<tile>/<id>/<id>_B01.tif ... <id>_B12.tif     12 single-band uint16 L2A GeoTIFFs
    Reference_Maps/<tile>/<id>/<id>_reference_map.tif           1 band, CORINE Land Cover level-3 codes

Ids look like ``S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_26_57``; the authors' split files ship with geopeft.

What :meth:`ReBEN7kSource.read_sample` returns, and so what the cache stores:

* the 12 bands B01 ... B12 (no B10 in L2A) as uint16 DN (``scale`` 1), each brought onto the 10 m grid of B02 by
  nearest-neighbour upsampling: every 20 m pixel becomes 2x2 and every 60 m pixel 6x6 pixels (``np.repeat``). The
  bands of a patch share their upper-left corner, and for such aligned grids this equals the study's
  ``xarray.interp_like(method="nearest")`` (``join_reben_s2_bands.py``) exactly: the nearest coarse pixel centre of a
  fine pixel is always the one that covers it. Grids that are not aligned are an error;
* the variants of the layout that circulate are read too: band files of any integer dtype (int16 as in torchgeo's
  fixtures, for example) whose values fit the stored uint16 (a float dtype or a value outside 0 ... 65535 is an
  error), and bands already on the 10 m grid (120x120 pixels of 10 m), which are taken as they are;
* the reference map mapped to the 19 BEN classes (:mod:`geopeft.data.clc`; codes without a class become -1);
* stored at the native 120 pixels; ``INFO.pad_to`` makes the cache reader pad image and mask to 128 on the right
  and bottom *after* augmentation (image by reflection, the same as torch ``F.pad(..., (0, 8, 0, 8), "reflect")``,
  mask with -1), as the study pads on the GPU after its D4 flips; the train statistics see no padded pixels;
* the acquisition date and time from the id, and the centre of the centre pixel (row 60, column 60) of the B02
  raster in EPSG:4326, which is where the study's ``_get_lat_lon`` looks (half a pixel from the geometric centre).

Pixels equal to a band's no-data tag become 0 and are ignored (-1), as are reference-map pixels equal to the map's
no-data tag; the study's scripts reject such patches outright, so on every patch they accept the result is the same.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from geopeft.data.clc import BEN19_CLASSES, clc_to_ben19
from geopeft.data.geotiff import centre_lat_lon, open_geotiff
from geopeft.data.normalisation import BandStats
from geopeft.data.registry import SPLITS_ROOT, DatasetInfo, RawSample, register_dataset, require_files, split_file_in
from geopeft.errors import DataError

#: (file suffix, band name, resolution in metres) of the 12 L2A bands in the order they are stored.
BAND_FILES: tuple[tuple[str, str, int], ...] = (
    ("B01", "COASTAL_AEROSOL", 60),
    ("B02", "BLUE", 10),
    ("B03", "GREEN", 10),
    ("B04", "RED", 10),
    ("B05", "RED_EDGE_1", 20),
    ("B06", "RED_EDGE_2", 20),
    ("B07", "RED_EDGE_3", 20),
    ("B08", "NIR_BROAD", 10),
    ("B8A", "NIR_NARROW", 20),
    ("B09", "WATER_VAPOR", 60),
    ("B11", "SWIR_1", 20),
    ("B12", "SWIR_2", 20),
)
#: The band whose 10 m grid every band is brought onto (the study's ``largest_index = 1``).
GRID_BAND = "B02"

#: The study's per-band mean and std of the scaled values (``MEANS``/``STDS`` of IBM/peft-geofm
#: ``src/peft_geofm/datamodules/reben.py`` at 5fe258d, taken there from ConfigILM's ``BENv2_utils.py``,
#: ``120_nearest``; also in the study's ``reference/normalisation.json``).
STUDY_STATS = BandStats(
    mean={
        "COASTAL_AEROSOL": 361.0767822265625,
        "BLUE": 438.3720703125,
        "GREEN": 614.0556640625,
        "RED": 588.4096069335938,
        "RED_EDGE_1": 942.8433227539062,
        "RED_EDGE_2": 1769.931640625,
        "RED_EDGE_3": 2049.551513671875,
        "NIR_BROAD": 2193.2919921875,
        "NIR_NARROW": 2235.556640625,
        "WATER_VAPOR": 2241.455322265625,
        "SWIR_1": 1568.226806640625,
        "SWIR_2": 997.7324829101562,
    },
    std={
        "COASTAL_AEROSOL": 575.0687255859375,
        "BLUE": 607.02685546875,
        "GREEN": 603.2968139648438,
        "RED": 684.56884765625,
        "RED_EDGE_1": 738.4326782226562,
        "RED_EDGE_2": 1100.4560546875,
        "RED_EDGE_3": 1275.805419921875,
        "NIR_BROAD": 1369.3717041015625,
        "NIR_NARROW": 1356.5440673828125,
        "WATER_VAPOR": 1316.393310546875,
        "SWIR_1": 1070.1612548828125,
        "SWIR_2": 813.5276489257812,
    },
    source="IBM/peft-geofm src/peft_geofm/datamodules/reben.py at 5fe258d (MEANS/STDS)",
)

INFO = DatasetInfo(
    name="reben_7k",
    bands=tuple(name for _, name, _ in BAND_FILES),
    classes=BEN19_CLASSES,
    gsd=10.0,
    scale=1.0,
    regions=("test", "ood", "austria", "ireland"),
    pad_to=128,  # after augmentation, as the study pads on the GPU (see DatasetInfo.pad_to)
    metadata=("time", "location"),
    study_stats=STUDY_STATS,
)

#: Split name -> file name, as in the authors' ``datasets_splits/reBEN/reBEN_7k/``.
SPLIT_FILES: dict[str, str] = {
    "train": "train.txt",
    "val": "val.txt",
    "test": "test.txt",
    "ood": "ood.txt",
    "austria": "Austria.txt",
    "ireland": "Ireland.txt",
}
#: Height and width of a patch at 10 m; the reader pads it to ``INFO.pad_to``.
PATCH_SIZE = 120
S2_DIR = "BigEarthNet-S2"
MAPS_DIR = "Reference_Maps"
#: The dtype the cache stores the bands in; a band file may hold any integer dtype whose values fit it.
IMAGE_DTYPE = np.uint16
MAP_DTYPES = ("uint16", "int16", "uint32", "int32")
#: A BigEarthNet v2.0 Sentinel-2 patch id (the study's ``filename_regex`` without ``.tif``).
ID_PATTERN = re.compile(
    r"^S2[AB]_MSIL2A_(?P<date>\d{8})T(?P<time>\d{6})_N9999_R\d{3}_T(?P<tile>\d{2}[A-Z]{3})_(?P<h>\d{2})_(?P<v>\d{2})$"
)
FIX = (
    "download and unpack BigEarthNet v2.0 (BigEarthNet-S2.tar.zst and Reference_Maps.tar.zst from "
    "bigearth.net) into the raw folder, or remove the id from the split file"
)

#: Per-band mean and std of BigEarthNet v2.0 S2 in DN, "120_nearest" (ConfigILM ``BENv2_utils.py``), which the
#: study normalises with (IBM/peft-geofm ``datamodules/reben.py``). The cache builder computes its own train
#: statistics instead; these are kept for comparison.
REFERENCE_MEAN: dict[str, float] = {
    "COASTAL_AEROSOL": 361.0767822265625,
    "BLUE": 438.3720703125,
    "GREEN": 614.0556640625,
    "RED": 588.4096069335938,
    "RED_EDGE_1": 942.8433227539062,
    "RED_EDGE_2": 1769.931640625,
    "RED_EDGE_3": 2049.551513671875,
    "NIR_BROAD": 2193.2919921875,
    "NIR_NARROW": 2235.556640625,
    "WATER_VAPOR": 2241.455322265625,
    "SWIR_1": 1568.226806640625,
    "SWIR_2": 997.7324829101562,
}
REFERENCE_STD: dict[str, float] = {
    "COASTAL_AEROSOL": 575.0687255859375,
    "BLUE": 607.02685546875,
    "GREEN": 603.2968139648438,
    "RED": 684.56884765625,
    "RED_EDGE_1": 738.4326782226562,
    "RED_EDGE_2": 1100.4560546875,
    "RED_EDGE_3": 1275.805419921875,
    "NIR_BROAD": 1369.3717041015625,
    "NIR_NARROW": 1356.5440673828125,
    "WATER_VAPOR": 1316.393310546875,
    "SWIR_1": 1070.1612548828125,
    "SWIR_2": 813.5276489257812,
}


def tile_folder(patch_id: str) -> str:
    """The folder of a patch's tile: the id without its last two ``_`` parts (``S2A_..._T33UUP``)."""
    return patch_id.rsplit("_", 2)[0]


def band_path(raw: Path, patch_id: str, suffix: str) -> Path:
    """The GeoTIFF of band ``suffix`` (``B01`` ... ``B12``) of ``patch_id``."""
    return raw / S2_DIR / tile_folder(patch_id) / patch_id / f"{patch_id}_{suffix}.tif"


def reference_map_path(raw: Path, patch_id: str) -> Path:
    """The reference map (CLC codes) of ``patch_id``."""
    return raw / MAPS_DIR / tile_folder(patch_id) / patch_id / f"{patch_id}_reference_map.tif"


def sample_files(raw: Path, patch_id: str) -> list[Path]:
    """The 12 band files and the reference map of ``patch_id``, in that order."""
    return [*(band_path(raw, patch_id, suffix) for suffix, _, _ in BAND_FILES), reference_map_path(raw, patch_id)]


def parse_date(patch_id: str, where: str) -> str:
    """The acquisition date and time in a patch id as ISO text (``2017-06-13T10:10:31``).

    Args:
        patch_id: a BigEarthNet v2.0 S2 patch id.
        where: the split file or folder the id came from, named in the error.

    Raises:
        DataError: the id is not a BigEarthNet v2.0 S2 patch id or holds no valid date and time.
    """
    found = ID_PATTERN.match(patch_id)
    if found is None:
        raise DataError(
            f"{where}: {patch_id!r} is not a BigEarthNet v2.0 S2 patch id "
            "(S2[AB]_MSIL2A_<YYYYMMDD>T<HHMMSS>_N9999_R<nnn>_T<tile>_<hh>_<vv>); fix or remove the line"
        )
    try:
        when = dt.datetime.strptime(found.group("date") + found.group("time"), "%Y%m%d%H%M%S")
    except ValueError:
        raise DataError(f"{where}: patch id {patch_id} holds no valid date and time; fix or remove the line") from None
    return when.isoformat()


def _band_factor(path: Path, src: Any, resolution: int) -> int:
    """How many 10 m pixels one pixel of the open band ``src`` spans: ``resolution // 10``, or 1 when already at 10 m.

    Raises:
        DataError: the band is neither ``1200 / resolution`` pixels of ``resolution`` m nor 120 pixels of 10 m.
    """
    t = src.transform
    for metres in dict.fromkeys((resolution, 10)):
        side = PATCH_SIZE * 10 // metres
        if (src.height, src.width) == (side, side) and np.allclose((t.a, -t.e, t.b, t.d), (metres, metres, 0, 0)):
            return metres // 10
    native = PATCH_SIZE * 10 // resolution
    expected = f"{native}x{native} pixels of {resolution} m"
    if resolution != 10:
        expected += f" or, already on the 10 m grid, {PATCH_SIZE}x{PATCH_SIZE} pixels of 10 m"
    raise DataError(
        f"{path}: {src.height}x{src.width} pixels of {t.a:g}x{-t.e:g} m, expected {expected} "
        f"(a {PATCH_SIZE * 10} m patch); {FIX}"
    )


def _read_band(path: Path, resolution: int, grid: Any) -> tuple[npt.NDArray[np.uint16], npt.NDArray[np.bool_]]:
    """One band on the 10 m grid of ``grid`` (B02's open raster) and its no-data pixels.

    The band may be at its native ``resolution`` (upsampled here) or already at 10 m (taken as it is), in any integer
    dtype whose values (no-data pixels aside) fit uint16.

    Raises:
        DataError: not one band, not an integer dtype, values outside uint16, another size or resolution than either
            layout, another CRS or upper-left corner than B02.
    """
    with open_geotiff(path, FIX) as src:
        if src.count != 1:
            raise DataError(f"{path}: {src.count} bands, expected 1 (BigEarthNet stores one band per file); {FIX}")
        dtype = src.dtypes[0]
        if np.dtype(dtype).kind not in "iu":
            raise DataError(f"{path}: dtype {dtype}, expected integer L2A digital numbers (uint16); {FIX}")
        factor = _band_factor(path, src, resolution)
        t, g = src.transform, grid.transform
        if src.crs != grid.crs or not np.allclose((t.c, t.f), (g.c, g.f), rtol=0.0, atol=0.01):
            raise DataError(
                f"{path}: grid ({src.crs}, upper-left corner {t.c:.2f}, {t.f:.2f}) is not aligned with {GRID_BAND}'s "
                f"({grid.crs}, {g.c:.2f}, {g.f:.2f}); the bands of a patch must share CRS and upper-left corner; {FIX}"
            )
        band = src.read(1)
        nodata = src.nodata
    fill = np.zeros(band.shape, dtype=bool) if nodata is None else band == nodata
    values = band[~fill]
    limits = np.iinfo(IMAGE_DTYPE)
    if values.size and (int(values.min()) < limits.min or int(values.max()) > limits.max):
        raise DataError(
            f"{path}: {dtype} values {int(values.min())} ... {int(values.max())} do not fit uint16 "
            f"({limits.min} ... {limits.max}), the L2A digital numbers the cache stores; {FIX}"
        )
    band = np.where(fill, 0, band).astype(IMAGE_DTYPE)
    if factor > 1:
        band = band.repeat(factor, axis=0).repeat(factor, axis=1)
        fill = fill.repeat(factor, axis=0).repeat(factor, axis=1)
    return band, fill


def _read_mask(path: Path) -> npt.NDArray[np.int16]:
    """The reference map as BEN-19 class indices (-1 for codes without a class and for no-data pixels)."""
    with open_geotiff(path, FIX) as src:
        if src.count != 1:
            raise DataError(f"{path}: {src.count} bands, expected 1 band of CORINE Land Cover codes; {FIX}")
        if src.dtypes[0] not in MAP_DTYPES:
            raise DataError(f"{path}: dtype {src.dtypes[0]}, expected integer CLC codes as one of {MAP_DTYPES}; {FIX}")
        if (src.height, src.width) != (PATCH_SIZE, PATCH_SIZE):
            raise DataError(f"{path}: {src.height}x{src.width} pixels, expected {PATCH_SIZE}x{PATCH_SIZE}; {FIX}")
        codes = src.read(1)
        nodata = src.nodata
    tagged = np.zeros(codes.shape, dtype=bool) if nodata is None else codes == nodata
    mask = clc_to_ben19(np.where(tagged, 999, codes), str(path), FIX)
    return mask


@register_dataset("reben_7k")
class ReBEN7kSource:
    """Reads reBEN 7k patches from the BigEarthNet v2.0 folders (registered as ``reben_7k``)."""

    info = INFO
    default_splits_dir = SPLITS_ROOT / "reBEN_7k"

    def split_file(self, split: str, splits_dir: Path) -> Path:
        """The split file of ``split`` (``austria`` is ``Austria.txt``, ``ireland`` is ``Ireland.txt``)."""
        return split_file_in("reben_7k", SPLIT_FILES, split, splits_dir)

    def source_files(self, raw: Path, split: str, ids: Sequence[str]) -> list[Path]:
        """The 12 band files and the reference map of every id.

        Raises:
            DataError: an id is not a patch id, or a file of it is missing; names the first few files, the split and
                how to fix it.
        """
        if not raw.is_dir():
            raise DataError(f"reben_7k: raw folder {raw} does not exist; pass --raw the folder that holds {S2_DIR}/")
        for patch_id in ids:
            parse_date(patch_id, f"reben_7k split {split}")
        return require_files(
            "reben_7k",
            split,
            ((i, p) for i in ids for p in sample_files(raw, i)),
            f"Pass --raw the folder that holds {S2_DIR}/ and {MAPS_DIR}/, or {FIX}",
        )

    def read_sample(self, raw: Path, sample_id: str) -> RawSample:
        """Read one patch: 12 bands on the 10 m grid and the BEN-19 mask, at 120 px, date, lat/lon.

        Raises:
            DataError: a file is missing or unreadable, a band has the wrong count, dtype, values, size, resolution or
                grid,
                the reference map has the wrong count, dtype or size, or holds a code outside the CLC table.
        """
        date = parse_date(sample_id, f"reben_7k sample {sample_id}")
        bands: list[npt.NDArray[np.uint16]] = []
        ignored = np.zeros((PATCH_SIZE, PATCH_SIZE), dtype=bool)
        with open_geotiff(band_path(raw, sample_id, GRID_BAND), FIX) as grid:
            lat, lon = centre_lat_lon(grid)
            for suffix, _, resolution in BAND_FILES:
                band, fill = _read_band(band_path(raw, sample_id, suffix), resolution, grid)
                bands.append(band)
                ignored |= fill
        mask = _read_mask(reference_map_path(raw, sample_id))
        mask[ignored] = -1
        image = np.stack(bands)
        return RawSample(image=image, mask=mask, date=date, lat=lat, lon=lon)
