"""``sweeps/paper-tiny.yaml`` end to end: synth -> prepare -> sweep --stage lr -> --stage seeds -> status -> tables.

The cells run in this process through ``geopeft run-cell`` (the array task's debugging twin), not through the local
executor, which starts one Python per cell: about 5 s of imports each on this 2-core machine, for 364 cells (a
quarter of an hour, against under 2 minutes in process). ``geopeft sweep`` runs as it does for a cluster (plans the
grid, writes the manifest, records the search's choices); only ``hpc.sweep.submit_indices`` is replaced, by a
recorder of the indices it is given, and each of those is then run with ``geopeft run-cell``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import hpc.sweep
from geopeft.cache.build import prepare
from geopeft.data.synthetic import get_writer
from hpc.cli import app
from hpc.launch.submit import Submission

pytestmark = pytest.mark.slow

GRID = Path(__file__).resolve().parents[1] / "sweeps" / "paper-tiny.yaml"
COUNTS = {"train": 4, "val": 2, "test": 2}
REGIONS = {"sen1floods11": {"bolivia": 2}, "reben_7k": {"ood": 2, "austria": 1, "ireland": 1}}
SIZES = {"reben_7k": 120}  # BigEarthNet patches are 120 px; 32 px elsewhere
SEARCH_CELLS = 5 * 5 * 2  # prithvi_tiny_tl: 5 methods x 5 datasets x 2 rates
SEARCHED = 5 * 5
runner = CliRunner()

PEFT = {
    "Prithvi tiny": ("Linear Prob.", "VPT", "LoRA", "ViT Adapter", "Full FT"),
    "Prithvi tiny TL": ("Linear Prob.", "VPT", "LoRA", "ViT Adapter", "Full FT"),
    "Clay tiny (6 bands)": ("Linear Prob.", "VPT", "LoRA", "Full FT"),
    "Clay tiny": ("Linear Prob.", "VPT", "LoRA", "Full FT"),
    "ResNet tiny (6 bands)": ("Linear Prob.", "Full FT"),
    "ResNet tiny": ("Linear Prob.", "Full FT"),
}
PEFT_ROWS = [(m, p) for m, methods in PEFT.items() for p in methods]
OOD_ROWS = [(m, p) for m, p in PEFT_ROWS if "(6 bands)" not in m]
EPOCH_ORDER = ("LoRA", "VPT", "ViT Adapter", "Linear Prob.", "Full FT")
EPOCH_ROWS = [(m, p) for m, methods in PEFT.items() for p in EPOCH_ORDER if p in methods]
DATASETS = ["burn_scars", "m_cashew_plantation", "m_sa_crop_type", "reBEN_7k", "sen1floods11"]
TITLES = ["Sen1Floods11", "Burn Scars", "reBEN 7k", "m-Cashew", "m-SA-Crop"]
DECODER_MODELS = ("Prithvi tiny", "Clay tiny (6 bands)", "ResNet tiny (6 bands)")
TABLES = (
    "peft_table",
    "ood_table",
    "epoch_and_time",
    "compare_peft_table",
    "compare_ood_table",
    "average_rank",
    "delta_to_full_ft",
    "iqm",
    "decoder",
    "metadata",
    "memory",
    "time",
    "data_wait",
)


def cli(*args: object) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def synthesise(root: Path) -> None:
    """Write every dataset of the grid into its ``raw`` directory and build the caches in ``data/cache``."""
    raw = yaml.safe_load(GRID.read_text())["raw"]
    for dataset, folder in raw.items():
        counts = {**COUNTS, **REGIONS.get(dataset, {})}
        splits = get_writer(dataset)(root / folder, counts=counts, size=SIZES.get(dataset, 32))
        prepare(dataset, root / folder, root / "data/cache", splits_dir=splits, progress=False)


def stage(name: str, submitted: list[list[int]], sweep_dir: Path) -> tuple[str, list[int]]:
    """``geopeft sweep --stage NAME``, then every index it submitted through ``geopeft run-cell``."""
    out = cli("sweep", GRID, "--stage", name)
    indices = submitted.pop()
    for index in indices:
        cli("run-cell", sweep_dir, index)
    return out, indices


def read(tables: Path, name: str, header: int = 3, levels: int = 2) -> pd.DataFrame:
    return pd.read_csv(tables / f"{name}.csv", header=list(range(header)), index_col=list(range(levels)))


@pytest.fixture
def submitted(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    calls: list[list[int]] = []

    def record(manifest: object, indices: list[int], *args: object, **kwargs: object) -> Submission:
        calls.append(list(indices))
        return Submission()

    monkeypatch.setattr(hpc.sweep, "submit_indices", record)
    return calls


def test_paper_tiny_fills_every_paper_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, submitted: list[list[int]]
) -> None:
    monkeypatch.chdir(tmp_path)  # the grid's output, cache and raw paths are relative to the working directory
    synthesise(tmp_path)
    root = tmp_path / "runs/paper-tiny"

    out, search = stage("lr", submitted, root / "lr-search")
    assert len(search) == SEARCH_CELLS, out
    lr_status = cli("status", GRID, "--stage", "lr", "--wait", "--timeout", "5")
    assert f"{SEARCH_CELLS} cells: {SEARCH_CELLS} done, 0 failed" in lr_status, lr_status
    assert lr_status.count("✓") == SEARCH_CELLS

    out, cells = stage("seeds", submitted, root)
    assert "wait for their learning-rate search" not in out, out
    choices = json.loads((root / "lr_choices.json").read_text())["choices"]
    assert len(choices) == SEARCHED
    assert all(len(c["trials"]) == 2 and c["lr"] in (1e-4, 1e-3) for c in choices.values())
    status = cli("status", GRID, "--wait", "--timeout", "5")
    assert f"{len(cells)} cells: {len(cells)} done, 0 failed, 0 running, 0 pending, 0 missing" in status, status
    assert re.search(r"submitted 0 cells \[\]; skipped \d+ done", cli("sweep", GRID)), "a done cell would rerun"

    written = cli("tables", GRID)
    assert "note:" not in written, written  # every table was written
    tables = root / "tables"
    for name in TABLES:
        assert (tables / f"{name}.csv").is_file() and "\\toprule" in (tables / f"{name}.tex").read_text(), name

    peft = read(tables, "peft_table")
    assert list(peft.index) == PEFT_ROWS
    assert list(peft["test mIoU", "mean"].columns) == DATASETS
    assert peft.notna().all().all(), "every (row, dataset) has a mean and std (plain rows: 6-band runs on Burn Scars)"
    ood = read(tables, "ood_table")
    assert list(ood.index) == OOD_ROWS
    assert list(ood["test ood mIoU", "mean"].columns) == ["reBEN_7k", "sen1floods11"]
    assert ood.notna().all().all()
    epochs = read(tables, "epoch_and_time")
    assert list(epochs.index) == EPOCH_ROWS
    epochs = epochs.sort_index(axis=1)
    assert (epochs["metrics.epoch", "mean"] == 1.0).all().all() and (epochs["total_time", "mean"] > 0).all().all()

    compare = pd.read_csv(tables / "compare_peft_table.csv")
    assert set(zip(compare["model"], compare["peft_type"], strict=True)) == set(PEFT_ROWS)
    assert compare["paper_mean"].isna().all() and compare["ours_mean"].notna().all()  # no released tiny rows
    ranks = pd.read_csv(tables / "average_rank.csv")
    assert list(zip(ranks["model"], ranks["peft_type"], strict=True)) == PEFT_ROWS
    assert (ranks["datasets"] == 5).all()
    deltas = pd.read_csv(tables / "delta_to_full_ft.csv", index_col=[0, 1])
    assert list(deltas.index) == [r for r in PEFT_ROWS if r[1] != "Full FT"] and deltas.notna().all().all()
    iqm = pd.read_csv(tables / "iqm.csv")
    assert list(zip(iqm["model"], iqm["peft_type"], strict=True)) == PEFT_ROWS
    assert iqm[["iqm", "ci_low", "ci_high"]].notna().all().all()

    decoder = read(tables, "decoder", header=2, levels=3)
    for model in DECODER_MODELS:
        rows = decoder.xs((model, "none"), level=(0, 1))
        assert list(rows.index) == ["linear", "fcn", "upernet", "unet"], model
        assert rows.notna().all().all(), model  # every decoder on every dataset
    assert list(decoder.columns.get_level_values(0).unique()) == TITLES
    metadata = read(tables, "metadata", header=2)
    with_metadata = {(m, meta) for m, meta in metadata.index if meta != "none"}
    assert with_metadata == {
        ("Prithvi tiny TL", "time,location"),
        ("Prithvi tiny TL", "time"),
        ("Clay tiny", "time,location"),
        ("Clay tiny", "time"),
        ("Clay tiny (6 bands)", "time,location"),
    }
    # On CPU a cell's peak memory is its process's peak RSS: in process, the test's high-water mark so far.
    for name in ("memory", "time"):
        table = read(tables, name, header=2)
        assert list(table.index) == PEFT_ROWS, name
        means = table.xs("mean", axis=1, level=1)
        assert list(means.columns) == TITLES and (means.fillna(1.0) > 0).all().all(), name
        # the all-band rows have no run of their own on Burn Scars (the paper tables reuse the 6-band runs)
        no_run = [m in ("Clay tiny", "ResNet tiny") for m in means.index.get_level_values(0)]
        assert means.isna().to_numpy().tolist() == [[False, nan, False, False, False] for nan in no_run], name
