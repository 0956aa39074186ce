"""Prithvi checkpoint filter and loader against state dicts in the official key layout.

The fixture files are written from the key lists of architectures.md §1.4 (V1 flat MAE keys, V2
``encoder.``/``decoder.`` keys, TL scales), never from our model's ``state_dict()``. The V1 100M file is
real size; the V2 300M-TL layout is checked at real size by key count only and loaded with a small-width
fake of the same key structure (width 64, 24 blocks; built directly, not registered) to keep the tests fast.
"""

from __future__ import annotations

import logging

import pytest
import torch
from weights_fixtures import LOCATION_SCALE, TEMPORAL_SCALE, official_shapes, official_state_dict

from geopeft.errors import WeightsError
from geopeft.models.pos_embed import get_3d_sincos_pos_embed
from geopeft.models.prithvi import HLS_BANDS, PrithviViT
from geopeft.models.registry import create_backbone
from geopeft.models.weights.prithvi import (
    checkpoint_filter_fn,
    load_prithvi_weights,
    select_patch_embed_weights,
)


def _small_v2_tl(**extra: object) -> PrithviViT:
    return PrithviViT(embed_dim=64, depth=24, num_heads=4, coords_encoding=True, bands=HLS_BANDS, **extra)  # type: ignore[arg-type]


SMALL_V2_TL = {"dim": 64, "depth": 24, "frames": 4, "v2": True, "tl": True, "dec_dim": 32}
SMALL_V1 = {"dim": 64, "depth": 2, "frames": 3, "v2": False, "tl": False, "dec_dim": 32}


def test_fixture_layout_matches_the_published_key_counts():
    assert len(official_shapes(dim=1024, depth=24, frames=4, v2=True, tl=False)) == 398
    assert len(official_shapes(dim=1024, depth=24, frames=4, v2=True, tl=True)) == 402
    v1 = official_shapes(dim=768, depth=12, frames=3, v2=False, tl=False)
    assert v1["pos_embed"] == (1, 589, 768)
    assert v1["patch_embed.proj.weight"] == (768, 6, 1, 16, 16)


def test_v1_100_real_size_loads_strictly(tmp_path):
    state = official_state_dict(dim=768, depth=12, frames=3, v2=False, tl=False)
    path = tmp_path / "Prithvi_EO_V1_100M.pt"
    torch.save(state, path)
    model = create_backbone("prithvi_eo_v1_100", bands=HLS_BANDS, img_size=224)
    assert load_prithvi_weights(model, path) is model
    own = model.state_dict()
    for key in ("cls_token", "patch_embed.proj.weight", "blocks.11.mlp.fc2.weight", "norm.bias"):
        torch.testing.assert_close(own[key], state[key], rtol=0, atol=0)
    # The T=3 checkpoint pos_embed is never used: the model keeps its own T=1 buffer.
    torch.testing.assert_close(own["pos_embed"][0], get_3d_sincos_pos_embed(768, (1, 14, 14), add_cls_token=True))


def test_v2_tl_layout_loads_strictly_with_the_scales(tmp_path):
    state = official_state_dict(**SMALL_V2_TL)
    path = tmp_path / "Prithvi_EO_V2_300M_TL.pt"
    torch.save(state, path)
    model = load_prithvi_weights(_small_v2_tl(), path)
    assert model.temporal_embed_enc.scale.item() == pytest.approx(TEMPORAL_SCALE)
    assert model.location_embed_enc.scale.item() == pytest.approx(LOCATION_SCALE)
    torch.testing.assert_close(model.blocks[23].attn.qkv.weight, state["encoder.blocks.23.attn.qkv.weight"])


def test_filter_rules():
    model = _small_v2_tl()
    state = official_state_dict(**SMALL_V2_TL)
    legacy = {f"_timm_module.{k}": v for k, v in state.items()}
    for source in (state, legacy):
        out = checkpoint_filter_fn(source, model)
        assert set(out) == set(model.state_dict())
        assert out["pos_embed"].shape == model.pos_embed.shape  # file: 4 frames; model: 1
        torch.testing.assert_close(out["pos_embed"], model.pos_embed)
    plain = PrithviViT(embed_dim=64, depth=24, num_heads=4, bands=HLS_BANDS)
    assert not any("embed_enc" in k for k in checkpoint_filter_fn(state, plain))
    v1 = checkpoint_filter_fn(official_state_dict(**SMALL_V1), PrithviViT(embed_dim=64, depth=2, num_heads=4))
    assert not any("decoder" in k or k == "mask_token" for k in v1)


