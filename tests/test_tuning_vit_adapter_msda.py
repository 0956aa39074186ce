"""Multi-scale deformable attention: the grid_sample core against a hand-written per-point loop."""

import math

import pytest
import torch

from geopeft.errors import ConfigError
from geopeft.tuning.vit_adapter.msda import MSDeformAttn, ms_deform_attn_core, reference_points

SHAPES = [(5, 7), (3, 4), (2, 2)]


def bilinear(level: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """Sample ``level`` ``[H, W, C]`` at normalised ``(x, y)`` as the CUDA kernel does: pixel centres at
    ``(i + 0.5) / size``, four neighbours weighted bilinearly, neighbours outside the map read as zero."""
    h, w, _ = level.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    dx, dy = px - x0, py - y0
    out = torch.zeros(level.shape[-1], dtype=torch.float64)
    for yy, xx, weight in (
        (y0, x0, (1 - dy) * (1 - dx)),
        (y0, x0 + 1, (1 - dy) * dx),
        (y0 + 1, x0, dy * (1 - dx)),
        (y0 + 1, x0 + 1, dy * dx),
    ):
        if 0 <= yy < h and 0 <= xx < w:
            out += weight * level[yy, xx].double()
    return out


def naive_core(value, shapes, locations, weights):
    """The loop the reference kernel runs, one query, head, level and point at a time (float64)."""
    batch, _, heads, head_dim = value.shape
    _, queries, _, _, points, _ = locations.shape
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    out = torch.zeros(batch, queries, heads, head_dim, dtype=torch.float64)
    for n in range(batch):
        for q in range(queries):
            for m in range(heads):
                for lvl, (h, w) in enumerate(shapes):
                    level = value[n, starts[lvl] : starts[lvl + 1], m].reshape(h, w, head_dim)
                    for p in range(points):
                        x, y = locations[n, q, m, lvl, p].tolist()
                        out[n, q, m] += weights[n, q, m, lvl, p].double() * bilinear(level, x, y)
    return out.reshape(batch, queries, heads * head_dim)


def _inputs(seed: int, low: float = -0.3, high: float = 1.3):
    gen = torch.Generator().manual_seed(seed)
    tokens = sum(h * w for h, w in SHAPES)
    value = torch.randn(2, tokens, 3, 4, generator=gen)
    locations = low + (high - low) * torch.rand(2, 6, 3, len(SHAPES), 4, 2, generator=gen)
    weights = torch.rand(2, 6, 3, len(SHAPES), 4, generator=gen)
    weights = weights / weights.sum(dim=(-1, -2), keepdim=True)
    return value, locations, weights


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grid_sample_core_matches_the_naive_loop(seed):
    value, locations, weights = _inputs(seed)
    # Some points land outside every level (zeros) and on the borders (partly zero).
    assert (locations < 0).any() and (locations > 1).any()
    got = ms_deform_attn_core(value, SHAPES, locations, weights)
    want = naive_core(value, SHAPES, locations, weights)
    assert got.shape == (2, 6, 3 * 4)
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=0)


def test_points_far_outside_read_zero():
    value, locations, weights = _inputs(3)
    outside = torch.where(torch.rand_like(locations) < 0.5, locations - 2.0, locations + 2.0)
    assert torch.count_nonzero(ms_deform_attn_core(value, SHAPES, outside, weights)) == 0


def test_a_pixel_centre_reads_that_pixel():
    value = torch.randn(1, 5 * 7, 1, 2)
    i, j = 3, 5
    location = torch.tensor([(j + 0.5) / 7, (i + 0.5) / 5]).view(1, 1, 1, 1, 1, 2)
    out = ms_deform_attn_core(value, [(5, 7)], location, torch.ones(1, 1, 1, 1, 1))
    torch.testing.assert_close(out.view(2), value.view(5, 7, 2)[i, j])


def test_reference_points_are_pixel_centres():
    ref = reference_points([(2, 3), (1, 2)])
    assert ref.shape == (1, 8, 1, 2)
    want = [(1 / 6, 1 / 4), (3 / 6, 1 / 4), (5 / 6, 1 / 4), (1 / 6, 3 / 4), (3 / 6, 3 / 4), (5 / 6, 3 / 4)]
    want += [(1 / 4, 1 / 2), (3 / 4, 1 / 2)]
    torch.testing.assert_close(ref.view(8, 2), torch.tensor(want))


def test_initialisation_is_the_reference_radial_grid():
    attn = MSDeformAttn(dim=16, levels=3, heads=4, points=2, ratio=0.5)
    bias = attn.sampling_offsets.bias.view(4, 3, 2, 2)
    # Heads point along 0°, 90°, 180°, 270°; point p lies p + 1 steps out, the same on every level.
    directions = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    for p in range(2):
        torch.testing.assert_close(bias[:, :, p], (p + 1) * directions[:, None].expand(4, 3, 2), atol=1e-6, rtol=0)
    assert torch.count_nonzero(attn.sampling_offsets.weight) == 0
    assert torch.count_nonzero(attn.attention_weights.weight) == torch.count_nonzero(attn.attention_weights.bias) == 0
    assert attn.value_proj.out_features == 8 and attn.output_proj.in_features == 8
    # 45° heads are scaled so that the larger of |cos|, |sin| is 1 (a square, not a circle).
    diag = MSDeformAttn(dim=16, levels=1, heads=8, points=1).sampling_offsets.bias.view(8, 2)
    torch.testing.assert_close(diag[1], torch.tensor([1.0, 1.0]), atol=1e-6, rtol=0)


def test_module_forward_is_the_core_on_projected_inputs():
    torch.manual_seed(0)
    attn = MSDeformAttn(dim=8, levels=2, heads=2, points=3, ratio=0.5)
    for p in attn.parameters():
        torch.nn.init.normal_(p, std=0.3)
    shapes = [(4, 3), (2, 2)]
    query, keys = torch.randn(2, 5, 8), torch.randn(2, 16, 8)
    reference = torch.rand(1, 5, 1, 2)
    value = attn.value_proj(keys).view(2, 16, 2, 2)
    offsets = attn.sampling_offsets(query).view(2, 5, 2, 2, 3, 2)
    normaliser = torch.tensor([[3.0, 4.0], [2.0, 2.0]]).view(1, 1, 1, 2, 1, 2)
    locations = reference[:, :, None, :, None, :] + offsets / normaliser
    weights = attn.attention_weights(query).view(2, 5, 2, 6).softmax(-1).view(2, 5, 2, 2, 3)
    want = attn.output_proj(naive_core(value.detach(), shapes, locations.detach(), weights.detach()).float())
    torch.testing.assert_close(attn(query, reference, keys, shapes), want, atol=1e-5, rtol=0)


def test_offsets_and_weights_get_gradients():
    attn = MSDeformAttn(dim=8, levels=1, heads=2, points=2)
    out = attn(torch.randn(1, 4, 8), torch.rand(1, 4, 1, 2), torch.randn(1, 9, 8), [(3, 3)])
    out.square().sum().backward()
    for name, p in attn.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name


def test_heads_must_divide_the_value_width():
    with pytest.raises(ConfigError, match="deform_num_heads 3"):
        MSDeformAttn(dim=16, levels=1, heads=3, points=4, ratio=0.5)


def test_shapes_must_cover_the_keys():
    attn = MSDeformAttn(dim=8, levels=2, heads=2, points=1)
    with pytest.raises(ConfigError, match="2 levels"):
        attn(torch.randn(1, 4, 8), torch.rand(1, 4, 1, 2), torch.randn(1, 10, 8), [(3, 3), (1, 2)])
