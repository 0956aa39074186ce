"""Prithvi encoder: position embedding, feature list, parameter counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geopeft.models.pos_embed import get_3d_sincos_pos_embed, interpolate_pos_embed
from geopeft.models.prithvi import HLS_BANDS, PrithviViT
from geopeft.models.registry import create_backbone, get_backbone


def _np_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=float) / (dim / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1).astype(float), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def _np_3d(dim: int, grid: tuple[int, int, int]) -> np.ndarray:
    """Independent transcription of architectures.md §1.3: w:h:t = 6:6:4, [w, h, t], t-major, CLS row 0."""
    t, h, w = grid
    w_e = np.tile(_np_1d(dim // 16 * 6, np.arange(w)), (t * h, 1))
    h_e = np.tile(np.repeat(_np_1d(dim // 16 * 6, np.arange(h)), w, axis=0), (t, 1))
    t_e = np.repeat(_np_1d(dim // 16 * 4, np.arange(t)), h * w, axis=0)
    pe = np.concatenate([w_e, h_e, t_e], axis=1)
    return np.concatenate([np.zeros((1, dim)), pe], axis=0)


@pytest.mark.parametrize(("dim", "grid"), [(64, (1, 14, 14)), (768, (1, 14, 14)), (64, (3, 4, 5))])
def test_3d_sincos_matches_reference(dim, grid):
    ours = get_3d_sincos_pos_embed(dim, grid, add_cls_token=True)
    assert ours.dtype == torch.float32
    assert ours.shape == (1 + grid[0] * grid[1] * grid[2], dim)
    np.testing.assert_allclose(ours.numpy(), _np_3d(dim, grid).astype(np.float32), atol=1e-6)
    assert torch.all(ours[0] == 0)


def test_interpolation_keeps_corners_and_cls():
    pe = get_3d_sincos_pos_embed(64, (1, 14, 14), add_cls_token=True).unsqueeze(0)
    assert interpolate_pos_embed(pe, (1, 14, 14), (1, 14, 14)) is pe
    out = interpolate_pos_embed(pe, (1, 14, 14), (1, 32, 20))
    assert out.shape == (1, 1 + 32 * 20, 64)
    src = pe[0, 1:].reshape(14, 14, 64)
    dst = out[0, 1:].reshape(32, 20, 64)
    torch.testing.assert_close(out[0, 0], pe[0, 0])
    for (i, j), (k, m) in {(0, 0): (0, 0), (13, 13): (31, 19), (0, 13): (0, 19), (13, 0): (31, 0)}.items():
        torch.testing.assert_close(dst[k, m], src[i, j], atol=1e-5, rtol=0)  # align_corners=True


def test_interpolation_recomputes_for_new_frame_count():
    pe = get_3d_sincos_pos_embed(64, (1, 4, 4), add_cls_token=True).unsqueeze(0)
    out = interpolate_pos_embed(pe, (1, 4, 4), (2, 4, 4))
    torch.testing.assert_close(out[0], get_3d_sincos_pos_embed(64, (2, 4, 4), add_cls_token=True))


def test_module_names_match_checkpoint_keys():
    model = PrithviViT(embed_dim=64, depth=2, num_heads=4, in_chans=6)
    keys = set(model.state_dict())
    expected = {
        "cls_token",
        "pos_embed",
        "patch_embed.proj.weight",
        "patch_embed.proj.bias",
        "norm.weight",
        "norm.bias",
    }
    for i in range(2):
        for layer in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
            expected |= {f"blocks.{i}.{layer}.weight", f"blocks.{i}.{layer}.bias"}
    assert keys == expected
    assert model.state_dict()["patch_embed.proj.weight"].shape == (64, 6, 1, 16, 16)
    assert model.pos_embed.shape == (1, 1 + 14 * 14, 64)
    assert "pos_embed" not in dict(model.named_parameters())
    assert model.blocks[0].norm1.eps == 1e-5


def test_forward_returns_every_block_and_norms_only_the_last():
    torch.manual_seed(0)
    model = create_backbone("prithvi_tiny", bands=HLS_BANDS, img_size=64).eval()
    raw = {}
    model.blocks[-1].register_forward_hook(lambda _m, _i, out: raw.setdefault("last", out))
    model.blocks[1].register_forward_hook(lambda _m, _i, out: raw.setdefault("second", out))
    feats = model(torch.randn(2, 6, 64, 48))
    assert len(feats) == 4
    assert all(f.shape == (2, 1 + 4 * 3, 64) for f in feats)
    torch.testing.assert_close(feats[-1], model.norm(raw["last"]))
    torch.testing.assert_close(feats[1], raw["second"])


def _vit_params(dim: int, depth: int, in_chans: int, patch: int = 16) -> int:
    patch_embed = dim * in_chans * patch * patch + dim
    block = (
        2 * dim
        + (3 * dim * dim + 3 * dim)
        + (dim * dim + dim)
        + 2 * dim
        + (4 * dim * dim + 4 * dim)
        + (4 * dim * dim + dim)
    )
    return patch_embed + dim + depth * block + 2 * dim  # + cls_token, blocks, final norm


@pytest.mark.parametrize(
    ("name", "dim", "depth", "expected"),
    [("prithvi_eo_v1_100", 768, 12, 86_237_184), ("prithvi_eo_v2_300", 1024, 24, 303_886_336)],
)
def test_real_size_parameter_counts(name, dim, depth, expected):
    assert _vit_params(dim, depth, 6) == expected
    info = get_backbone(name)
    assert (info.embed_dim, info.depth, info.patch_size, info.default_bands) == (dim, depth, 16, HLS_BANDS)
    with torch.device("meta"):
        model = create_backbone(name, bands=HLS_BANDS, img_size=224)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert model.blocks[0].attn.num_heads == {768: 12, 1024: 16}[dim]
