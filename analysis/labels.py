"""The one place that maps geopeft's spec names to the labels of the paper's released tables.

The released CSVs (``analysis/reference/``, copied from IBM/peft-geofm ``data/``) name a row by
``(model, peft_type)`` and a column by ``(metric, stat, dataset)``. A cell names the same things by its
backbone registry name, its input bands, its metadata, its tuning method, its dataset and its region.
Everything that translates between the two lives here, and ``tests/test_analysis_labels.py`` checks
every name against geopeft's registries and every label against the released files.

Rules:
    * A backbone fed only the six HLS bands gets its ``(6 bands)`` label where the paper has one
      (``DeCUR (6 bands)``, ``Clay v1 (6 bands)``); any other band list, or the default, gets the plain one.
    * Burn Scars has only the six HLS bands, so the paper reuses the ``(6 bands)`` runs for the plain rows
      there (:data:`SIX_BAND_ONLY_DATASETS`); :func:`analysis.paper.paper_stats` does the same.
    * Metadata fed to the backbone is appended: ``Prithvi 2.0 300M TL +time +location``.
    * Backbones beyond the paper (tiny test models, 600M) get their own labels, ordered after the paper's;
      an unknown name is its own label.
    * Method and decoder options are written out as the paper does: ``LoRA (r 4, α 4)``, never as JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelLabel:
    """How one backbone is labelled.

    Args:
        backbone: the backbone registry name (``geopeft models``).
        label: the paper's ``model`` string (or ours for backbones beyond the paper).
        six_band_label: the label when fed only :data:`HLS_BANDS`; None where the paper has no such row.
        in_paper: whether the released tables have rows of this backbone.
    """

    backbone: str
    label: str
    six_band_label: str | None = None
    in_paper: bool = True


#: The six HLS bands (geopeft.data.bands.HLS_BANDS, repeated here because analysis reads no data module).
HLS_BANDS = ("BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2")

#: Backbones in the paper's row order, then ours.
MODELS: tuple[ModelLabel, ...] = (
    ModelLabel("unet_resnet50", "UNet (Rand.)"),
    ModelLabel("vit_b16", "ViT (IN-21K)"),
    ModelLabel("decur_resnet50", "DeCUR", "DeCUR (6 bands)"),
    ModelLabel("clay_v1_base", "Clay v1", "Clay v1 (6 bands)"),
    ModelLabel("prithvi_eo_v1_100", "Prithvi 1.0 100M"),
    ModelLabel("prithvi_eo_v2_100_tl", "Prithvi 2.0 100M"),  # the only 2.0 100M release is the TL one
    ModelLabel("prithvi_eo_v2_300", "Prithvi 2.0 300M"),
    ModelLabel("prithvi_eo_v2_300_tl", "Prithvi 2.0 300M TL", in_paper=False),
    ModelLabel("prithvi_eo_v2_600", "Prithvi 2.0 600M", in_paper=False),
    ModelLabel("prithvi_eo_v2_600_tl", "Prithvi 2.0 600M TL", in_paper=False),
    ModelLabel("prithvi_tiny", "Prithvi tiny", in_paper=False),
    ModelLabel("prithvi_tiny_tl", "Prithvi tiny TL", in_paper=False),
    ModelLabel("clay_tiny", "Clay tiny", "Clay tiny (6 bands)", in_paper=False),
    ModelLabel("resnet_tiny", "ResNet tiny", "ResNet tiny (6 bands)", in_paper=False),
)
_BY_BACKBONE = {m.backbone: m for m in MODELS}

#: Row order of every model label (the plain label follows its ``(6 bands)`` twin, as in the CSVs).
MODEL_ORDER: tuple[str, ...] = tuple(
    label for m in MODELS for label in ((m.six_band_label, m.label) if m.six_band_label else (m.label,))
)
SIX_BAND_TWINS: dict[str, str] = {m.label: m.six_band_label for m in MODELS if m.six_band_label}

#: Tuning registry name -> the paper's ``peft_type``, in the row order of ``peft_table.csv``/``ood_table.csv``.
METHODS: dict[str, str] = {
    "linear_probe": "Linear Prob.",
    "vpt": "VPT",
    "lora": "LoRA",
    "vit_adapter": "ViT Adapter",
    "full": "Full FT",
}
PEFT_ORDER: tuple[str, ...] = tuple(METHODS.values())
#: Row order of ``epoch_and_time.csv``.
EPOCH_TABLE_PEFT_ORDER = ("LoRA", "VPT", "ViT Adapter", "Linear Prob.", "Full FT")
FULL_FT = METHODS["full"]

#: Dataset registry name -> (label in the CSVs, label in LaTeX and figures), in the paper's (radar) order.
DATASETS: dict[str, tuple[str, str]] = {
    "sen1floods11": ("sen1floods11", "Sen1Floods11"),
    "burn_scars": ("burn_scars", "Burn Scars"),
    "reben_7k": ("reBEN_7k", "reBEN 7k"),
    "m_cashew_plantation": ("m_cashew_plantation", "m-Cashew"),
    "m_sa_crop_type": ("m_sa_crop_type", "m-SA-Crop"),
}
#: Column order of the datasets in the CSVs (pandas sorted them by label when the authors wrote them).
CSV_DATASET_ORDER: tuple[str, ...] = tuple(sorted(csv for csv, _ in DATASETS.values()))
#: Datasets whose only bands are the six HLS bands: a ``(6 bands)`` run also stands for the plain row.
SIX_BAND_ONLY_DATASETS = ("burn_scars",)

#: The in-distribution region of every dataset, and each dataset's out-of-distribution region in ``ood_table``.
TEST_REGION = "test"
OOD_REGIONS: dict[str, str] = {"sen1floods11": "bolivia", "reben_7k": "ood"}
#: How a region is named in LaTeX headers.
REGION_LABELS: dict[str, str] = {"test": "test", "bolivia": "Bolivia", "ood": "OOD", "austria": "AT", "ireland": "IE"}

#: Metric labels of the CSVs' first header row.
TEST_MIOU = "test mIoU"
OOD_MIOU = "test ood mIoU"
TOTAL_TIME = "total_time"  # minutes of wall time per run
EPOCHS = "metrics.epoch"  # epochs trained (the epoch where training stopped)

#: Decoder registry name -> its name in the paper (§5.4).
DECODERS: dict[str, str] = {"linear": "Linear", "fcn": "FCN", "upernet": "UperNet", "unet": "UNet"}
#: Option names as tables show them, in the order they are written (others follow, underscores as spaces).
OPTION_LABELS: dict[str, str] = {"r": "r", "alpha": "α", "num_tokens": "tokens", "channels": "ch."}
#: Setting columns of the tidy table as table headers show them.
SETTING_LABELS: dict[str, str] = {
    "model": "Model",
    "method": "PEFT",
    "decoder": "Decoder",
    "bands": "Bands",
    "weights": "Weights",
    "metadata": "Metadata",
    "tuning_options": "PEFT options",
    "decoder_options": "Decoder options",
    "lr": "LR",
    "batch_size": "Batch",
    "max_epochs": "Max. epochs",
    "patience": "Patience",
    "lr_patience": "LR patience",
    "lr_factor": "LR factor",
    "weight_decay": "Weight decay",
    "precision": "Precision",
    "strategy": "Strategy",
    "activation_checkpointing": "Act. ckpt.",
}

#: The decoder of the paper's main runs: SMP's U-Net for the UNet baseline, the linear decoder elsewhere.
MAIN_DECODERS: dict[str, str] = {"unet_resnet50": "unet"}
DEFAULT_MAIN_DECODER = "linear"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


def _names(value: Any) -> tuple[str, ...]:
    """A comma-separated list (as in the tidy table) or a sequence as a tuple of names; () when missing."""
    if _missing(value):
        return ()
    if isinstance(value, str):
        return tuple(v for v in value.split(",") if v)
    return tuple(str(v) for v in value)


def model_label(backbone: str, bands: Any = None, metadata: Any = None) -> str:
    """The row label of a backbone fed ``bands`` (names; comma-separated or a sequence) and ``metadata``."""
    known = _BY_BACKBONE.get(backbone)
    label = known.label if known else backbone
    if known and known.six_band_label and set(_names(bands)) == set(HLS_BANDS) and len(_names(bands)) == 6:
        label = known.six_band_label
    return "".join([label, *(f" +{kind}" for kind in _names(metadata))])


def peft_label(method: str) -> str:
    """The ``peft_type`` of a tuning method (an unknown method is its own label)."""
    return METHODS.get(method, method)


def dataset_label(dataset: str) -> str:
    """The dataset as the CSVs name it (an unknown dataset is its own label)."""
    return DATASETS[dataset][0] if dataset in DATASETS else dataset


def dataset_title(dataset_csv_label: str) -> str:
    """The dataset's name in LaTeX and figures, from its CSV label."""
    titles = {csv: title for csv, title in DATASETS.values()}
    return titles.get(dataset_csv_label, dataset_csv_label)


