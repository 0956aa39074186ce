"""Prithvi temporal/location ("TL") encoders: formula, where they are added, parameters, registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geopeft.errors import ConfigError
from geopeft.models.pos_embed import interpolate_pos_embed
from geopeft.models.prithvi import (
    HLS_BANDS,
    METADATA_KEYS_TL,
    LocationEncoder,
    PrithviViT,
    TemporalEncoder,
)
from geopeft.models.registry import create_backbone, get_backbone


def _np_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    """Independent transcription of the 1-D sin-cos of architectures.md §1.3."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=float) / (dim / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1).astype(float), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def _tl_pair() -> tuple[PrithviViT, PrithviViT]:
    torch.manual_seed(0)
    plain = create_backbone("prithvi_tiny", bands=HLS_BANDS, img_size=64).eval()
    tl = create_backbone("prithvi_tiny_tl", bands=HLS_BANDS, img_size=64).eval()
    missing = tl.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["location_embed_enc.scale", "temporal_embed_enc.scale"]
    return plain, tl


def _coords(batch: int = 2, frames: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    temporal = torch.tensor([[2018.0, 200.0], [2020.0, 15.0]])[:batch, None, :].repeat(1, frames, 1)
    location = torch.tensor([[38.5, -121.7], [-12.0, 130.25]])[:batch]
    return temporal, location


def test_encoders_match_the_formula():
    enc_t, enc_l = TemporalEncoder(64), LocationEncoder(64)
    temporal = torch.tensor([[[2018.0, 200.0], [2019.0, 0.0]]])  # B=1, T=2
    out_t = enc_t(temporal, tokens_per_frame=3)
    assert out_t.shape == (1, 6, 64)
    frame = [
        np.concatenate([_np_1d(32, np.array(y)), _np_1d(32, np.array(d))], axis=1)[0] for y, d in temporal[0].tolist()
    ]
    expected_t = 0.1 * np.repeat(np.stack(frame), 3, axis=0)
    np.testing.assert_allclose(out_t[0].detach().numpy(), expected_t, atol=2e-5)  # float32 like TerraTorch
    location = torch.tensor([[38.5, -121.7]])
    out_l = enc_l(location)
    assert out_l.shape == (1, 1, 64)
    expected_l = 0.1 * np.concatenate([_np_1d(32, np.array(38.5)), _np_1d(32, np.array(-121.7))], axis=1)
    np.testing.assert_allclose(out_l[0].detach().numpy(), expected_l, atol=1e-6)


def test_fixed_scale_is_a_buffer_of_one():
    enc = TemporalEncoder(16, trainable_scale=False)
    assert not list(enc.parameters())
    assert enc.scale.tolist() == [1.0]
    assert "scale" in enc.state_dict()


def test_coords_are_added_to_patch_tokens_only():
    _, tl = _tl_pair()
    x = torch.randn(2, 6, 32, 48)
    temporal, location = _coords()
    with torch.no_grad():
        got = tl(x, temporal_coords=temporal, location_coords=location)
        # Manual forward: pos-embed, then TL encodings on the patch tokens, CLS untouched.
        tokens = tl.patch_embed(x.unsqueeze(2))
        pos = interpolate_pos_embed(tl.pos_embed, tl.grid_size, (1, 2, 3))
        tokens = tokens + pos[:, 1:] + tl.temporal_embed_enc(temporal, 6) + tl.location_embed_enc(location)
        tokens = torch.cat([(tl.cls_token + pos[:, :1]).expand(2, -1, -1), tokens], dim=1)
        for block in tl.blocks:
            tokens = block(tokens)
        torch.testing.assert_close(got[-1], tl.norm(tokens))


def test_encodings_are_added_one_after_the_other_in_terratorchs_order():
    """pos_embed, then the temporal encoding, then the location encoding, each added to the running sum."""
    _, tl = _tl_pair()
    x = torch.randn(2, 6, 64, 64)
    temporal, location = _coords()
    with torch.no_grad():
        tokens, _ = tl.embed(x, temporal, location)
        base = tl.patch_embed(x.unsqueeze(2)) + interpolate_pos_embed(tl.pos_embed, tl.grid_size, (1, 4, 4))[:, 1:]
        time_enc, location_enc = tl.temporal_embed_enc(temporal, 16), tl.location_embed_enc(location)
        terratorch = (base + time_enc) + location_enc
        sum_first = base + (time_enc + location_enc)
        only_location, _ = tl.embed(x, location_coords=location)
    assert torch.equal(tokens, terratorch)
    assert not torch.equal(tokens, sum_first)  # float32 rounding tells the two orders apart on these inputs
    assert torch.equal(only_location, base + location_enc)


def test_coords_change_the_output_and_absent_coords_equal_the_plain_model():
    plain, tl = _tl_pair()
    x = torch.randn(2, 6, 32, 32)
    temporal, location = _coords()
    with torch.no_grad():
        base = plain(x)
        none = tl(x)
        only_t = tl(x, temporal_coords=temporal)
        only_l = tl(x, location_coords=location)
        both = tl(x, temporal_coords=temporal, location_coords=location)
    for a, b in zip(base, none, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for out in (only_t, only_l, both):
        assert not torch.allclose(out[-1], base[-1])
    assert not torch.allclose(only_t[-1], only_l[-1])


def test_multi_frame_temporal_coords_follow_the_input_frames():
    torch.manual_seed(0)
    model = PrithviViT(img_size=32, embed_dim=32, depth=1, num_heads=2, num_frames=2, coords_encoding=True)
    temporal, location = _coords(frames=2)
    out = model(torch.randn(2, 6, 2, 32, 32), temporal_coords=temporal, location_coords=location)
    assert out[-1].shape == (2, 1 + 2 * 4, 32)


def test_bad_coords_raise():
    plain, tl = _tl_pair()
    x = torch.randn(2, 6, 32, 32)
    temporal, location = _coords()
    with pytest.raises(ConfigError, match="temporal_coords must have shape"):
        tl(x, temporal_coords=temporal[:, 0])
    with pytest.raises(ConfigError, match="location_coords must have shape"):
        tl(x, location_coords=location[:, :1])
    with pytest.raises(ConfigError, match="without the TL encoders"):
        plain(x, location_coords=location)


def test_scales_are_trainable_parameters_named_as_the_checkpoint():
    _, tl = _tl_pair()
    params = dict(tl.named_parameters())
    for name in ("temporal_embed_enc.scale", "location_embed_enc.scale"):
        assert params[name].requires_grad
        assert params[name].shape == (1,)
        assert params[name].item() == pytest.approx(0.1)
    temporal, location = _coords()
    tl.train()
    tl(torch.randn(2, 6, 32, 32), temporal_coords=temporal, location_coords=location)[-1].sum().backward()
    assert params["temporal_embed_enc.scale"].grad is not None
    assert params["location_embed_enc.scale"].grad is not None


def test_metadata_keys():
    _, tl = _tl_pair()
    assert tl.metadata_keys == METADATA_KEYS_TL == ("temporal_coords", "location_coords")
    assert create_backbone("prithvi_tiny", bands=HLS_BANDS, img_size=64).metadata_keys == ()


def _vit_params(dim: int, depth: int, in_chans: int, patch: int) -> int:
    block = 2 * dim + (3 * dim * dim + 3 * dim) + (dim * dim + dim) + 2 * dim + (8 * dim * dim + 5 * dim)
    return dim * in_chans * patch * patch + dim + dim + depth * block + 2 * dim


@pytest.mark.parametrize(
    ("name", "dim", "depth", "heads", "patch", "tl"),
    [
        ("prithvi_tiny_tl", 64, 4, 4, 16, True),
        ("prithvi_eo_v2_100_tl", 768, 12, 12, 16, True),
        ("prithvi_eo_v2_300_tl", 1024, 24, 16, 16, True),
        ("prithvi_eo_v2_600", 1280, 32, 16, 14, False),
        ("prithvi_eo_v2_600_tl", 1280, 32, 16, 14, True),
    ],
)
def test_variants_and_exact_parameter_counts(name, dim, depth, heads, patch, tl):
    info = get_backbone(name)
    assert (info.embed_dim, info.depth, info.patch_size, info.default_bands) == (dim, depth, patch, HLS_BANDS)
    with torch.device("meta"):
        model = create_backbone(name, bands=HLS_BANDS, img_size=224)
    assert sum(p.numel() for p in model.parameters()) == _vit_params(dim, depth, 6, patch) + (2 if tl else 0)
    assert model.coords_encoding is tl
    assert model.blocks[0].attn.num_heads == heads
    assert model.patch_embed.proj.kernel_size == (1, patch, patch)
    assert model.pos_embed.shape == (1, 1 + (224 // patch) ** 2, dim)


def test_known_counts():
    assert _vit_params(768, 12, 6, 16) + 2 == 86_237_186
    assert _vit_params(1024, 24, 6, 16) + 2 == 303_886_338
    assert _vit_params(1280, 32, 6, 14) == 631_188_480
