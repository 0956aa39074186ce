"""The tables beyond the released CSVs: decoder and metadata ablations, memory and time per epoch.

Each function takes :func:`analysis.paper.cell_values` and returns a summary in the shape of
:func:`analysis.stats.summarize` (rows, then ``(Dataset, stat)`` columns), labelled for LaTeX, so that
:func:`analysis.latex.latex_table` renders it and its ``to_csv()`` is its numeric twin.

* decoder: test mIoU of full fine-tuning per model, metadata fed and decoder (the paper's decoder comparison,
  §5.4, whose backbones include Prithvi 2.0 300M-TL with time+location and Clay with its metadata);
* metadata: test mIoU of full fine-tuning with the main decoder, per model and metadata fed (§5.5);
* memory: peak accelerator memory (GB) of the main runs, per model and method (§5.6);
* time: seconds per training epoch of the main runs, per model and method (§5.6);
* data_wait: the share of training step time spent waiting for the data loader, per model and method (ours: it
  says whether a time or throughput figure measured the model or the file system).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from analysis.labels import FULL_FT, TEST_MIOU, dataset_title, main_decoder, paper_dataset_order
from analysis.paper import DATA_WAIT, EPOCH_TIME, MEMORY_GB
from analysis.stats import aggregate, check_seeds

#: How the columns of :func:`analysis.paper.cell_values` are named in the LaTeX headers.
HEADERS = {"model": "Model", "peft_type": "PEFT", "decoder": "Decoder", "metadata": "Metadata"}


@dataclass(frozen=True)
class Ablation:
    """One extra table.

    Args:
        name: file stem.
        rows: columns of :func:`~analysis.paper.cell_values` that make a row.
        measure: the measure tabulated.
        select: which cells the table holds.
        caption: the LaTeX caption.
        decimals: printed decimals.
        higher_is_better: False when the least is best.
    """

    name: str
    rows: tuple[str, ...]
    measure: str
    select: Callable[[pd.DataFrame], pd.Series]
    caption: str
    decimals: int = 2
    higher_is_better: bool = True


def _full_ft(values: pd.DataFrame) -> pd.Series:
    return values["peft_type"] == FULL_FT


def _full_ft_main_decoder(values: pd.DataFrame) -> pd.Series:
    main = pd.Series([d == main_decoder(str(b)) for b, d in zip(values["backbone"], values["decoder"], strict=True)])
    return (values["peft_type"] == FULL_FT) & main.to_numpy()


def _main(values: pd.DataFrame) -> pd.Series:
    return values["main"].astype(bool)


_MARKS = r"Best mean per column in bold, second underlined; \textemdash{}: no result."
_LEAST = r"Least per column in bold, second underlined; \textemdash{}: no result."
ABLATIONS = (
    Ablation(
        "decoder",
        ("model", "metadata", "decoder"),
        TEST_MIOU,
        _full_ft,
        r"Decoders: test mIoU (\%) of full fine-tuning, mean $\pm$ std over seeds. " + _MARKS,
    ),
    Ablation(
        "metadata",
        ("model", "metadata"),
        TEST_MIOU,
        _full_ft_main_decoder,
        r"Metadata fed to the backbone: test mIoU (\%) of full fine-tuning, mean $\pm$ std over seeds. " + _MARKS,
    ),
    Ablation(
        "memory",
        ("model", "peft_type"),
        MEMORY_GB,
        _main,
        r"Peak accelerator memory (GB; peak RSS on CPU) of training, mean $\pm$ std over seeds. " + _LEAST,
        higher_is_better=False,
    ),
    Ablation(
        "time",
        ("model", "peft_type"),
        EPOCH_TIME,
        _main,
        r"Seconds per training epoch (validation included), mean $\pm$ std over seeds. " + _LEAST,
        decimals=1,
        higher_is_better=False,
    ),
    Ablation(
        "data_wait",
        ("model", "peft_type"),
        DATA_WAIT,
        _main,
        r"Share of training step time spent waiting for the data loader (\%), mean $\pm$ std over seeds. " + _LEAST,
        decimals=1,
        higher_is_better=False,
    ),
)


def ablation_summary(values: pd.DataFrame, ablation: Ablation) -> pd.DataFrame:
    """The summary of one :class:`Ablation` (rows in the paper's order; datasets in the paper's order).

    Raises:
        GeopeftError: two cells of one row share a seed on a dataset (they differ in another setting).
    """
    sub = values[ablation.select(values).to_numpy() & ~values["reused"].to_numpy()].copy()
    sub["metadata"] = sub["metadata"].fillna("none")
    order = {d: i for i, d in enumerate(paper_dataset_order(list(sub["dataset"])))}
    sub = sub.iloc[sorted(range(len(sub)), key=lambda i: order[sub["dataset"].iloc[i]])]
    sub["Dataset"] = [dataset_title(d) for d in sub["dataset"]]
    sub = sub.rename(columns={c: HEADERS[c] for c in ablation.rows})
    rows = [HEADERS[c] for c in ablation.rows]
    check_seeds(sub, rows, ["Dataset"])
    return aggregate(sub, ablation.measure, rows, ["Dataset"])