def dataset_from_label(dataset_csv_label: str) -> str:
    """The dataset registry name of a CSV label (an unknown label is its own name)."""
    names = {csv: name for name, (csv, _) in DATASETS.items()}
    return names.get(dataset_csv_label, dataset_csv_label)


def main_decoder(backbone: str) -> str:
    """The decoder of the paper's main (PEFT) experiments for a backbone."""
    return MAIN_DECODERS.get(backbone, DEFAULT_MAIN_DECODER)


def order_key(labels: list[str], order: tuple[str, ...]) -> dict[str, int]:
    """Sort key for labels: position in ``order`` first, then the others in their given order."""
    key = {label: i for i, label in enumerate(order)}
    for label in labels:
        key.setdefault(label, len(key))
    return key


def paper_dataset_order(dataset_csv_labels: list[str]) -> list[str]:
    """Dataset CSV labels in the paper's display order (Sen1Floods11 first), unknown ones after."""
    key = order_key(dataset_csv_labels, tuple(csv for csv, _ in DATASETS.values()))
    return sorted(dict.fromkeys(dataset_csv_labels), key=key.__getitem__)


def bands_label(bands: Any) -> str:
    """A band list as table headers show it: ``default``, ``HLS-6`` or ``<k> bands``."""
    names = _names(bands)
    if not names:
        return "default"
    return "HLS-6" if set(names) == set(HLS_BANDS) and len(names) == 6 else f"{len(names)} bands"


