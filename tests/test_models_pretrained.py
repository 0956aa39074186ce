"""The weights catalogue: plan-time checks, loading through build_segmentor, hash sidecars, provenance."""

from __future__ import annotations

import hashlib
import re

import pytest
import torch
from weights_fixtures import TINY_WEIGHTS, official_shapes, register_tiny_weights, write_tiny_weights

from geopeft.data.bands import HLS_BANDS, S2_BANDS
from geopeft.errors import ConfigError, WeightsError
from geopeft.models.build import build_segmentor, validate
from geopeft.models.registry import create_backbone, get_backbone
from geopeft.models.weights.integrity import read_sidecar, sidecar_path
from geopeft.models.weights.pretrained import (
    PretrainedWeights,
    describe_weights,
    get_weights,
    register_weights,
    weights_names,
)
from geopeft.models.weights.prithvi import checkpoint_filter_fn, load_prithvi_weights
from geopeft.spec import DecoderSpec, ModelSpec

register_tiny_weights()

#: Official Prithvi entry -> the checkpoint geometry of architectures.md §1.2 (width, depth, patch, TL).
PRITHVI = {
    "prithvi_eo_v1_100": (768, 12, 16, False),
    "prithvi_eo_v2_100_tl": (768, 12, 16, True),
    "prithvi_eo_v2_300": (1024, 24, 16, False),
    "prithvi_eo_v2_300_tl": (1024, 24, 16, True),
    "prithvi_eo_v2_600": (1280, 32, 14, False),
    "prithvi_eo_v2_600_tl": (1280, 32, 14, True),
}


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _build(name: str, weights: str, root, bands: tuple[str, ...] = ()):
    model = ModelSpec(name, bands=bands, weights=weights)
    return build_segmentor(model, DecoderSpec("linear"), num_classes=2, img_size=64, weights_root=root)


def test_catalogue_lists_the_official_files_with_pinned_urls_and_no_invented_hashes():
    assert set(PRITHVI) | {"clay_v1_base", "decur_resnet50"} <= set(weights_names())
    v2 = get_weights("prithvi_eo_v2_300_tl")
    assert v2.filename == "Prithvi_EO_V2_300M_TL.pt"
    assert (
        v2.url
        == "https://huggingface.co/ibm-nasa-geospatial/Prithvi-EO-2.0-300M-TL/resolve/main/Prithvi_EO_V2_300M_TL.pt"
    )
    clay = get_weights("clay_v1_base")
    assert clay.url == "https://huggingface.co/made-with-clay/Clay-legacy/resolve/main/v1/clay-v1-base.ckpt"
    decur = get_weights("decur_resnet50")
    assert "/resolve/eba7ae5945d482a4319be046d34b552db5dd9950/" in decur.url
    assert decur.url.endswith("/" + decur.filename)
    for name in [*PRITHVI, "clay_v1_base", "decur_resnet50"]:
        entry = get_weights(name)
        assert entry.sha256 is None and entry.backbones == (name,)
        get_backbone(name)
    assert weights_names("prithvi_eo_v2_600") == ["prithvi_eo_v2_600"]
    assert weights_names("prithvi_tiny") == ["test_prithvi_tiny"]


@pytest.mark.parametrize("name", list(PRITHVI))
def test_each_prithvi_entry_fits_its_backbone_key_for_key(name):
    # The official layout of the entry's file, filtered as the loader does, against the backbone built on meta.
    dim, depth, patch, tl = PRITHVI[name]
    v1 = name == "prithvi_eo_v1_100"
    shapes = official_shapes(dim=dim, depth=depth, patch=patch, frames=3 if v1 else 4, v2=not v1, tl=tl)
    with torch.device("meta"):
        model = create_backbone(name, bands=HLS_BANDS, img_size=224)
        state = {k: torch.empty(s) for k, s in shapes.items()}
    filtered = checkpoint_filter_fn(state, model)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in filtered.items()} == own


