"""The decoder ablation keeps the runs fed with metadata as rows of their own (the paper's 300M-TL and Clay rows)."""

import pandas as pd

from analysis.ablations import ABLATIONS, ablation_summary
from analysis.labels import FULL_FT, TEST_MIOU, dataset_label

DECODER = next(a for a in ABLATIONS if a.name == "decoder")


def test_decoder_table_rows_are_model_metadata_and_decoder():
    rows = []
    for metadata, decoder, seed, miou in [
        (None, "linear", 0, 80.0),
        (None, "linear", 1, 82.0),
        (None, "unet", 0, 85.0),
        ("time,location", "linear", 0, 79.0),
        ("time,location", "unet", 0, 84.0),
    ]:
        rows.append(
            {
                "model": "Prithvi 2.0 300M TL", "peft_type": FULL_FT, "metadata": metadata, "decoder": decoder,
                "seed": seed, "dataset": dataset_label("sen1floods11"), "reused": False, TEST_MIOU: miou,
            }
        )  # fmt: skip
    rows.append({**rows[0], "peft_type": "LoRA", TEST_MIOU: 10.0})  # not full fine-tuning: not in the table
    table = ablation_summary(pd.DataFrame(rows), DECODER)
    assert list(table.index.names) == ["Model", "Metadata", "Decoder"]
    assert list(table.index) == [
        ("Prithvi 2.0 300M TL", "none", "linear"),
        ("Prithvi 2.0 300M TL", "none", "unet"),
        ("Prithvi 2.0 300M TL", "time,location", "linear"),
        ("Prithvi 2.0 300M TL", "time,location", "unet"),
    ]
    means = table.xs("mean", axis=1, level=-1).iloc[:, 0].tolist()
    assert means == [81.0, 85.0, 79.0, 84.0]
