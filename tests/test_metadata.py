"""Per-sample metadata: the spec field, plan-time checks, cache → batch → backbone inputs, and a cell run with it."""

from __future__ import annotations

import datetime as dt
import math
import textwrap

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from geopeft.cache.build import prepare
from geopeft.cache.metadata import metadata_table, time_fields
from geopeft.cache.reader import open_split
from geopeft.cell import run_cell
from geopeft.data import sen1floods11 as s1f
from geopeft.data.normalisation import resolve
from geopeft.data.registry import get_dataset
from geopeft.data.synthetic import write_sen1floods11
from geopeft.errors import ConfigError, DataError
from geopeft.io import read_json
from geopeft.models.build import build_segmentor
from geopeft.models.clay import CLAY_BANDS
from geopeft.models.metadata import prithvi_inputs
from geopeft.models.prithvi import HLS_BANDS, PrithviViT
from geopeft.models.segmentor import Segmentor, pad_to_multiple
from geopeft.paths import SweepPaths
from geopeft.spec import CellSpec, DecoderSpec, ModelSpec, RunEnv, TrainSpec, TuningSpec
from geopeft.train.loaders import Batched, as_batch
from geopeft.train.preprocess import BatchPreprocess
from hpc.plan.grid import load_grid

COUNTS = {"train": 2, "val": 2, "test": 2, "bolivia": 2}
#: The id of the default spec below at SPEC_VERSION 2; it changes only with a SPEC_VERSION bump.
ID_V2 = "b7bbf951a88c"


def cell(model: ModelSpec, batch_size: int = 4, max_epochs: int = 100) -> CellSpec:
    return CellSpec(
        model=model,
        tuning=TuningSpec("lora", {"r": 8, "alpha": 8}),
        decoder=DecoderSpec("linear"),
        dataset="sen1floods11",
        train=TrainSpec(lr=1e-3, batch_size=batch_size, max_epochs=max_epochs),
    )


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("meta")
    splits = write_sen1floods11(root / "raw", counts=COUNTS, size=32)
    prepare("sen1floods11", root / "raw", root / "cache", splits_dir=splits, progress=False)
    return root / "cache"


# --- the spec field ---------------------------------------------------------------------------------------------


def test_default_id_is_frozen_and_metadata_changes_it():
    plain = cell(ModelSpec("prithvi_tiny"))
    assert plain.cell_id == ID_V2
    assert plain.to_dict()["model"]["metadata"] == []
    with_meta = cell(ModelSpec("prithvi_tiny_tl", metadata=["location", "time"]))
    assert with_meta.model.metadata == ("time", "location")  # canonical order
    assert with_meta.cell_id == cell(ModelSpec("prithvi_tiny_tl", metadata=("time", "location"))).cell_id
    assert with_meta.cell_id != cell(ModelSpec("prithvi_tiny_tl")).cell_id
    assert with_meta.cell_id != cell(ModelSpec("prithvi_tiny_tl", metadata=["time"])).cell_id
    assert CellSpec.from_dict(with_meta.to_dict()) == with_meta
    assert with_meta.to_dict()["model"]["metadata"] == ["time", "location"]
    assert with_meta.slug == "prithvi_tiny_tl+time+location/lora/linear/sen1floods11/s0"


@pytest.mark.parametrize(
    ("value", "match"),
    [("time", "must be a list"), (["time", "time"], "twice"), (["gsd"], r"unknown model.metadata kind 'gsd'")],
)
def test_bad_metadata_values_are_named(value, match):
    with pytest.raises(ConfigError, match=match):
        ModelSpec("prithvi_tiny_tl", metadata=value)


# --- plan-time checks -------------------------------------------------------------------------------------------

GRID = """
name: m
output: {out}
cache: {out}/cache
defaults:
  model: {model}
  train: {{lr: 1.0e-3}}
axes:
  dataset: [{dataset}]
"""


def grid(tmp_path, model: str, dataset: str):
    path = tmp_path / "grid.yaml"
    path.write_text(textwrap.dedent(GRID.format(out=tmp_path, model=model, dataset=dataset)))
    return load_grid(path)


def test_grid_reads_metadata_into_the_model_spec(tmp_path):
    (spec,) = grid(tmp_path, "{name: prithvi_tiny_tl, metadata: [location, time]}", "burn_scars").cells
    assert spec.model.metadata == ("time", "location")


@pytest.mark.parametrize("backbone", ["prithvi_tiny", "prithvi_eo_v2_300", "resnet_tiny"])
def test_backbone_without_encoders_is_refused_at_plan_time(tmp_path, backbone):
    with pytest.raises(ConfigError) as info:
        grid(tmp_path, f"{{name: {backbone}, metadata: [time]}}", "sen1floods11")
    message = str(info.value)
    assert "grid.yaml" in message and f"backbone {backbone} does not encode time" in message
    assert "prithvi_eo_v2_300_tl" in message and "clay_v1_base" in message


