"""The command line: one-line errors with exit code 2, and the listing commands."""

from typer.testing import CliRunner

from hpc.cli import app

runner = CliRunner()


def test_datasets_lists_every_registered_dataset():
    result = runner.invoke(app, ["datasets"])
    assert result.exit_code == 0, result.output
    assert "sen1floods11: train=train val=val regions=test, bolivia" in result.output
    assert "classes (2): Not water, Water" in result.output


def test_datasets_shows_missing_cache(tmp_path):
    result = runner.invoke(app, ["datasets", "--cache", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "cache: train missing; val missing" in result.output


def test_bad_grid_is_one_line_error(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text("name: x\noutput: out\ncache: c\naxes: {dataset: [nope]}\n")
    result = runner.invoke(app, ["sweep", str(grid)])
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and str(grid) in result.output
    assert "Traceback" not in result.output


def test_rerun_needs_a_selection(tmp_path):
    result = runner.invoke(app, ["rerun", str(tmp_path)])
    assert result.exit_code == 2 and "--failed, --missing or --cells" in result.output


def test_status_of_an_unplanned_sweep(tmp_path):
    result = runner.invoke(app, ["status", str(tmp_path)])
    assert result.exit_code == 2 and "run `geopeft sweep GRID` first" in result.output


def test_synth_unknown_dataset(tmp_path):
    result = runner.invoke(app, ["synth", "nope", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "unknown synthetic dataset 'nope'" in result.output


def test_models_lists_backbones_with_parameter_counts():
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    assert "prithvi_eo_v1_100" in result.output and "86,237,184" in result.output
    assert "decur_resnet50" in result.output and "clay_v1_base" in result.output