def test_prithvi_weights_load_through_build_segmentor_with_band_selection(tmp_path):
    states = write_tiny_weights(tmp_path)
    bands = ("RED", "BLUE", "SWIR_2", "COASTAL_AEROSOL")
    segmentor = _build("prithvi_tiny", "test_prithvi_tiny", tmp_path, bands)
    own = segmentor.backbone.state_dict()
    state = states["test_prithvi_tiny"]
    for key in ("cls_token", "blocks.3.attn.qkv.weight", "blocks.0.mlp.fc2.bias", "norm.weight"):
        torch.testing.assert_close(own[key], state[f"encoder.{key}"], rtol=0, atol=0)
    kernel = state["encoder.patch_embed.proj.weight"]
    for i, band in enumerate(bands[:3]):
        torch.testing.assert_close(own["patch_embed.proj.weight"][:, i], kernel[:, HLS_BANDS.index(band)])
    assert not any(torch.equal(own["patch_embed.proj.weight"][:, 3], kernel[:, j]) for j in range(6))
    path = tmp_path / TINY_WEIGHTS["test_prithvi_tiny"][1]
    assert read_sidecar(path) == _sha(path)  # recorded after the first successful load


def test_clay_and_decur_weights_load_through_build_segmentor(tmp_path):
    states = write_tiny_weights(tmp_path)
    clay = _build("clay_tiny", "test_clay_tiny", tmp_path, HLS_BANDS).backbone.state_dict()
    assert clay, "the Clay backbone has tensors"
    for key, value in clay.items():
        torch.testing.assert_close(value, states["test_clay_tiny"][f"model.encoder.{key}"], rtol=0, atol=0)
    bands = ("BLUE", "NIR_NARROW", "SWIR_1")
    resnet = _build("resnet_tiny", "test_resnet_tiny", tmp_path, bands).backbone.state_dict()
    state = states["test_resnet_tiny"]
    for key, value in resnet.items():
        if key == "conv1.weight":
            expected = state[key][:, [S2_BANDS.index(b) for b in bands]]
            torch.testing.assert_close(value, expected, rtol=0, atol=0)
        elif not key.endswith("num_batches_tracked"):
            torch.testing.assert_close(value, state[key], rtol=0, atol=0, msg=key)


def test_missing_file_names_the_file_and_the_fetch_command(tmp_path):
    with pytest.raises(WeightsError) as info:
        _build("prithvi_tiny", "test_prithvi_tiny", tmp_path)
    message = str(info.value)
    assert str(tmp_path / "tiny_prithvi_v2.pt") in message
    assert f"geopeft weights fetch test_prithvi_tiny --root {tmp_path}" in message


def test_weights_without_a_root_and_random_init_without_io(tmp_path):
    with pytest.raises(ConfigError, match="no weights directory was given; pass weights_root"):
        build_segmentor(
            ModelSpec("prithvi_tiny", weights="test_prithvi_tiny"), DecoderSpec("linear"), num_classes=2, img_size=64
        )
    _build("prithvi_tiny", "none", tmp_path / "nowhere")  # "none" never looks at the root


def test_wrong_backbone_or_unknown_name_is_a_config_error_at_plan_time():
    spec = ModelSpec("clay_v1_base", weights="prithvi_eo_v1_100")
    message = (
        "sweeps/x.yaml: model.weights 'prithvi_eo_v1_100' (Prithvi_EO_V1_100M.pt) is made for prithvi_eo_v1_100, "
        "not backbone clay_v1_base; allowed for clay_v1_base: none, clay_v1_base"
    )
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(spec, DecoderSpec("linear"), where="sweeps/x.yaml")
    with pytest.raises(ConfigError, match=r"unknown model.weights 'prithvi_v9'; allowed: none, prithvi_eo_v2_300$"):
        validate(ModelSpec("prithvi_eo_v2_300", weights="prithvi_v9"), DecoderSpec("linear"))
    validate(ModelSpec("prithvi_eo_v2_300_tl", weights="prithvi_eo_v2_300_tl"), DecoderSpec("linear"))


