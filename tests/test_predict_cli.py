"""``geopeft predict`` on a planned sweep: --cell and --best (validation mIoU at the best epoch), one-line errors."""

import shutil
import textwrap

import numpy as np
import pytest
import rasterio
from test_predict import TRANSFORM, scene_image, write_scene
from typer.testing import CliRunner

from geopeft.cache.build import prepare
from geopeft.cell import run_cell
from geopeft.data.bands import S2_BANDS
from geopeft.data.synthetic import write_sen1floods11
from geopeft.errors import ConfigError
from geopeft.io import read_json, read_jsonl, write_jsonl
from hpc.cli import app
from hpc.plan.grid import load_grid
from hpc.plan.manifests import plan
from hpc.predict import choose, parse_filters
from hpc.state.manifest import read_manifest, write_manifest

runner = CliRunner()

GRID = """
name: predict
output: {root}/runs
cache: {root}/cache
env: {{threads: 1}}
defaults:
  model: {{name: prithvi_tiny}}
  train: {{lr: 1.0e-3, batch_size: 4, max_epochs: 4}}
axes:
  dataset: [sen1floods11]
  tuning: [{{method: full}}, {{method: lora, options: {{r: 4, alpha: 4}}}}]
  seed: [0, 1]
"""


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A planned sweep of four cells; three are done, lora seed 1 never ran."""
    root = tmp_path_factory.mktemp("sweep")
    splits = write_sen1floods11(root / "raw", counts={"train": 12, "val": 4, "test": 4, "bolivia": 2}, size=32)
    prepare("sen1floods11", root / "raw", root / "cache", splits_dir=splits, progress=False)
    grid = root / "grid.yaml"
    grid.write_text(textwrap.dedent(GRID.format(root=root)))
    manifest = plan(load_grid(grid))
    write_manifest(manifest)
    for entry in manifest.entries:
        if not (entry.spec.tuning.method == "lora" and entry.spec.seed == 1):
            run_cell(entry.spec, manifest.env, manifest.paths.cell(entry.cell_id), log=lambda _: None)
    image, _ = scene_image(70, 90)
    write_scene(root / "scene.tif", image, names=S2_BANDS)
    return grid, read_manifest(root / "runs")


def val_at_best(manifest, entry):
    paths = manifest.paths.cell(entry.cell_id)
    best = read_json(paths.result)["train"]["best_epoch"]
    return next(r["val_miou"] for r in read_jsonl(paths.metrics_log) if r["epoch"] == best)


def done(manifest):
    return [e for e in manifest.entries if manifest.paths.cell(e.cell_id).result.exists()]


def test_best_by_cli_picks_the_best_validation_miou_and_writes_the_scenes_grid(sweep, tmp_path):
    grid, manifest = sweep
    scene = grid.parent / "scene.tif"
    winner = max(done(manifest), key=lambda e: val_at_best(manifest, e))
    out, probs = tmp_path / "best.tif", tmp_path / "probs.tif"
    args = ["predict", str(grid), "--best", "dataset=sen1floods11", "--in", str(scene), "--out", str(out)]
    result = runner.invoke(app, [*args, "--probabilities", str(probs), "--no-progress", "--batch", "3"])
    assert result.exit_code == 0, result.output
    assert f"predicting with cell {winner.cell_id} {winner.spec.slug}: the best validation mIoU at the best epoch" in (
        result.output
    )
    assert "of the 3 done cell(s) matching dataset=sen1floods11\n" in result.output
    assert f"wrote {out}" in result.output and f"wrote {probs}" in result.output
    by_id = tmp_path / "by_id.tif"
    again = runner.invoke(
        app, ["predict", str(grid), "--cell", winner.cell_id[:6], "--in", str(scene), "--out", str(by_id)]
    )
    assert again.exit_code == 0, again.output
    with rasterio.open(scene) as s, rasterio.open(out) as a, rasterio.open(by_id) as b:
        assert (a.crs, a.transform, a.shape) == (s.crs, s.transform, s.shape) and s.transform == TRANSFORM
        assert np.array_equal(a.read(), b.read())
        assert a.tags()["geopeft_cell"] == winner.cell_id


def test_best_ranks_by_validation_falls_back_to_test_and_refuses_ties(sweep, tmp_path):
    _, manifest = sweep
    copy = read_manifest(shutil.copytree(manifest.root, tmp_path / "runs"))
    cells = done(copy)
    ranked = sorted(cells, key=lambda e: val_at_best(copy, e))

    def set_val(entry, value):
        paths = copy.paths.cell(entry.cell_id)
        best = read_json(paths.result)["train"]["best_epoch"]
        records = read_jsonl(paths.metrics_log)
        write_jsonl(paths.metrics_log, [{**r, "val_miou": value} if r["epoch"] == best else r for r in records])

    set_val(ranked[0], 0.99)  # the worst becomes the best: the validation record decides, not the test result
    assert choose(copy, best="model=prithvi_tiny").entry == ranked[0]
    set_val(ranked[1], 0.99)
    with pytest.raises(ConfigError, match=r"tie at validation mIoU at the best epoch 99\.00; pick one with --cell"):
        choose(copy, best="model=prithvi_tiny")
    copy.paths.cell(ranked[2].cell_id).metrics_log.unlink()
    picked = choose(copy, best="model=prithvi_tiny")
    by_test = max(cells, key=lambda e: read_json(copy.paths.cell(e.cell_id).result)["regions"]["test"]["miou"])
    assert picked.entry == by_test
    assert f"the best test mIoU (cell {ranked[2].cell_id} has no validation record in metrics.jsonl)" in picked.reason


def test_best_filters_only_done_cells_and_names_keys(sweep):
    _, manifest = sweep
    lora = choose(manifest, best="method=lora,tuning.options.r=4")  # seed 1 is not done: seed 0 is the only one
    assert (lora.entry.spec.tuning.method, lora.entry.spec.seed) == ("lora", 0) and "of the 1 done cell" in lora.reason
    assert choose(manifest, best="train.lr=0.001,decoder=linear,seed=1").entry.spec.tuning.method == "full"
    assert parse_filters(" model = a , method=b") == {"model": "a", "method": "b"}


NOT_DONE = "lora seed 1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "error: say which cell predicts: --cell ID or --best key=value"),
        (
            ["--best", "color=red"],
            "error: --best: unknown key 'color'; use dataset, decoder, method, model, seed, tuning",
        ),
        (["--best", "method"], "error: --best 'method': 'method' is not key=value"),
        (["--best", "method=vpt"], "cells of {manifest}, none matches; see `geopeft status`"),
        (["--best", "method=lora,seed=1"], "1 match, none is done"),
        (["--cell", "zzz"], "error: {manifest}: no cell with id starting 'zzz'"),
        (["--cell", NOT_DONE], "is not done; see `geopeft status`"),
        (["--cell", "", "--blend", "gauss"], "error: unknown --blend 'gauss'; allowed: cosine, linear"),
        (["--cell", "", "--date", "March"], "error: --date 'March' is not ISO 8601"),
        (["--best", "dataset=sen1floods11", "--missing-band"], "band(s) SWIR_2 missing; cell prithvi_tiny/"),
    ],
)
def test_errors_are_one_line_with_exit_2(sweep, tmp_path, args, message):
    grid, manifest = sweep
    scene = grid.parent / "scene.tif"
    if "--missing-band" in args:
        args = args[:-1]
        image, _ = scene_image(40, 40)
        keep = [b for b in S2_BANDS if b != "SWIR_2"]
        scene = write_scene(tmp_path / "no_swir2.tif", image[[S2_BANDS.index(b) for b in keep]], names=keep)
        message = f"error: {scene}: {message}"
    if NOT_DONE in args:
        lora1 = next(e for e in manifest.entries if e.spec.tuning.method == "lora" and e.spec.seed == 1)
        args = ["--cell", lora1.cell_id]
    if "" in args:  # a done cell: the error comes from the options
        args = [a or done(manifest)[0].cell_id for a in args]
    out = tmp_path / "out.tif"
    result = runner.invoke(app, ["predict", str(grid), "--in", str(scene), "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: ") and message.format(manifest=manifest.paths.manifest) in last, result.output
    assert "Traceback" not in result.output and not out.exists()
