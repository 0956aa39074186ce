"""geopeft.predict: a trained tiny cell applied to synthetic GeoTIFF scenes, checked against an independent tiling."""

import math
import tracemalloc

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from geopeft.cache.build import prepare
from geopeft.cell import run_cell
from geopeft.data.bands import S2_BANDS
from geopeft.data.synthetic import write_sen1floods11
from geopeft.data.synthetic.fields import smooth_field
from geopeft.data.synthetic.sen1floods11 import SOIL, VEGETATION, WATER
from geopeft.errors import ConfigError, DataError
from geopeft.io import read_json
from geopeft.models.build import build_segmentor
from geopeft.paths import SweepPaths
from geopeft.predict import NODATA_CLASS, PredictOptions, TileGrid, load_cell, predict_scene, weights
from geopeft.predict.blend import Strip
from geopeft.spec import CellSpec, DecoderSpec, ModelSpec, RunEnv, TrainSpec, TuningSpec
from geopeft.train import checkpoint
from geopeft.tuning.registry import apply_tuning, load_trainable_state_dict

CRS = "EPSG:32633"
TRANSFORM = Affine(10.0, 0.0, 500_010.0, 0.0, -10.0, 4_200_000.0)
QUIET = {"progress": False}


def scene_image(height, width, seed=0):
    """13 S2 bands (int16 DN, file order) whose label is known: water where a smooth field is high (water spectrum),
    elsewhere a vegetation/soil mix, plus noise (the synthetic Sen1Floods11 spectra)."""
    rng = np.random.default_rng(seed)
    size = max(height, width)
    field = smooth_field(rng, size, 3 + size // 8)[:height, :width]
    water = field > np.quantile(field, 0.6)
    veg = (1.0 / (1.0 + np.exp(-4.0 * smooth_field(rng, size, 3 + size // 8)[:height, :width]))).astype(np.float32)
    water_s, veg_s, soil_s = (np.asarray(s, np.float32)[:, None, None] for s in (WATER, VEGETATION, SOIL))
    reflectance = np.where(water, water_s, veg_s * veg + soil_s * (1 - veg)) + rng.normal(
        0, 0.008, (13, height, width)
    )
    return np.clip(np.rint(reflectance * 10_000), 0, 10_000).astype(np.int16), water


def write_scene(path, image, names=(), nodata=None, crs=CRS, transform=TRANSFORM):
    profile = {"driver": "GTiff", "height": image.shape[1], "width": image.shape[2], "count": image.shape[0]}
    with rasterio.open(path, "w", dtype=image.dtype, crs=crs, transform=transform, nodata=nodata, **profile) as dst:
        dst.write(image)
        for i, name in enumerate(names, start=1):
            dst.set_band_description(i, name)
    return path


def train(root, model=None, epochs=6):
    if not (root / "cache").exists():
        splits = write_sen1floods11(root / "raw", counts={"train": 16, "val": 4, "test": 4, "bolivia": 2}, size=32)
        prepare("sen1floods11", root / "raw", root / "cache", splits_dir=splits, progress=False)
    spec = CellSpec(
        model=model or ModelSpec("prithvi_tiny"),
        tuning=TuningSpec("full"),
        decoder=DecoderSpec("linear"),
        dataset="sen1floods11",
        train=TrainSpec(lr=1e-3, batch_size=4, max_epochs=epochs),
    )
    paths = SweepPaths(root / "runs").cell(spec.cell_id)
    run_cell(spec, RunEnv(str(root / "cache"), threads=1), paths, log=lambda _: None)
    return paths


@pytest.fixture(scope="module")
def cell_dir(tmp_path_factory):
    return train(tmp_path_factory.mktemp("predict")).dir


@pytest.fixture(scope="module")
def cell(cell_dir):
    return load_cell(cell_dir, cache_root=cell_dir.parents[2] / "cache", weights_root="unused", device="cpu")


def independent_probabilities(cell_dir, image, names, tile, overlap, blend):
    """The blended softmax, computed here without geopeft.predict: the model rebuilt as the cell built it, the
    normalisation of result.json in numpy, each tile run alone, weights from the ramp formula, float64 sums."""
    result = read_json(cell_dir / "result.json")
    spec = CellSpec.from_dict(result["spec"])
    checkpoint.seed_everything(spec.seed)
    model = build_segmentor(spec.model, spec.decoder, num_classes=2, img_size=tile)
    apply_tuning(model, spec.tuning)
    load_trainable_state_dict(model, checkpoint.load(cell_dir / "ckpt" / "best.pt")["model"])
    model.eval()
    norm = result["provenance"]["normalisation"]
    x = image[[names.index(b) for b in norm["bands"]]].astype(np.float32) * np.float32(norm["scale"])
    x = (x - np.float32(norm["mean"])[:, None, None]) / np.float32(norm["std"])[:, None, None]
    _, height, width = x.shape

    def offsets(length):
        out, p = [], 0
        while p + tile < length:
            out.append(p)
            p += tile - overlap
        return [*out, length - tile]

    def ramp(i):
        t = min((min(i, tile - 1 - i) + 0.5) / overlap, 1.0)
        return (1 - math.cos(math.pi * t)) / 2 if blend == "cosine" else t

    w = np.outer(*[np.array([ramp(i) for i in range(tile)])] * 2)
    acc, total = np.zeros((2, height, width)), np.zeros((height, width))
    with torch.no_grad():
        for y in offsets(height):
            for x0 in offsets(width):
                chip = torch.from_numpy(np.ascontiguousarray(x[None, :, y : y + tile, x0 : x0 + tile]))
                logits = model(chip, {"gsd": torch.tensor([10.0])})[0].double().numpy()
                acc[:, y : y + tile, x0 : x0 + tile] += logits * w
                total[y : y + tile, x0 : x0 + tile] += w
    blended = acc / total
    e = np.exp(blended - blended.max(axis=0))
    return e / e.sum(axis=0)


@pytest.mark.parametrize("blend", ["cosine", "linear"])
def test_prediction_is_the_blend_of_the_model_on_each_tile(tmp_path, cell_dir, cell, blend):
    image, water = scene_image(101, 83)  # sizes no tile stride divides
    order = list(np.random.default_rng(1).permutation(len(S2_BANDS)))  # bands found by description, not position
    names = [S2_BANDS[i] for i in order]
    scene = write_scene(tmp_path / "scene.tif", image[order], names=names)
    out, probs = tmp_path / "classes.tif", tmp_path / "probs.tif"
    options = PredictOptions(blend=blend, overlap=10, batch=5, **QUIET)
    report = predict_scene(cell, scene, out, probabilities=probs, options=options)

    expected = independent_probabilities(cell_dir, image[order], names, cell.tile, 10, blend)
    with rasterio.open(out) as c, rasterio.open(probs) as p:
        classes, got = c.read(1), p.read()
        assert (c.crs, c.transform, c.nodata, c.dtypes) == (
            rasterio.crs.CRS.from_string(CRS),
            TRANSFORM,
            255,
            ("uint8",),
        )
        assert (p.crs, p.transform, p.count, p.descriptions) == (c.crs, TRANSFORM, 2, ("Not water", "Water"))
        assert p.tags(1, ns="IMAGE_STRUCTURE")["NBITS"] == "16"  # half floats on disk
        assert c.tags()["geopeft_cell"] == cell_dir.name
    assert (
        report.tiles == report.tiles_run == len(TileGrid(101, 83, 32, 10).rows) * len(TileGrid(101, 83, 32, 10).cols)
    )
    assert np.abs(got - expected).max() < 2e-3  # float16 storage
    assert np.array_equal(got, got.astype(np.float16).astype(np.float32))
    clear = np.abs(expected[1] - 0.5) > 1e-3  # argmax of near-ties may differ by float rounding
    assert clear.mean() > 0.95
    assert np.array_equal(classes[clear], np.argmax(expected, axis=0)[clear])
    # the label is a known function of the bands: a cell that learnt it (and got its bands and scale right) finds it
    assert (classes == water).mean() > 0.85 > max(water.mean(), 1 - water.mean())


def test_nodata_pixels_come_out_as_nodata_and_empty_tiles_are_not_run(tmp_path, cell):
    image, _ = scene_image(96, 64, seed=2)
    image[:, :40, :] = -9999  # every band: whole tiles of nodata
    image[S2_BANDS.index("RED"), 60:70, 20:30] = -9999  # one band the cell reads
    image[S2_BANDS.index("CIRRUS"), 80:90, 40:50] = -9999  # a band it does not read: data
    scene = write_scene(tmp_path / "nodata.tif", image, nodata=-9999)
    out, probs = tmp_path / "classes.tif", tmp_path / "probs.tif"
    report = predict_scene(cell, scene, out, probabilities=probs, options=PredictOptions(batch=3, **QUIET))
    with rasterio.open(out) as c, rasterio.open(probs) as p:
        classes, got = c.read(1), p.read()
    nodata = np.zeros((96, 64), bool)
    nodata[:40], nodata[60:70, 20:30] = True, True
    assert np.array_equal(classes == NODATA_CLASS, nodata) and set(np.unique(classes[~nodata])) <= {0, 1}
    assert np.isnan(got[:, nodata]).all() and not np.isnan(got[:, ~nodata]).any()
    assert report.nodata_pixels == nodata.sum() and report.tiles_run < report.tiles


def test_a_missing_band_is_one_error_naming_file_and_band(tmp_path, cell):
    image, _ = scene_image(40, 40)
    keep = [b for b in S2_BANDS if b != "SWIR_2"]
    scene = write_scene(tmp_path / "no_swir2.tif", image[[S2_BANDS.index(b) for b in keep]], names=keep)
    with pytest.raises(DataError, match=r"no_swir2\.tif: band\(s\) SWIR_2 missing; cell .* reads BLUE") as err:
        predict_scene(cell, scene, tmp_path / "out.tif", options=PredictOptions(**QUIET))
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == [scene]  # nothing written, not even a temporary file


def test_a_truncated_scene_is_a_data_error_and_leaves_no_output(tmp_path, cell):
    image, _ = scene_image(96, 96)
    scene = write_scene(tmp_path / "cut.tif", image)  # no descriptions: the directory stays at the front
    scene.write_bytes(scene.read_bytes()[: scene.stat().st_size // 2])
    with pytest.raises(DataError, match=r"cut\.tif: reading failed, the file is truncated or corrupt"):
        predict_scene(cell, scene, tmp_path / "out.tif", options=PredictOptions(**QUIET))
    assert list(tmp_path.iterdir()) == [scene]


def test_unnamed_bands_need_the_datasets_layout_or_bands(tmp_path, cell):
    image, _ = scene_image(40, 40)
    hls = [S2_BANDS.index(b) for b in cell.bands]
    scene = write_scene(tmp_path / "six.tif", image[hls])  # 6 bands, no descriptions
    with pytest.raises(DataError, match=r"six\.tif: its 6 band\(s\) carry no descriptions .* pass --bands"):
        predict_scene(cell, scene, tmp_path / "a.tif", options=PredictOptions(**QUIET))
    with pytest.raises(DataError, match=r"--bands names 2 band\(s\) but the file has 6"):
        predict_scene(cell, scene, tmp_path / "a.tif", options=PredictOptions(bands=("RED", "BLUE"), **QUIET))
    named = predict_scene(cell, scene, tmp_path / "b.tif", options=PredictOptions(bands=cell.bands, **QUIET))
    full = write_scene(tmp_path / "thirteen.tif", image)  # the dataset's own 13-band layout
    native = predict_scene(cell, full, tmp_path / "c.tif", options=PredictOptions(**QUIET))
    assert named.band_source == "--bands" and native.band_source.startswith("the sen1floods11 file order")
    with rasterio.open(tmp_path / "b.tif") as b, rasterio.open(tmp_path / "c.tif") as c:
        assert np.array_equal(b.read(), c.read())


def test_a_scene_smaller_than_a_tile(tmp_path, cell):
    image, _ = scene_image(20, 27)
    scene = write_scene(tmp_path / "small.tif", image)
    report = predict_scene(cell, scene, tmp_path / "out.tif", options=PredictOptions(**QUIET))
    with rasterio.open(tmp_path / "out.tif") as c:
        assert c.shape == (20, 27) and set(np.unique(c.read(1))) <= {0, 1}
    assert report.tiles == 1


def test_memory_follows_the_strip_not_the_scene(tmp_path, cell):
    """Peak traced allocations grow by far less than any scene-sized array for a scene 8x as high.

    tracemalloc sees numpy's buffers (window reads, the strip, the rows written) and Python objects; torch's
    allocator (one batch of tiles) and GDAL's block cache (bounded by GDAL_CACHEMAX) are not traced. The small growth
    left is CPython's tuple free list filling up during rasterio's reads (at most 2000 tuples per size, freed by a full
    garbage collection), not data.
    """
    peaks = {}
    for height in (512, 4096):
        image, _ = scene_image(height, 128, seed=3)
        scene = write_scene(tmp_path / f"tall{height}.tif", image)
        del image
        tracemalloc.start()
        predict_scene(cell, scene, tmp_path / f"out{height}.tif", options=PredictOptions(batch=4, **QUIET))
        peaks[height] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    logits = 4096 * 128 * 2 * 4  # the tall scene's float32 logits: 4 MiB
    values = 4096 * 128 * len(cell.bands) * 4  # its cell bands as float32: 12 MiB
    assert peaks[4096] - peaks[512] < logits / 8 and peaks[4096] < values / 16, peaks


def test_cell_reading_time_and_location_needs_a_date(tmp_path, cell_dir):
    root = cell_dir.parents[2]
    tl = train(root, ModelSpec("prithvi_tiny_tl", metadata=("time", "location")), epochs=1).dir
    finished = load_cell(tl, cache_root=root / "cache", weights_root="unused", device="cpu")
    image, _ = scene_image(64, 64)
    scene = write_scene(tmp_path / "s.tif", image)
    with pytest.raises(ConfigError, match=r"reads the acquisition time .* --date"):
        predict_scene(finished, scene, tmp_path / "a.tif", options=PredictOptions(**QUIET))
    outputs = []
    for date in ("2019-03-01", "2019-09-01"):
        out = tmp_path / f"{date}.tif"
        predict_scene(
            finished, scene, tmp_path / "c.tif", probabilities=out, options=PredictOptions(date=date, **QUIET)
        )
        with rasterio.open(out) as p:
            outputs.append(p.read())
    assert not np.array_equal(*outputs)  # the date reaches the backbone


def test_tile_grid_and_weights():
    grid = TileGrid(100, 32, 32, 8)
    assert grid.rows == (0, 24, 48, 68) and grid.cols == (0,) and grid.finished_below(1) == 48
    assert TileGrid(10, 10, 32, 8).rows == (0,) and TileGrid(10, 10, 32, 8).tile_height == 10
    for blend in ("cosine", "linear"):
        w = weights(32, 8, blend)
        assert w.shape == (32, 32) and (w > 0).all() and w[8:24, 8:24].min() == 1.0
        assert np.array_equal(w, w.T) and np.array_equal(w, w[::-1, ::-1])
    with pytest.raises(ConfigError, match="--overlap must lie in"):
        TileGrid(64, 64, 32, 32)
    with pytest.raises(ConfigError, match="unknown --blend 'gauss'"):
        weights(32, 8, "gauss")


def test_strip_blends_overlaps_and_moves_down():
    strip = Strip(classes=1, rows=4, width=6)
    strip.add(0, 0, np.full((1, 4, 4), 1.0, np.float32), np.full((4, 4), 1.0, np.float32))
    strip.add(0, 2, np.full((1, 4, 4), 4.0, np.float32), np.full((4, 4), 3.0, np.float32))
    strip.mark(0, 0, np.ones((4, 6), bool))
    rows = strip.take(2)
    assert rows.top == 0 and rows.n == 2 and rows.valid.all()
    assert np.allclose(rows.logits[0, 0], [1, 1, 13 / 4, 13 / 4, 4, 4])
    assert strip.top == 2
    strip.add(2, 0, np.zeros((1, 4, 6), np.float32), np.ones((4, 6), np.float32))  # rows 2..5
    rest = strip.take(6)
    assert np.allclose(rest.logits[0, :2, 2], 13 / 5) and np.allclose(rest.logits[0, 2:], 0)
    assert rest.valid[:2].all() and not rest.valid[2:].any()