def _options(options: Any) -> Mapping[str, Any]:
    """Options as a mapping: JSON text (as in the tidy table) or a mapping; {} when missing."""
    if _missing(options):
        return {}
    if isinstance(options, str):
        options = json.loads(options)
    return options if isinstance(options, Mapping) else {}


def _option_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "/".join(_option_value(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value).lower() if isinstance(value, bool) else str(value)


def options_label(options: Any) -> str:
    """Options (JSON text or a mapping) as prose: ``{"alpha": 4, "r": 4}`` -> ``r 4, α 4`` (rank first)."""
    opts = _options(options)
    first = list(OPTION_LABELS)
    keys = sorted(opts, key=lambda k: (first.index(k) if k in first else len(first), k))
    return ", ".join(f"{OPTION_LABELS.get(k, k.replace('_', ' '))} {_option_value(opts[k])}" for k in keys)


def method_label(method: str, options: Any = None) -> str:
    """A tuning method with its options, as tables show it: ``LoRA (r 4, α 4)``, or ``LoRA`` without options."""
    text = options_label(options)
    return f"{peft_label(method)} ({text})" if text else peft_label(method)


def decoder_label(decoder: Any, options: Any = None) -> str:
    """A decoder as the paper names it (``UperNet``), with its options when given; unknown names are their own."""
    if _missing(decoder):
        return "none"
    text = options_label(options)
    name = DECODERS.get(str(decoder), str(decoder))
    return f"{name} ({text})" if text else name


def metadata_label(metadata: Any) -> str:
    """Metadata kinds fed to the backbone: ``time,location`` -> ``time + location``; ``none`` without."""
    return " + ".join(_names(metadata)) or "none"


def setting_label(column: str, value: Any) -> str:
    """One setting of a cell (a tidy-table column) as a table cell shows it (``lr`` 0.001 -> ``1e-03``)."""
    if column == "bands":
        return bands_label(value)
    if column == "metadata":
        return metadata_label(value)
    if column == "decoder":
        return decoder_label(value)
    if column == "method":
        return peft_label(str(value))
    if column in ("tuning_options", "decoder_options"):
        return options_label(value) or "default"
    if _missing(value):
        return "default"
    if isinstance(value, float) and column in ("lr", "weight_decay") and 0 < value < 0.01:
        mantissa, exponent = f"{value:.2e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"  # 0.00025 -> 2.5e-4
    return f"{value:g}" if isinstance(value, float) else str(value)