@pytest.mark.parametrize(
    ("dataset", "metadata", "records"),
    [("m_sa_crop_type", "[time]", "none"), ("m_cashew_plantation", "[time, location]", "time")],
)
def test_dataset_without_the_metadata_is_refused_at_plan_time(tmp_path, dataset, metadata, records):
    with pytest.raises(ConfigError) as info:
        grid(tmp_path, f"{{name: clay_tiny, metadata: {metadata}}}", dataset)
    message = str(info.value)
    assert "grid.yaml" in message and f"dataset {dataset} does not record" in message
    assert f"(it records: {records})" in message


def test_datasets_record_what_the_study_used():
    assert {n: get_dataset(n).metadata for n in ("sen1floods11", "burn_scars", "reben_7k")} == dict.fromkeys(
        ("sen1floods11", "burn_scars", "reben_7k"), ("time", "location")
    )
    assert get_dataset("m_cashew_plantation").metadata == ("time",)
    assert get_dataset("m_sa_crop_type").metadata == ()


# --- the cache's backbone-neutral fields ------------------------------------------------------------------------


def test_time_fields():
    assert time_fields("2017-06-13T10:10:31") == (2017.0, 163.0, 24.0, 10.0)
    assert time_fields("2021-01-01T00:00:00") == (2021.0, 0.0, 53.0, 0.0)  # ISO week 53 of 2020


def test_missing_values_name_the_file_and_sample(tmp_path):
    path = tmp_path / "train.h5"
    lats, lons = np.array([1.0, np.nan]), np.array([2.0, 3.0])
    args = (["a", "b"], ["2019-01-01T12:00:00", ""], lats, lons, "FIX")
    with pytest.raises(DataError, match=rf"{path}: sample b has no acquisition date.*FIX"):
        metadata_table(path, ("time",), *args)
    with pytest.raises(DataError, match=rf"{path}: sample b has no centre lat/lon.*FIX"):
        metadata_table(path, ("location",), *args)
    table = metadata_table(path, ("time",), ["a"], ["2019-01-01T12:00:00"], lats[:1], lons[:1], "FIX")
    assert set(table) == {"year", "doy", "week", "hour"} and table["hour"].dtype == np.float32


def test_cache_without_dates_fails_when_the_split_is_opened(tmp_path):
    splits = write_sen1floods11(tmp_path / "raw", counts=COUNTS, size=32)
    (tmp_path / "raw" / s1f.METADATA_FILE).unlink()
    prepare("sen1floods11", tmp_path / "raw", tmp_path / "cache", splits_dir=splits, progress=False)
    located = open_split(
        tmp_path / "cache", "sen1floods11", "val", bands=HLS_BANDS, train=False, metadata=["location"]
    )
    assert set(located[0]["metadata"]) == {"lat", "lon", "gsd"}
    with pytest.raises(DataError, match=r"val\.h5: sample \w+ has no acquisition date.*geopeft prepare sen1floods11"):
        open_split(tmp_path / "cache", "sen1floods11", "val", bands=HLS_BANDS, train=False, metadata=["time"])


def _batch(cache, bands, metadata):
    """A batch as a cell's model gets it: the loader's workers, then the study's normalisation on the device."""
    ds = open_split(cache, "sen1floods11", "train", bands=bands, train=False, metadata=metadata)
    (batch,) = list(DataLoader(Batched(ds), batch_size=2, num_workers=2, collate_fn=as_batch))
    prep = BatchPreprocess(resolve("study", "sen1floods11", bands, scale=s1f.INFO.scale, study=s1f.INFO.study_stats))
    return ds, prep(batch)


def _expected_fields(ds, indices):
    out = []
    for i in indices.tolist():
        meta = ds.metadata(i)
        when = dt.datetime.fromisoformat(meta.date)
        out.append((when, meta.lat, meta.lon))
    return out


