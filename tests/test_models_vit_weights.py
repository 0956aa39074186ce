"""The ViT-B/16 baseline's ImageNet-21k weights: timm's file layout, timm's adaptation, the catalogue entry.

The loader is checked against timm itself: a file in timm's ``vit_base_patch16_224`` layout (written by rule, the
rule checked against timm's architecture at full size) is loaded by ``timm.create_model(..., pretrained=True)``
with ``in_chans`` and ``img_size`` as TerraTorch asks for them, and our encoder must hold the same tensors. Most
files are narrow (width 32, depth 2: the loader checks shapes, not sizes); one full-size file goes through
``build_segmentor`` end to end.
"""

from __future__ import annotations

import re

import pytest
import timm
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner
from weights_fixtures import timm_vit_shapes, write_timm_vit

from geopeft.data.bands import HLS_BANDS
from geopeft.errors import ConfigError, WeightsError
from geopeft.models.baselines import ViTB16Encoder
from geopeft.models.build import build_segmentor, validate
from geopeft.models.weights.integrity import read_sidecar
from geopeft.models.weights.pretrained import get_weights, weights_file, weights_names
from geopeft.models.weights.vit import IGNORED_KEYS, load_vit_b16_weights
from geopeft.spec import DecoderSpec, ModelSpec
from hpc.cli import app

NARROW = {"dim": 32, "depth": 2}
URL = "https://huggingface.co/timm/vit_base_patch16_224.augreg_in21k_ft_in1k/resolve/main/model.safetensors"


def narrow_encoder(bands: tuple[str, ...], img_size: int) -> ViTB16Encoder:
    return ViTB16Encoder(bands, img_size, embed_dim=NARROW["dim"], depth=NARROW["depth"], num_heads=2)


def timm_loaded(path, in_chans: int, img_size: int) -> dict[str, torch.Tensor]:
    """What timm's own pretrained loading makes of ``path`` (TerraTorch's route), as a state dict."""
    model = timm.create_model(
        "vit_base_patch16_224.augreg_in21k_ft_in1k",
        pretrained=True,
        pretrained_cfg_overlay={"file": str(path)},
        in_chans=in_chans,
        img_size=img_size,
        num_classes=0,
        embed_dim=NARROW["dim"],
        depth=NARROW["depth"],
        num_heads=2,
    )
    return model.state_dict()


def test_the_fixture_layout_is_timms_vit_base_patch16_224_and_fits_vit_b16_at_full_size():
    with torch.device("meta"):
        reference = timm.create_model("vit_base_patch16_224", pretrained=False)
        narrow = timm.create_model("vit_base_patch16_224", pretrained=False, embed_dim=32, depth=2, num_heads=2)
        ours = ViTB16Encoder(HLS_BANDS, 512)
    assert {k: tuple(v.shape) for k, v in reference.state_dict().items()} == timm_vit_shapes()
    assert {k: tuple(v.shape) for k, v in narrow.state_dict().items()} == timm_vit_shapes(**NARROW)
    own = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    file = timm_vit_shapes()
    assert set(file) - set(own) == {"head.weight", "head.bias"} <= IGNORED_KEYS
    assert set(own) <= set(file)
    adapted = {"pos_embed": (1, 1 + 32 * 32, 768), "patch_embed.proj.weight": (768, 6, 16, 16)}
    assert own == {k: adapted.get(k, s) for k, s in file.items() if k in own}


@pytest.mark.parametrize(("bands", "img_size"), [(HLS_BANDS, 512), (HLS_BANDS[:3], 224), (HLS_BANDS[:4], 128)])
def test_strict_load_equals_timms_own_pretrained_loading(tmp_path, bands, img_size):
    path = tmp_path / "vit.safetensors"
    state = write_timm_vit(path, **NARROW)
    model = load_vit_b16_weights(narrow_encoder(bands, img_size), path)
    own = model.state_dict()
    reference = timm_loaded(path, len(bands), img_size)
    assert set(own) == set(reference)
    for key, value in own.items():
        torch.testing.assert_close(value, reference[key], rtol=0, atol=0, msg=key)
    # timm's documented rule, independently: RGB kernels repeated cyclically, scaled by 3 / in_chans.
    rgb = state["patch_embed.proj.weight"]
    expected = torch.cat([rgb] * 2, dim=1)[:, : len(bands)] * (3 / len(bands))
    torch.testing.assert_close(own["patch_embed.proj.weight"], expected)
    grid = img_size // 16
    assert own["pos_embed"].shape == (1, 1 + grid * grid, NARROW["dim"])
    torch.testing.assert_close(own["pos_embed"][:, :1], state["pos_embed"][:, :1], rtol=0, atol=0)  # class token
    if img_size == 224:
        torch.testing.assert_close(own["pos_embed"], state["pos_embed"], rtol=0, atol=0)
    else:
        assert not torch.equal(own["pos_embed"][:, 1:5], state["pos_embed"][:, 1:5])
    for key in ("cls_token", "blocks.1.attn.qkv.weight", "blocks.0.mlp.fc2.bias", "norm.weight"):
        torch.testing.assert_close(own[key], state[key], rtol=0, atol=0)


