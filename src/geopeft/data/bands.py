"""Band names, their order in the files, and their central wavelengths.

Names follow TerraTorch's ``HLSBands`` enum, so that a backbone's ``bands`` setting (``[BLUE, GREEN, ...]``)
selects the same channels here as in the reference code.
"""

from __future__ import annotations

from collections.abc import Sequence

from geopeft.errors import ConfigError

#: The 13 Sentinel-2 L1C bands in the order of a Sen1Floods11 ``S2Hand`` file (B1..B8, B8A, B9..B12).
S2_BANDS: tuple[str, ...] = (
    "COASTAL_AEROSOL",
    "BLUE",
    "GREEN",
    "RED",
    "RED_EDGE_1",
    "RED_EDGE_2",
    "RED_EDGE_3",
    "NIR_BROAD",
    "NIR_NARROW",
    "WATER_VAPOR",
    "CIRRUS",
    "SWIR_1",
    "SWIR_2",
)

#: Prithvi's default input bands (the six HLS bands it was pretrained on).
HLS_BANDS: tuple[str, ...] = ("BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2")

#: Central wavelength in micrometres of each Sentinel-2 band (ESA S2 MSI, S2A values rounded to 1 nm).
WAVELENGTHS_UM: dict[str, float] = {
    "COASTAL_AEROSOL": 0.443,
    "BLUE": 0.490,
    "GREEN": 0.560,
    "RED": 0.665,
    "RED_EDGE_1": 0.705,
    "RED_EDGE_2": 0.740,
    "RED_EDGE_3": 0.783,
    "NIR_BROAD": 0.842,
    "NIR_NARROW": 0.865,
    "WATER_VAPOR": 0.945,
    "CIRRUS": 1.375,
    "SWIR_1": 1.610,
    "SWIR_2": 2.190,
}

#: Central wavelength in micrometres of each band as the study gives them to Clay: peft-geofm's ``WAVELENGTHS``
#: table (IBM/peft-geofm ``src/peft_geofm/datasets/utils.py``, commit 5fe258d), passed through its ``clay_gw`` /
#: ``clay_tlgw`` metadata. It differs from :data:`WAVELENGTHS_UM` in BLUE, RED_EDGE_1 and WATER_VAPOR. Clay's
#: generated patch kernel depends on these numbers, so :mod:`geopeft.models.clay` reads this table; the cache keeps
#: recording the ESA values as metadata.
STUDY_WAVELENGTHS_UM: dict[str, float] = {
    "COASTAL_AEROSOL": 0.443,
    "BLUE": 0.493,
    "GREEN": 0.56,
    "RED": 0.665,
    "RED_EDGE_1": 0.704,
    "RED_EDGE_2": 0.74,
    "RED_EDGE_3": 0.783,
    "NIR_BROAD": 0.842,
    "NIR_NARROW": 0.865,
    "WATER_VAPOR": 0.94,
    "CIRRUS": 1.375,
    "SWIR_1": 1.61,
    "SWIR_2": 2.19,
}


def select_indices(available: Sequence[str], wanted: Sequence[str], where: str) -> list[int]:
    """Positions of the ``wanted`` bands in ``available``, in the order of ``wanted``.

    Args:
        available: band names in file (or cache) order.
        wanted: band names to select; repeats are allowed and select the same channel again.
        where: what asked for the bands (a cell, a cache file), named in the error.

    Returns:
        One index into ``available`` per entry of ``wanted``.

    Raises:
        ConfigError: a wanted band is not available; the message names it, ``where`` and the available bands.
    """
    position = {name: i for i, name in enumerate(available)}
    missing = [name for name in wanted if name not in position]
    if missing:
        raise ConfigError(
            f"{where}: band(s) {', '.join(repr(m) for m in missing)} not available; "
            f"available bands: {', '.join(available)}"
        )
    return [position[name] for name in wanted]
