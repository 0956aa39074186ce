"""Clay v1 encoder: shapes, wavelength-generated kernels, metadata, parameter count, checkpoint loading."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from weights_fixtures import GEN_FF, LATENT, WAVE, official_encoder_shapes
from weights_fixtures import write_clay_checkpoint as _write_official

from geopeft.data.bands import HLS_BANDS, STUDY_WAVELENGTHS_UM, WAVELENGTHS_UM
from geopeft.errors import ConfigError, WeightsError
from geopeft.models.build import build_segmentor
from geopeft.models.clay import CLAY_BANDS, ClayEncoder, load_clay_weights
from geopeft.models.clay_embed import posemb_sincos_1d, posemb_sincos_2d_with_gsd
from geopeft.models.registry import create_backbone, get_backbone
from geopeft.spec import DecoderSpec, ModelSpec


def _tiny(bands: tuple[str, ...] = CLAY_BANDS) -> ClayEncoder:
    torch.manual_seed(0)
    model = create_backbone("clay_tiny", bands=bands, img_size=64)
    assert isinstance(model, ClayEncoder)
    return model.eval()


@pytest.mark.parametrize("bands", [HLS_BANDS, CLAY_BANDS])
@pytest.mark.parametrize("size", [(64, 64), (96, 80)])
def test_forward_shapes(bands, size):
    model = _tiny(bands)
    with torch.no_grad():
        feats = model(torch.randn(2, len(bands), *size))
    tokens = (size[0] // 8) * (size[1] // 8)
    assert len(feats) == 2
    assert all(f.shape == (2, 1 + tokens, 64) for f in feats)
    torch.testing.assert_close(feats[-1].mean(-1), torch.zeros(2, 1 + tokens), atol=1e-5, rtol=0)  # final norm

    segmentor = build_segmentor(
        ModelSpec("clay_tiny", bands=bands), DecoderSpec("linear"), num_classes=3, img_size=size[0]
    ).eval()
    assert segmentor.metadata_keys == ("time", "latlon", "gsd")
    with torch.no_grad():
        logits = segmentor(torch.randn(1, len(bands), size[0] - 3, size[1] - 5))  # padded to multiples of 8
    assert logits.shape == (1, 3, size[0] - 3, size[1] - 5)


def test_registry_entries():
    base, tiny = get_backbone("clay_v1_base"), get_backbone("clay_tiny")
    assert (base.embed_dim, base.depth, base.patch_size) == (768, 12, 8)
    assert (tiny.embed_dim, tiny.depth, tiny.patch_size) == (64, 2, 8)
    assert base.default_bands == tiny.default_bands == CLAY_BANDS
    assert len(CLAY_BANDS) == 10


def test_kernel_is_generated_from_wavelengths():
    model = _tiny()
    embed = model.patch_embedding
    waves_a = torch.tensor([WAVELENGTHS_UM[b] for b in HLS_BANDS])
    waves_b = torch.tensor([WAVELENGTHS_UM[b] for b in CLAY_BANDS[:6]])
    with torch.no_grad():
        kernel_a, bias_a = embed.generate_kernel(waves_a)
        kernel_a2, bias_a2 = embed.generate_kernel(waves_a.clone())
        kernel_b, _ = embed.generate_kernel(waves_b)
    assert kernel_a.shape == (64, 6, 8, 8) and bias_a.shape == (64,)
    torch.testing.assert_close(kernel_a, kernel_a2)
    torch.testing.assert_close(bias_a, bias_a2)
    assert not torch.allclose(kernel_a, kernel_b)
    # The kernel is 0.02 × the generator's output, reshaped (C, D·p·p) → (D, C, p, p).
    raw, _ = embed.weight_generator(embed.fclayer(posemb_sincos_1d(waves_a, WAVE)))
    torch.testing.assert_close(kernel_a[5, 2], 0.02 * raw[2, 5 * 64 : 6 * 64].reshape(8, 8))
    # The embedding is exactly a stride-8 conv with that kernel.
    image = torch.randn(1, 6, 16, 16)
    with torch.no_grad():
        tokens = embed(image, waves_a)
        expected = torch.nn.functional.conv2d(image, kernel_a, bias_a, stride=8).flatten(2).transpose(1, 2)
    torch.testing.assert_close(tokens, expected)


#: peft-geofm's ``WAVELENGTHS`` (src/peft_geofm/datasets/utils.py) for CLAY_BANDS, written out by hand.
STUDY_CLAY_WAVES = [0.493, 0.56, 0.665, 0.704, 0.74, 0.783, 0.842, 0.865, 1.61, 2.19]


def test_model_wavelengths_are_the_studys_and_unknown_band_fails():
    assert torch.equal(_tiny(CLAY_BANDS).waves, torch.tensor(STUDY_CLAY_WAVES, dtype=torch.float32))
    model = _tiny(HLS_BANDS)
    assert torch.equal(model.waves, torch.tensor([0.493, 0.56, 0.665, 0.865, 1.61, 2.19], dtype=torch.float32))
    assert "waves" not in model.state_dict()
    with pytest.raises(ConfigError, match=r"unknown band.*'VV'"):
        create_backbone("clay_tiny", bands=("BLUE", "VV"), img_size=64)


def test_kernel_depends_on_the_study_table_entries_of_its_bands_only(monkeypatch):
    def kernel() -> torch.Tensor:
        model = _tiny(CLAY_BANDS)  # same seed, same generator weights: only the wavelengths can differ
        with torch.no_grad():
            return model.patch_embedding.generate_kernel(model.waves)[0]

    before = kernel()
    with torch.no_grad():
        by_hand = _tiny(CLAY_BANDS).patch_embedding.generate_kernel(torch.tensor(STUDY_CLAY_WAVES))[0]
    assert torch.equal(before, by_hand)
    monkeypatch.setitem(WAVELENGTHS_UM, "RED_EDGE_1", 0.9)  # the ESA table (cache metadata) is not Clay's
    monkeypatch.setitem(STUDY_WAVELENGTHS_UM, "WATER_VAPOR", 0.945)  # a band outside CLAY_BANDS
    assert torch.equal(kernel(), before)
    monkeypatch.setitem(STUDY_WAVELENGTHS_UM, "RED_EDGE_1", 0.705)  # ESA's value for a band Clay uses
    assert not torch.allclose(kernel(), before)


def test_metadata_changes_output_and_absent_means_zeros():
    model = _tiny(HLS_BANDS)
    image = torch.randn(2, 6, 32, 32)
    with torch.no_grad():
        plain = model(image)[-1]
        zeros = model(image, time=torch.zeros(2, 4), latlon=torch.zeros(2, 4), gsd=1.0)[-1]
        timed = model(image, time=torch.rand(2, 4))[-1]
        located = model(image, latlon=torch.rand(2, 4))[-1]
        scaled = model(image, gsd=torch.tensor(10.0))[-1]
        per_sample = model(image, gsd=torch.tensor([10.0, 10.0]))[-1]
    torch.testing.assert_close(plain, zeros)
    for other in (timed, located, scaled):
        assert not torch.allclose(plain, other)
    torch.testing.assert_close(scaled, per_sample)
    with pytest.raises(ConfigError, match="'time' must have shape"):
        model(image, time=torch.zeros(2, 2))


def test_metadata_encoding_layout():
    model = _tiny(HLS_BANDS)
    image = torch.randn(1, 6, 16, 24)
    time, latlon = torch.rand(1, 4), torch.rand(1, 4)
    with torch.no_grad():
        tokens = model.encode_patches(image, time=time, latlon=latlon, gsd=10.0)
        patches = model.patch_embedding(image, model.waves)
    encoding = tokens - patches
    torch.testing.assert_close(encoding[0, :, 56:], torch.cat([time, latlon], 1).expand(6, -1))
    torch.testing.assert_close(encoding[0, :, :56], posemb_sincos_2d_with_gsd(2, 3, 56, torch.tensor([10.0]))[0])


def test_sincos_formulas_match_spec():
    waves = torch.tensor([0.49, 0.665, 2.19])
    omega = 1.0 / 10000 ** (np.arange(64) / 63)  # §2.3: denominator dim/2 - 1
    arg = waves.numpy()[:, None].astype(float) * omega[None]
    np.testing.assert_allclose(
        posemb_sincos_1d(waves, 128).numpy(), np.concatenate([np.sin(arg), np.cos(arg)], 1), atol=1e-5
    )

    h, w, dim, gsd = 3, 4, 760, 10.0
    omega = 1.0 / 10000 ** (2 * (np.arange(190) / 189) / 760) * gsd  # §2.4: odd exponent, gsd multiplier
    y, x = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    xs, ys = x.reshape(-1, 1) * omega, y.reshape(-1, 1) * omega
    ref = np.concatenate([np.sin(xs), np.cos(xs), np.sin(ys), np.cos(ys)], 1)
    ours = posemb_sincos_2d_with_gsd(h, w, dim, torch.tensor([gsd]))[0].numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_cls_token_gets_no_position():
    model = _tiny(HLS_BANDS)
    captured = {}
    model.transformer.layers[0][0].register_forward_pre_hook(lambda _m, args: captured.setdefault("x", args[0]))
    with torch.no_grad():
        model(torch.randn(2, 6, 16, 16), time=torch.rand(2, 4), gsd=10.0)
    torch.testing.assert_close(captured["x"][:, 0], model.cls_token[0].expand(2, -1))


def _clay_params(dim: int, depth: int, patch: int = 8, mlp: int = 4) -> int:
    fclayer = 2 * (WAVE * WAVE + WAVE)
    gen_layer = (3 * WAVE * WAVE + 3 * WAVE) + (WAVE * WAVE + WAVE) + 2 * (WAVE * GEN_FF) + GEN_FF + WAVE + 4 * WAVE
    generator = LATENT * WAVE + WAVE + (WAVE + 1) * patch * patch * dim + (WAVE + 1) * dim + gen_layer
    block = 2 * dim + 3 * dim * dim + dim * dim + 2 * dim + (dim * mlp * dim + mlp * dim) + (mlp * dim * dim + dim)
    return dim + fclayer + generator + depth * block + 2 * dim  # cls, embedding, blocks, final norm


def test_base_parameter_count_and_keys_on_meta():
    assert _clay_params(768, 12) == 92_102_144
    with torch.device("meta"):
        model = create_backbone("clay_v1_base", bands=CLAY_BANDS, img_size=512)
    assert sum(p.numel() for p in model.parameters()) == 92_102_144
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert own == official_encoder_shapes(768, 12)
    assert model.transformer.layers[0][0].heads == 12


def test_official_checkpoint_loads_strictly(tmp_path):
    path = tmp_path / "clay-v1-base.ckpt"
    state = _write_official(path)
    model = load_clay_weights(_tiny(HLS_BANDS), path)
    loaded = model.state_dict()
    for key in ("cls_token", "transformer.layers.1.0.to_qkv.weight", "patch_embedding.weight_generator.bias_token"):
        torch.testing.assert_close(loaded[key], state[f"model.encoder.{key}"])
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 6, 16, 16))[-1]).all()


@pytest.mark.parametrize(
    ("drop", "extra", "message"),
    [
        ("transformer.layers.1.1.net.3.bias", None, "missing keys ['transformer.layers.1.1.net.3.bias']"),
        (None, "pos_embed", "unexpected keys ['pos_embed']"),
    ],
)
def test_checkpoint_key_mismatch_is_a_weights_error(tmp_path, drop, extra, message):
    path = tmp_path / "bad.ckpt"
    _write_official(path, drop=drop, extra=extra)
    with pytest.raises(WeightsError, match=re.escape(message)) as info:
        load_clay_weights(_tiny(HLS_BANDS), path)
    assert str(path) in str(info.value)


def test_checkpoint_shape_mismatch_and_missing_file(tmp_path):
    path = tmp_path / "base.ckpt"
    _write_official(path, dim=72, depth=2)  # a different width
    with pytest.raises(WeightsError, match=r"cls_token: checkpoint \(1, 1, 72\) vs model \(1, 1, 64\)"):
        load_clay_weights(_tiny(HLS_BANDS), path)
    with pytest.raises(WeightsError, match="does not exist"):
        load_clay_weights(_tiny(HLS_BANDS), tmp_path / "nope.ckpt")