def test_a_missing_or_foreign_key_fails_naming_it_and_the_file(tmp_path):
    path = tmp_path / "vit.safetensors"
    state = write_timm_vit(path, **NARROW)
    del state["blocks.1.attn.qkv.weight"]
    state["blocks.0.ls1.gamma"] = torch.ones(NARROW["dim"])
    save_file(state, path)
    with pytest.raises(WeightsError) as info:
        load_vit_b16_weights(narrow_encoder(HLS_BANDS, 64), path)
    message = str(info.value)
    assert str(path) in message
    assert "missing keys ['blocks.1.attn.qkv.weight']" in message
    assert "unexpected keys ['blocks.0.ls1.gamma']" in message


def test_a_kernel_that_is_not_rgb_or_a_wrong_width_is_refused(tmp_path):
    path = tmp_path / "vit.safetensors"
    state = write_timm_vit(path, **NARROW)
    save_file({**state, "patch_embed.proj.weight": torch.zeros(NARROW["dim"], 6, 16, 16)}, path)
    with pytest.raises(WeightsError, match=re.escape(f"{path}: patch_embed.proj.weight has shape (32, 6, 16, 16)")):
        load_vit_b16_weights(narrow_encoder(HLS_BANDS, 64), path)
    write_timm_vit(path, dim=48, depth=2)
    with pytest.raises(
        WeightsError, match=r"shapes differ from the model: .*cls_token: file \(1, 1, 48\) vs model \(1, 1, 32\)"
    ):
        load_vit_b16_weights(narrow_encoder(HLS_BANDS, 64), path)
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match=f"cannot read .* {re.escape(str(path))} as safetensors"):
        load_vit_b16_weights(narrow_encoder(HLS_BANDS, 64), path)


def test_the_catalogue_entry_is_the_official_file_and_fits_only_vit_b16(tmp_path):
    entry = get_weights("vit_b16")
    assert entry.url == URL and entry.sha256 is None and entry.backbones == ("vit_b16",)
    assert entry.filename == "vit_base_patch16_224.augreg_in21k_ft_in1k.safetensors"
    assert [n for n in weights_names() if "vit_b16" in get_weights(n).backbones] == ["vit_b16"]
    validate(ModelSpec("vit_b16", weights="vit_b16"), DecoderSpec("linear"))
    for backbone in ("unet_resnet50", "prithvi_eo_v1_100"):
        with pytest.raises(ConfigError, match=f"'vit_b16' .* is made for vit_b16, not backbone {backbone}"):
            validate(ModelSpec(backbone, weights="vit_b16"), DecoderSpec("linear"))
    result = CliRunner().invoke(app, ["weights", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("vit_b16 "))
    assert entry.filename in line and line.endswith("missing")


def test_build_segmentor_loads_the_full_size_file_end_to_end(tmp_path):
    path = weights_file("vit_b16", tmp_path)
    state = write_timm_vit(path, constant=True)  # one constant per key: fast at full size, keys distinguishable
    segmentor = build_segmentor(
        ModelSpec("vit_b16", weights="vit_b16"),
        DecoderSpec("linear"),
        num_classes=2,
        img_size=512,
        weights_root=tmp_path,
    )
    own = segmentor.backbone.state_dict()
    assert set(own) == set(state) - {"head.weight", "head.bias"}
    for key, value in own.items():
        if key == "patch_embed.proj.weight":
            torch.testing.assert_close(value, state[key].repeat(1, 2, 1, 1) / 2)
        elif key == "pos_embed":
            assert value.shape == (1, 1 + 32 * 32, 768)
            torch.testing.assert_close(value, torch.full_like(value, state[key][0, 0, 0].item()))
        else:
            torch.testing.assert_close(value, state[key], rtol=0, atol=0, msg=key)
    assert read_sidecar(path) is not None  # recorded after the first successful load
    with torch.inference_mode():
        logits = segmentor(torch.zeros(1, 6, 64, 64))
    assert logits.shape == (1, 2, 64, 64) and torch.isfinite(logits).all()