def test_loader_batch_to_prithvi_tl(cache):
    ds, batch = _batch(cache, HLS_BANDS, ["time", "location"])
    meta = batch["metadata"]
    assert set(meta) == {"year", "doy", "week", "hour", "lat", "lon", "gsd"}
    assert all(v.shape == (2,) and v.dtype == torch.float32 for v in meta.values())
    fields = _expected_fields(ds, batch["index"])
    temporal = torch.tensor([[[w.year, w.timetuple().tm_yday - 1]] for w, _, _ in fields], dtype=torch.float32)
    location = torch.tensor([[lat, lon] for _, lat, lon in fields], dtype=torch.float32)
    assert meta["gsd"].tolist() == [10.0, 10.0]

    torch.manual_seed(0)
    model = build_segmentor(ModelSpec("prithvi_tiny_tl"), DecoderSpec("linear"), num_classes=2, img_size=32).eval()
    hand = {"temporal_coords": temporal, "location_coords": location}
    twin = Segmentor(
        model.backbone, model.neck, model.decoder, patch_size=16, metadata_keys=model.metadata_keys,
        metadata_inputs=lambda _: hand,
    )  # fmt: skip
    with torch.no_grad():
        with_meta = model(batch["image"], meta)
        without = model(batch["image"])
        gsd_only = model(batch["image"], {"gsd": meta["gsd"]})
        by_hand = twin(batch["image"], meta)
    torch.testing.assert_close(with_meta, by_hand, rtol=0, atol=0)
    assert not torch.allclose(with_meta, without)
    torch.testing.assert_close(gsd_only, without, rtol=0, atol=0)  # Prithvi ignores the GSD

    plain = build_segmentor(ModelSpec("prithvi_tiny"), DecoderSpec("linear"), num_classes=2, img_size=32)
    with pytest.raises(ConfigError, match="takes no location_coords, temporal_coords"):
        plain(batch["image"], meta)


def test_loader_batch_to_clay_tlgw_and_gw(cache):
    ds, batch = _batch(cache, CLAY_BANDS, ["time", "location"])
    fields = _expected_fields(ds, batch["index"])
    week = [w.isocalendar().week * 2 * math.pi / 52 for w, _, _ in fields]
    hour = [w.hour * 2 * math.pi / 24 for w, _, _ in fields]
    time = torch.tensor(
        [[math.sin(a), math.cos(a), math.sin(b), math.cos(b)] for a, b in zip(week, hour, strict=True)]
    )
    rad = [(math.radians(lat), math.radians(lon)) for _, lat, lon in fields]
    latlon = torch.tensor([[math.sin(a), math.cos(a), math.sin(b), math.cos(b)] for a, b in rad])

    torch.manual_seed(0)
    model = build_segmentor(ModelSpec("clay_tiny"), DecoderSpec("linear"), num_classes=2, img_size=32).eval()
    inputs = model.metadata_inputs(batch["metadata"])
    assert set(inputs) == {"time", "latlon", "gsd"}
    torch.testing.assert_close(inputs["time"], time.float(), rtol=0, atol=1e-6)
    torch.testing.assert_close(inputs["latlon"], latlon.float(), rtol=0, atol=1e-6)
    image = pad_to_multiple(batch["image"], 8)
    with torch.no_grad():
        tlgw = model.backbone(image, time=time.float(), latlon=latlon.float(), gsd=10.0)[-1]
        gw = model.backbone(image, gsd=10.0)[-1]
        assert not torch.allclose(tlgw, gw) and not torch.allclose(gw, model.backbone(image)[-1])  # default gsd 1
        out_tlgw = model(batch["image"], batch["metadata"])

    # clay_gw, the default: a cell that asks for no metadata still feeds the dataset's GSD.
    _, plain = _batch(cache, CLAY_BANDS, [])
    assert set(plain["metadata"]) == {"gsd"}
    keys = model.metadata_keys
    hand = Segmentor(
        model.backbone, model.neck, model.decoder, patch_size=8, metadata_keys=keys,
        metadata_inputs=lambda _: {"gsd": torch.tensor(10.0)},
    )  # fmt: skip
    with torch.no_grad():
        out_gw = model(plain["image"], plain["metadata"])
        by_hand = hand(plain["image"], plain["metadata"])
        assert not torch.allclose(out_gw, model(plain["image"]))  # without the GSD (1.0) the output differs
    torch.testing.assert_close(out_gw, by_hand, rtol=0, atol=0)
    torch.testing.assert_close(plain["image"], batch["image"])
    assert not torch.allclose(out_tlgw, out_gw)


# --- a cell -----------------------------------------------------------------------------------------------------


def test_cell_feeds_metadata_in_training_and_evaluation(cache, tmp_path, monkeypatch):
    seen = []

    def record(metadata):
        seen.append(sorted(metadata))
        return prithvi_inputs(metadata)

    monkeypatch.setattr(PrithviViT, "metadata_inputs", staticmethod(record))
    spec = cell(ModelSpec("prithvi_tiny_tl", metadata=["time", "location"]), batch_size=2, max_epochs=1)
    paths = SweepPaths(tmp_path / "runs").cell(spec.cell_id)
    run_cell(spec, RunEnv(str(cache), threads=1), paths, log=lambda _: None)
    result = read_json(paths.result)
    assert result["spec"]["model"]["metadata"] == ["time", "location"]
    assert all(r["n"] == 2 for r in result["regions"].values()) and set(result["regions"]) == {"test", "bolivia"}
    # one batch each: train, val, test, bolivia; every one with the time and location fields and the GSD
    assert seen == [["doy", "gsd", "hour", "lat", "lon", "week", "year"]] * 4