def test_tl_weights_load_into_the_plain_model(tmp_path):
    path = tmp_path / "tl.pt"
    torch.save(official_state_dict(**SMALL_V2_TL), path)
    load_prithvi_weights(PrithviViT(embed_dim=64, depth=24, num_heads=4, bands=HLS_BANDS), path)


def test_plain_weights_into_a_tl_model_fail_naming_the_scales(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save(official_state_dict(**{**SMALL_V2_TL, "tl": False}), path)
    with pytest.raises(WeightsError, match=r"temporal_embed_enc\.scale") as err:
        load_prithvi_weights(_small_v2_tl(), path)
    assert str(path) in str(err.value)


def test_missing_key_fails_naming_it_and_the_file(tmp_path):
    state = official_state_dict(**SMALL_V1)
    del state["blocks.1.attn.proj.bias"]
    path = tmp_path / "v1.pt"
    torch.save(state, path)
    model = PrithviViT(embed_dim=64, depth=2, num_heads=4)
    before = model.blocks[0].attn.qkv.weight.detach().clone()
    with pytest.raises(WeightsError, match=r"missing keys \['blocks\.1\.attn\.proj\.bias'\]") as err:
        load_prithvi_weights(model, path)
    assert str(path) in str(err.value)
    torch.testing.assert_close(model.blocks[0].attn.qkv.weight, before)  # nothing loaded


def test_unexpected_key_and_shape_mismatch_fail(tmp_path):
    state = official_state_dict(**SMALL_V1)
    path = tmp_path / "v1.pt"
    torch.save({**state, "head.weight": torch.zeros(2)}, path)
    with pytest.raises(WeightsError, match=r"unexpected keys \['head\.weight'\]"):
        load_prithvi_weights(PrithviViT(embed_dim=64, depth=2, num_heads=4), path)
    torch.save(state, path)
    with pytest.raises(WeightsError, match="shapes differ"):
        load_prithvi_weights(PrithviViT(embed_dim=32, depth=2, num_heads=4), path)


def test_unreadable_files(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        load_prithvi_weights(PrithviViT(embed_dim=64, depth=2, num_heads=4), tmp_path / "none.pt")
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(WeightsError, match="not a state dict"):
        load_prithvi_weights(PrithviViT(embed_dim=64, depth=2, num_heads=4), path)


def test_band_selection_copies_by_name(caplog):
    torch.manual_seed(0)
    ckpt = torch.randn(64, 6, 1, 16, 16)
    with caplog.at_level(logging.INFO, logger="geopeft.models.weights.prithvi"):
        out = select_patch_embed_weights(ckpt, HLS_BANDS, ["RED", "BLUE", "COASTAL_AEROSOL"])
    assert out.shape == (64, 3, 1, 16, 16)
    torch.testing.assert_close(out[:, 0], ckpt[:, 2], rtol=0, atol=0)
    torch.testing.assert_close(out[:, 1], ckpt[:, 0], rtol=0, atol=0)
    bound = (6 / (3 * 16 * 16 + 64)) ** 0.5  # xavier-uniform on the [64, 3·1·16·16] view
    assert out[:, 2].abs().max() <= bound
    assert out[:, 2].std() > bound / 4
    assert all(not torch.allclose(out[:, 2], ckpt[:, i]) for i in range(6))
    assert "['RED', 'BLUE']" in caplog.text and "['COASTAL_AEROSOL']" in caplog.text
    with pytest.raises(WeightsError, match="one input channel per"):
        select_patch_embed_weights(ckpt, HLS_BANDS[:5], ["RED"])


def test_loader_maps_the_model_bands(tmp_path):
    state = official_state_dict(**SMALL_V1)
    path = tmp_path / "v1.pt"
    torch.save(state, path)
    bands = ("RED", "BLUE", "COASTAL_AEROSOL")
    model = PrithviViT(embed_dim=64, depth=2, num_heads=4, in_chans=3, bands=bands)
    load_prithvi_weights(model, path)
    weight = model.patch_embed.proj.weight.detach()
    torch.testing.assert_close(weight[:, 0], state["patch_embed.proj.weight"][:, 2], rtol=0, atol=0)
    torch.testing.assert_close(weight[:, 1], state["patch_embed.proj.weight"][:, 0], rtol=0, atol=0)
    with pytest.raises(WeightsError, match="no band names"):
        load_prithvi_weights(PrithviViT(embed_dim=64, depth=2, num_heads=4, in_chans=3), path)