def test_a_changed_file_is_refused_after_the_first_load(tmp_path):
    write_tiny_weights(tmp_path)
    path = tmp_path / TINY_WEIGHTS["test_prithvi_tiny"][1]
    _build("prithvi_tiny", "test_prithvi_tiny", tmp_path)
    first = read_sidecar(path)
    state = torch.load(path, weights_only=True)
    state["encoder.norm.bias"] += 1
    torch.save(state, path)
    with pytest.raises(WeightsError, match="the file changed") as info:
        _build("prithvi_tiny", "test_prithvi_tiny", tmp_path)
    assert first in str(info.value) and _sha(path) in str(info.value)
    assert "geopeft weights fetch test_prithvi_tiny" in str(info.value)
    sidecar_path(path).unlink()  # accepting the new file: the next load records it
    _build("prithvi_tiny", "test_prithvi_tiny", tmp_path)
    assert read_sidecar(path) == _sha(path) != first


def test_a_rejected_file_gets_no_sidecar_and_a_pinned_hash_is_enforced(tmp_path):
    path = tmp_path / "tiny_prithvi_v2.pt"
    state = {k: v for k, v in write_tiny_weights(tmp_path)["test_prithvi_tiny"].items() if "blocks.3." not in k}
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"test_prithvi_tiny: Prithvi weights .* missing keys \['blocks.3"):
        _build("prithvi_tiny", "test_prithvi_tiny", tmp_path)
    assert not sidecar_path(path).exists()
    pinned = register_weights(
        PretrainedWeights(
            "test_pinned_tiny", ("prithvi_tiny",), path.name, "file:///x", load_prithvi_weights, "0" * 64
        )
    )
    with pytest.raises(WeightsError, match=f"has SHA-256 {_sha(path)}, but {pinned.sha256} is pinned"):
        _build("prithvi_tiny", "test_pinned_tiny", tmp_path)
    with pytest.raises(ConfigError, match="64 hex digits"):
        PretrainedWeights("x", ("prithvi_tiny",), "x.pt", "file:///x", load_prithvi_weights, "abc")


def test_describe_weights_records_the_hash_of_the_loaded_file(tmp_path):
    write_tiny_weights(tmp_path)
    _build("prithvi_tiny", "test_prithvi_tiny", tmp_path)
    path = tmp_path / TINY_WEIGHTS["test_prithvi_tiny"][1]
    record = describe_weights("test_prithvi_tiny", tmp_path)
    assert record == {"name": "test_prithvi_tiny", "file": str(path), "sha256": _sha(path)}
    assert describe_weights("none", tmp_path) == {"name": "none", "file": None, "sha256": None}


@pytest.mark.slow
def test_a_cell_trains_from_pretrained_weights_and_records_them(tmp_path):
    from geopeft.cache.build import prepare
    from geopeft.cell import run_cell
    from geopeft.data.synthetic import get_writer
    from geopeft.io import read_json
    from geopeft.paths import SweepPaths
    from geopeft.spec import CellSpec, RunEnv, TrainSpec, TuningSpec

    counts = {"train": 2, "val": 2, "test": 2, "bolivia": 2}
    splits = get_writer("sen1floods11")(tmp_path / "raw", counts=counts, size=32, seed=0)
    prepare("sen1floods11", tmp_path / "raw", tmp_path / "cache", splits_dir=splits, progress=False)
    write_tiny_weights(tmp_path / "weights")
    spec = CellSpec(
        model=ModelSpec("prithvi_tiny", weights="test_prithvi_tiny"),
        tuning=TuningSpec("full"),
        decoder=DecoderSpec("linear"),
        dataset="sen1floods11",
        train=TrainSpec(lr=1e-3, batch_size=2, max_epochs=1),
    )
    env = RunEnv(str(tmp_path / "cache"), threads=1)
    assert env.weights_root == str(tmp_path / "weights")  # the default: beside the cache
    paths = SweepPaths(tmp_path / "runs").cell(spec.cell_id)
    run_cell(spec, env, paths, log=lambda _: None)
    result = read_json(paths.result)
    path = tmp_path / "weights" / TINY_WEIGHTS["test_prithvi_tiny"][1]
    assert result["provenance"]["weights"] == {"name": "test_prithvi_tiny", "file": str(path), "sha256": _sha(path)}
    assert result["spec"]["model"]["weights"] == "test_prithvi_tiny"
