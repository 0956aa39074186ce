"""CORINE Land Cover level-3 codes and the 19-class BigEarthNet nomenclature (BEN-19) they map to.

BigEarthNet v2.0 reference maps hold one CLC level-3 code per 10 m pixel (``999`` where CLC has no label). The
19-class nomenclature of Sumbul et al. ("BigEarthNet-MM", 2021) merges the 43 CLC classes that occur in
BigEarthNet into 19 classes and drops the ones that cannot be told apart in a 1.2 km Sentinel-2 patch. geopeft uses
the same table as the study's reader (IBM/peft-geofm ``ReBEN.mask_val_to_label``): the dropped codes (122-124,
131-133, 141, 142, 332, 334, 423), glaciers (335, absent from BigEarthNet) and 999 become ``-1`` (ignored); a code
outside the table is an error.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from geopeft.errors import DataError

#: The 19 BEN-19 class names in alphabetical order; the class index is the position (as in the study's reader).
BEN19_CLASSES: tuple[str, ...] = (
    "Agro-forestry areas",
    "Arable land",
    "Beaches, dunes, sands",
    "Broad-leaved forest",
    "Coastal wetlands",
    "Complex cultivation patterns",
    "Coniferous forest",
    "Industrial or commercial units",
    "Inland waters",
    "Inland wetlands",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Marine waters",
    "Mixed forest",
    "Moors, heathland and sclerophyllous vegetation",
    "Natural grassland and sparsely vegetated areas",
    "Pastures",
    "Permanent crops",
    "Transitional woodland, shrub",
    "Urban fabric",
)

#: Every CLC level-3 code (plus 999, unlabelled) -> its BEN-19 class name, or ``None`` when it has none.
CLC_TO_BEN19_NAME: dict[int, str | None] = {
    111: "Urban fabric",  # continuous urban fabric
    112: "Urban fabric",  # discontinuous urban fabric
    121: "Industrial or commercial units",
    122: None,  # road and rail networks and associated land
    123: None,  # port areas
    124: None,  # airports
    131: None,  # mineral extraction sites
    132: None,  # dump sites
    133: None,  # construction sites
    141: None,  # green urban areas
    142: None,  # sport and leisure facilities
    211: "Arable land",  # non-irrigated arable land
    212: "Arable land",  # permanently irrigated land
    213: "Arable land",  # rice fields
    221: "Permanent crops",  # vineyards
    222: "Permanent crops",  # fruit trees and berry plantations
    223: "Permanent crops",  # olive groves
    231: "Pastures",
    241: "Permanent crops",  # annual crops associated with permanent crops
    242: "Complex cultivation patterns",
    243: "Land principally occupied by agriculture, with significant areas of natural vegetation",
    244: "Agro-forestry areas",
    311: "Broad-leaved forest",
    312: "Coniferous forest",
    313: "Mixed forest",
    321: "Natural grassland and sparsely vegetated areas",  # natural grasslands
    322: "Moors, heathland and sclerophyllous vegetation",  # moors and heathland
    323: "Moors, heathland and sclerophyllous vegetation",  # sclerophyllous vegetation
    324: "Transitional woodland, shrub",
    331: "Beaches, dunes, sands",
    332: None,  # bare rocks
    333: "Natural grassland and sparsely vegetated areas",  # sparsely vegetated areas
    334: None,  # burnt areas
    335: None,  # glaciers and perpetual snow
    411: "Inland wetlands",  # inland marshes
    412: "Inland wetlands",  # peat bogs
    421: "Coastal wetlands",  # salt marshes
    422: "Coastal wetlands",  # salines
    423: None,  # intertidal flats
    511: "Inland waters",  # water courses
    512: "Inland waters",  # water bodies
    521: "Marine waters",  # coastal lagoons
    522: "Marine waters",  # estuaries
    523: "Marine waters",  # sea and ocean
    999: None,  # unlabelled (no CLC polygon)
}

#: CLC code -> BEN-19 class index, ``-1`` for codes without a class.
CLC_TO_BEN19: dict[int, int] = {
    code: -1 if name is None else BEN19_CLASSES.index(name) for code, name in CLC_TO_BEN19_NAME.items()
}

#: The codes that map to ``-1``.
UNLABELLED_CODES: tuple[int, ...] = tuple(code for code, index in CLC_TO_BEN19.items() if index < 0)


def clc_to_ben19(codes: npt.NDArray[np.integer], where: str, fix: str) -> npt.NDArray[np.int16]:
    """Map an array of CLC codes to BEN-19 class indices (``-1`` for codes without a class).

    Args:
        codes: CLC level-3 codes of any integer dtype and shape.
        where: the file the codes come from, named in the error.
        fix: what the user can do about a bad code, appended to the error.

    Returns:
        An int16 array of the same shape.

    Raises:
        DataError: a value is not in the CLC table; the message lists the first few such values.
    """
    values, inverse = np.unique(codes, return_inverse=True)
    unknown = [int(v) for v in values if int(v) not in CLC_TO_BEN19]
    if unknown:
        raise DataError(
            f"{where}: value(s) {unknown[:5]} are not CORINE Land Cover level-3 codes (expected 111..523 or 999, "
            f"see geopeft.data.clc.CLC_TO_BEN19_NAME); {fix}"
        )
    lookup = np.array([CLC_TO_BEN19[int(v)] for v in values], dtype=np.int16)
    mapped: npt.NDArray[np.int16] = lookup[inverse.reshape(codes.shape)]
    return mapped
