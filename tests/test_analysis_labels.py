"""analysis.labels: every spec name exists in geopeft's registries and every label in the released files."""

from __future__ import annotations

import pandas as pd

import geopeft.models
import geopeft.tuning  # noqa: F401  (registers the tuning methods)
from analysis.labels import (
    CSV_DATASET_ORDER,
    DATASETS,
    DECODERS,
    EPOCH_TABLE_PEFT_ORDER,
    HLS_BANDS,
    MAIN_DECODERS,
    METHODS,
    MODEL_ORDER,
    MODELS,
    OOD_REGIONS,
    PEFT_ORDER,
    bands_label,
    dataset_label,
    decoder_label,
    main_decoder,
    metadata_label,
    method_label,
    model_label,
    options_label,
    paper_dataset_order,
    peft_label,
    setting_label,
)
from analysis.paper import read_released
from geopeft.data.bands import HLS_BANDS as GEOPEFT_HLS
from geopeft.data.registry import dataset_names, get_dataset
from geopeft.models.registry import backbone_names, decoder_names
from geopeft.tuning.registry import tuning_names


def test_spec_names_exist_in_the_registries() -> None:
    assert {m.backbone for m in MODELS} <= set(backbone_names())
    assert set(METHODS) <= set(tuning_names())
    assert set(DATASETS) <= set(dataset_names())
    assert set(MAIN_DECODERS.values()) | {main_decoder("prithvi_eo_v2_300")} <= set(decoder_names())
    for dataset, region in OOD_REGIONS.items():
        assert region in get_dataset(dataset).regions and "test" in get_dataset(dataset).regions
    assert HLS_BANDS == GEOPEFT_HLS


def test_labels_are_the_released_ones() -> None:
    peft, ood, cost = read_released("peft_table"), read_released("ood_table"), read_released("epoch_and_time")
    paper_models = [m for m in MODEL_ORDER if any(m in (x.label, x.six_band_label) for x in MODELS if x.in_paper)]
    assert list(dict.fromkeys(peft.index.get_level_values(0))) == paper_models
    assert set(peft.index.get_level_values(1)) == set(METHODS.values())
    assert tuple(peft.columns.get_level_values(2)[:5]) == CSV_DATASET_ORDER
    assert {dataset_label(d) for d in DATASETS} == set(CSV_DATASET_ORDER)
    assert sorted(dataset_label(d) for d in OOD_REGIONS) == list(ood.columns.get_level_values(2)[:2])
    for table, order in ((peft, PEFT_ORDER), (cost, EPOCH_TABLE_PEFT_ORDER)):
        prithvi = table.loc["Prithvi 2.0 300M"].index
        assert tuple(prithvi) == order


def test_model_label_rules() -> None:
    assert model_label("prithvi_eo_v2_300") == "Prithvi 2.0 300M"
    assert model_label("prithvi_eo_v2_100_tl") == "Prithvi 2.0 100M"
    assert model_label("clay_v1_base", ",".join(reversed(HLS_BANDS))) == "Clay v1 (6 bands)"  # order-insensitive
    assert model_label("clay_v1_base", HLS_BANDS[:5]) == "Clay v1"
    assert model_label("clay_v1_base", None) == "Clay v1"
    assert model_label("decur_resnet50", float("nan")) == "DeCUR"
    assert model_label("prithvi_eo_v2_300", HLS_BANDS) == "Prithvi 2.0 300M"  # no (6 bands) row for Prithvi
    assert model_label("prithvi_tiny_tl", None, "time,location") == "Prithvi tiny TL +time +location"
    assert model_label("my_new_backbone") == "my_new_backbone"
    assert peft_label("lora") == "LoRA" and peft_label("full") == "Full FT" and peft_label("other") == "other"
    assert main_decoder("unet_resnet50") == "unet" and main_decoder("clay_v1_base") == "linear"
    assert (
        bands_label(None) == "default" and bands_label(list(HLS_BANDS)) == "HLS-6" and bands_label("A,B") == "2 bands"
    )
    assert paper_dataset_order(["x", "reBEN_7k", "sen1floods11"]) == ["sen1floods11", "reBEN_7k", "x"]


def test_released_tables_read_back_byte_for_byte(tmp_path) -> None:
    for name in ("peft_table", "ood_table", "ood_table_paper", "epoch_and_time"):
        frame = read_released(name)
        assert isinstance(frame, pd.DataFrame) and frame.index.names == ["model", "peft_type"]
        from analysis.paper import REFERENCE_DIR

        assert frame.to_csv() == (REFERENCE_DIR / f"{name}.csv").read_text()


def test_options_decoders_and_settings_read_as_prose() -> None:
    assert set(DECODERS) <= set(decoder_names())
    assert method_label("lora", '{"alpha": 4, "r": 4}') == "LoRA (r 4, α 4)"  # JSON as the tidy table holds it
    assert method_label("vpt", {"dropout": 0.1, "num_tokens": 4}) == "VPT (tokens 4, dropout 0.1)"
    assert method_label("full", None) == "Full FT" and method_label("full", "{}") == "Full FT"
    assert options_label({"channels": [64, 32], "upsampling": 16}) == "ch. 64/32, upsampling 16"
    assert decoder_label("upernet") == "UperNet" and decoder_label("unet", {"channels": [8, 4]}) == "UNet (ch. 8/4)"
    assert metadata_label("time,location") == "time + location" and metadata_label(None) == "none"
    assert setting_label("lr", 0.00025) == "2.5e-4" and setting_label("lr", 0.001) == "1e-3"
    assert setting_label("bands", ",".join(HLS_BANDS)) == "HLS-6" and setting_label("batch_size", 4) == "4"
    assert setting_label("tuning_options", None) == "default" and setting_label("weights", "none") == "none"
