from __future__ import annotations

import pytest

from geopeft.data.bands import HLS_BANDS, S2_BANDS, STUDY_WAVELENGTHS_UM, WAVELENGTHS_UM, select_indices
from geopeft.errors import ConfigError


def test_s2_bands_in_file_order_with_increasing_wavelengths():
    assert len(S2_BANDS) == 13
    assert S2_BANDS[:4] == ("COASTAL_AEROSOL", "BLUE", "GREEN", "RED")
    assert S2_BANDS[-2:] == ("SWIR_1", "SWIR_2")
    assert set(WAVELENGTHS_UM) == set(S2_BANDS)
    waves = [WAVELENGTHS_UM[b] for b in S2_BANDS]
    assert waves == sorted(waves)


def test_the_studys_wavelengths_differ_from_esa_in_three_bands():
    assert list(STUDY_WAVELENGTHS_UM) == list(S2_BANDS)
    differ = {
        b: (WAVELENGTHS_UM[b], STUDY_WAVELENGTHS_UM[b])
        for b in S2_BANDS
        if WAVELENGTHS_UM[b] != STUDY_WAVELENGTHS_UM[b]
    }
    assert differ == {"BLUE": (0.490, 0.493), "RED_EDGE_1": (0.705, 0.704), "WATER_VAPOR": (0.945, 0.94)}


def test_hls_bands_are_s2_bands():
    assert HLS_BANDS == ("BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2")
    assert select_indices(S2_BANDS, HLS_BANDS, "test") == [1, 2, 3, 8, 11, 12]


def test_select_indices_keeps_the_wanted_order():
    assert select_indices(("A", "B", "C"), ("C", "A"), "x") == [2, 0]


def test_select_indices_unknown_band_names_band_where_and_available():
    with pytest.raises(ConfigError) as info:
        select_indices(S2_BANDS, ("BLUE", "THERMAL"), "cell abc")
    message = str(info.value)
    assert "'THERMAL'" in message and "cell abc" in message and "COASTAL_AEROSOL" in message and "SWIR_2" in message
