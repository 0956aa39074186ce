"""analysis.history and analysis.curves: metrics.jsonl -> per-epoch frame -> training-curve figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from analysis_fixtures import DEMO_LOSS, synthesise_demo_sweep

from analysis.collect import collect
from analysis.curves import curve_frame, curves_figure, write_curves
from analysis.history import HISTORY_COLUMNS, best_epochs, read_history
from analysis.paper import cell_values
from geopeft.errors import GeopeftError
from geopeft.paths import SweepPaths


def write_log(root: Path, cell_id: str, text: str) -> Path:
    path = SweepPaths(root).cell(cell_id).metrics_log
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def record(epoch: int, loss: float, miou: float = 0.5) -> str:
    return json.dumps({"epoch": epoch, "train_loss": loss + 0.1, "val_loss": loss, "val_miou": miou}) + "\n"


def test_read_history_one_row_per_epoch(tmp_path: Path) -> None:
    write_log(tmp_path, "a", record(1, 0.9) + record(2, 0.7) + record(2, 0.6, 0.75) + '{"epoch": 3, "val_lo')
    write_log(tmp_path, "b", record(1, 0.8))
    history = read_history(tmp_path, ["a", "b", "never_ran"])
    assert tuple(history.columns) == HISTORY_COLUMNS
    assert list(zip(history["cell_id"], history["epoch"], strict=True)) == [("a", 1), ("a", 2), ("b", 1)]
    second = history.iloc[1]
    assert second["val_loss"] == 0.6 and second["val_miou"] == 75.0  # the last line of an epoch wins, in percent
    assert second["train_loss"] == pytest.approx(0.7)


def test_a_damaged_log_raises_naming_file_and_line(tmp_path: Path) -> None:
    path = write_log(tmp_path, "a", record(1, 0.9) + json.dumps({"epoch": 2, "val_miou": 0.5}) + "\n" + record(3, 0.7))
    with pytest.raises(GeopeftError, match=rf"{path}:2: expected a JSON object with epoch, val_loss, val_miou"):
        read_history(tmp_path, ["a"])
    write_log(tmp_path, "a", json.dumps({"epoch": 1.5, "val_loss": 1, "val_miou": 0}) + "\n")
    with pytest.raises(GeopeftError, match="epoch whole"):
        read_history(tmp_path, ["a"])


def test_best_epochs_prefer_the_recorded_one(tmp_path: Path) -> None:
    write_log(tmp_path, "a", record(1, 0.9) + record(2, 0.5) + record(3, 0.6))
    write_log(tmp_path, "b", record(1, 0.9) + record(2, 0.5) + record(3, 0.6))
    write_log(tmp_path, "c", record(1, 0.9) + record(2, 0.5))
    history = read_history(tmp_path, ["a", "b", "c"])
    # a: the result says 3 (its checkpoint); b: no result, least loss; c: a recorded epoch it never logged
    assert best_epochs(history, {"a": 3, "b": None, "c": 7}) == {"a": 3, "b": 2, "c": 2}


@pytest.fixture
def demo(tmp_path: Path) -> tuple[Path, list]:
    root = tmp_path / "sweep"
    root.mkdir()
    return root, synthesise_demo_sweep(root)


def test_curves_are_the_mean_over_seeds_with_a_band_and_the_best_epoch_starred(demo) -> None:
    root, _ = demo
    values = cell_values(collect(root))
    frame = curve_frame(values, read_history(root, values["cell_id"]))
    assert set(frame["model"]) == {"Prithvi tiny"}  # main runs only: no FCN, no metadata
    assert sorted(set(frame["peft_type"])) == ["Full FT", "LoRA"]
    best = best_epochs(frame, dict.fromkeys(frame["cell_id"], 3))
    fig = curves_figure(frame, best)
    loss_ax, miou_ax = fig.axes[:2]
    lines = {line.get_label(): line for line in loss_ax.get_lines()}
    lora = lines["LoRA"]
    assert list(lora.get_xdata()) == [1, 2, 3, 4]
    # seed 1's loss is 0.01 above seed 0's: the mean is 0.005 above the fixture's loss
    assert list(lora.get_ydata()) == pytest.approx([v + 0.005 for v in DEMO_LOSS])
    assert len(loss_ax.collections) == 4  # per method: the band (2 seeds) and the star
    stars = [c for c in loss_ax.collections if len(c.get_offsets()) and c.get_offsets()[0][0] == 3]
    assert len(stars) == 2 and stars[0].get_offsets()[0][1] == pytest.approx(DEMO_LOSS[2] + 0.005)
    miou_lora = next(line for line in miou_ax.get_lines() if line.get_label() == "LoRA")
    assert miou_lora.get_ydata()[0] == pytest.approx(100 * (0.72 + 0.005 - 0.1))
    assert not any(math.isnan(v) for v in miou_lora.get_ydata())


def test_write_curves_one_figure_per_dataset_and_backbone(demo, tmp_path: Path) -> None:
    root, _ = demo
    values = cell_values(collect(root))
    figures, notes = write_curves(root, values, {}, tmp_path / "figures")
    assert [f.path.name for f in figures] == ["curves_sen1floods11_prithvi_tiny.pdf"] and not notes
    assert figures[0].path.with_suffix(".png").is_file() and figures[0].section == "curves"
    assert figures[0].group == "Sen1Floods11" and "mean over 2 seeds" in figures[0].caption
    for cell_id in values["cell_id"]:
        SweepPaths(root).cell(cell_id).metrics_log.unlink()
    figures, notes = write_curves(root, values, {}, tmp_path / "figures")
    assert figures == [] and notes == ["training curves: no cell has a metrics.jsonl"]
