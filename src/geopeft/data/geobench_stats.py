"""The study's per-band statistics of the two GEO-Bench datasets (used by :mod:`geopeft.data.geobench`).

In a module of their own only to keep :mod:`geopeft.data.geobench` within the house limit of 400 lines.
"""

from __future__ import annotations

from geopeft.data.normalisation import BandStats

#: The study's per-band mean and std of the scaled values (``MEANS``/``STDS`` of IBM/peft-geofm
#: ``src/peft_geofm/datamodules/m_cashew_plantation.py`` at 5fe258d; also in the
#: study's ``reference/normalisation.json``).
CASHEW_STATS = BandStats(
    mean={
        "COASTAL_AEROSOL": 520.1185302734375,
        "BLUE": 634.7583618164062,
        "GREEN": 892.461181640625,
        "RED": 880.7075805664062,
        "RED_EDGE_1": 1380.6409912109375,
        "RED_EDGE_2": 2233.432373046875,
        "RED_EDGE_3": 2549.379638671875,
        "NIR_BROAD": 2643.248046875,
        "NIR_NARROW": 2643.531982421875,
        "WATER_VAPOR": 2852.87451171875,
        "SWIR_1": 2463.933349609375,
        "SWIR_2": 1600.9207763671875,
        "CLOUD_PROBABILITY": 0.010281000286340714,
    },
    std={
        "COASTAL_AEROSOL": 204.2023468017578,
        "BLUE": 227.25344848632812,
        "GREEN": 222.32545471191406,
        "RED": 350.47235107421875,
        "RED_EDGE_1": 280.6436767578125,
        "RED_EDGE_2": 373.7521057128906,
        "RED_EDGE_3": 449.9236145019531,
        "NIR_BROAD": 414.6498107910156,
        "NIR_NARROW": 415.1019592285156,
        "WATER_VAPOR": 413.8980407714844,
        "SWIR_1": 494.97430419921875,
        "SWIR_2": 514.4229736328125,
        "CLOUD_PROBABILITY": 0.3447800576686859,
    },
    source="IBM/peft-geofm src/peft_geofm/datamodules/m_cashew_plantation.py at 5fe258d (MEANS/STDS)",
)

#: The study's per-band mean and std of the scaled values (``MEANS``/``STDS`` of IBM/peft-geofm
#: ``src/peft_geofm/datamodules/m_sa_crop_type.py`` at 5fe258d; also in the
#: study's ``reference/normalisation.json``).
#: CLOUD_PROBABILITY is published with mean 0 and std 0: a cell that reads it is refused.
SA_CROP_STATS = BandStats(
    mean={
        "COASTAL_AEROSOL": 12.739611,
        "BLUE": 16.526744,
        "GREEN": 26.636417,
        "RED": 36.696639,
        "RED_EDGE_1": 46.388679,
        "RED_EDGE_2": 58.281453,
        "RED_EDGE_3": 63.575819,
        "NIR_BROAD": 68.1836,
        "NIR_NARROW": 69.142591,
        "WATER_VAPOR": 69.904566,
        "SWIR_1": 83.626811,
        "SWIR_2": 65.767679,
        "CLOUD_PROBABILITY": 0.0,
    },
    std={
        "COASTAL_AEROSOL": 7.492811526301659,
        "BLUE": 9.329547939662671,
        "GREEN": 12.674537246073758,
        "RED": 19.421922023931593,
        "RED_EDGE_1": 19.487411106531287,
        "RED_EDGE_2": 19.959174612412983,
        "RED_EDGE_3": 21.53805760692545,
        "NIR_BROAD": 23.05077775347288,
        "NIR_NARROW": 22.329695761624677,
        "WATER_VAPOR": 21.877766438821954,
        "SWIR_1": 28.14418826277069,
        "SWIR_2": 27.2346215312965,
        "CLOUD_PROBABILITY": 0.0,
    },
    source="IBM/peft-geofm src/peft_geofm/datamodules/m_sa_crop_type.py at 5fe258d (MEANS/STDS)",
)
