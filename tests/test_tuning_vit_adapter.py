"""ViT-Adapter on Prithvi: shapes, what trains, parameter counts against the spec and the paper, plan checks."""

import helpers
import pytest
import torch
from torch import nn

from geopeft.errors import ConfigError
from geopeft.models.build import build_segmentor
from geopeft.models.decoders.upernet import UperNetDecoder
from geopeft.models.necks import SelectMaps
from geopeft.spec import DecoderSpec, ModelSpec, TuningSpec
from geopeft.tuning.registry import apply_tuning, count_parameters, validate_tuning
from geopeft.tuning.vit_adapter.adapter import ADAPTER_PREFIXES, ViTAdapterBackbone, default_interaction_indexes
from geopeft.tuning.vit_adapter.method import PAPER_OVERHEAD, supported_backbones


def _adapted(decoder="upernet", options=None, model="prithvi_tiny", num_classes=3):
    torch.manual_seed(0)
    segmentor = build_segmentor(ModelSpec(model), DecoderSpec(decoder), num_classes=num_classes, img_size=64)
    report = apply_tuning(segmentor, TuningSpec("vit_adapter", options or {}))
    return segmentor, report


def sgd_step(model: nn.Module, seed: int = 1) -> set[str]:
    """``helpers.sgd_step`` with BatchNorm in eval mode; return the names of the parameters that changed.

    In train mode BatchNorm removes per-channel constants, so parameters that only shift a map by one
    (the SPM's ``fc3``/``fc4`` biases, rows of ``level_embed``) get gradients at rounding level only at
    init; in eval mode every parameter the loss depends on gets a real gradient.
    """
    return helpers.sgd_step(model, seed, train=False)


def msda(dim, levels, heads, points, ratio):
    """MSDeformAttn's layers (architectures.md §6): offsets, weights, value and output projections."""
    value = int(dim * ratio)
    return (dim + 1) * heads * levels * points * 3 + (dim + 1) * value + (value + 1) * dim


def adapter_formula(dim, in_chans, heads, conv=64, interactions=4, extra=2, points=4, ratio=0.5):
    """Trainable adapter parameters from the spec's layer list (§6), written out layer by layer."""
    injector = 2 * 2 * dim + msda(dim, 3, heads, points, ratio) + dim  # query/feat LayerNorms, attention, gamma
    extractor = 2 * 2 * dim + msda(dim, 1, heads, points, ratio)
    stem = 9 * in_chans * conv + 2 * 9 * conv * conv + 3 * 2 * conv  # three conv3×3 (no bias) + BN
    convs = 9 * conv * 2 * conv + 9 * 2 * conv * 4 * conv + 9 * 4 * conv * 4 * conv + 2 * (2 + 4 + 4) * conv
    fcs = (conv + 2 * conv + 4 * conv + 4 * conv) * dim + 4 * dim
    spm = stem + convs + fcs
    level_embed, up, norms = 3 * dim, 4 * dim * dim + dim, 4 * 2 * dim
    return interactions * (injector + extractor) + extra * extractor + spm + level_embed + up + norms


@pytest.mark.parametrize("size", [(128, 128), (64, 96), (96, 160)])
def test_four_maps_at_strides_4_to_32(size):
    segmentor, _ = _adapted()
    h, w = size
    features = segmentor.backbone(torch.randn(2, 6, h, w))
    assert [tuple(f.shape) for f in features] == [(2, 64, h // s, w // s) for s in (4, 8, 16, 32)]
    assert segmentor(torch.randn(2, 6, h, w)).shape == (2, 3, h, w)


def test_input_is_padded_to_32():
    segmentor, _ = _adapted("linear")
    assert segmentor.patch_size == 32
    assert segmentor(torch.randn(1, 6, 48, 80)).shape == (1, 3, 48, 80)


def test_neck_and_decoder_are_rebuilt_for_the_pyramid():
    segmentor, _ = _adapted("upernet")
    assert isinstance(segmentor.backbone, ViTAdapterBackbone)
    assert isinstance(segmentor.neck, SelectMaps) and segmentor.neck.indices == (0, 1, 2, 3)
    assert isinstance(segmentor.decoder, UperNetDecoder)
    assert segmentor.backbone_info.out_channels == (64,) * 4 and segmentor.backbone_info.strides == (4, 8, 16, 32)
    linear, _ = _adapted("linear")
    assert linear.neck.indices == (-1,) and linear.decoder.conv.in_channels == 64


def test_default_settings_follow_the_spec():
    assert default_interaction_indexes(12) == ((0, 2), (3, 5), (6, 8), (9, 11))
    assert default_interaction_indexes(24) == ((0, 5), (6, 11), (12, 17), (18, 23))
    segmentor, _ = _adapted()
    backbone = segmentor.backbone
    assert backbone.interaction_indexes == ((0, 0), (1, 1), (2, 2), (3, 3))
    attn = backbone.interactions[0].injector.attn
    assert (attn.heads, attn.points, attn.levels, attn.value_dim) == (4, 4, 3, 32)  # the ViT's 4 heads
    assert all(torch.count_nonzero(i.injector.gamma) == 0 for i in backbone.interactions)
    assert [i.extra_extractors is not None for i in backbone.interactions] == [False, False, False, True]
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in backbone.modules())


def test_the_vit_is_frozen_and_the_adapter_trains():
    segmentor, report = _adapted()
    backbone = segmentor.backbone
    assert not any(p.requires_grad for p in backbone.vit.parameters())
    adapter = sum(p.numel() for _, p in backbone.adapter_parameters())
    head = count_parameters(segmentor.neck).total + count_parameters(segmentor.decoder).total
    assert adapter == adapter_formula(dim=64, in_chans=6, heads=4)
    assert report.trainable == adapter + head
    assert report.total == count_parameters(backbone.vit).total + adapter + head
    assert {n for n, p in backbone.named_parameters() if p.requires_grad} == {
        n for n, _ in backbone.adapter_parameters()
    }


def test_one_step_changes_exactly_the_adapter_and_decoder():
    segmentor, _ = _adapted()
    trainable = {n for n, p in segmentor.named_parameters() if p.requires_grad}
    changed = sgd_step(segmentor)
    # At init γ = 0 (the paper's init_values) cuts the injector's attention off from the loss, and the
    # zero-initialised offset and weight projections cut every query LayerNorm off, so those hold still.
    held = {n for n in trainable if (".injector." in n and not n.endswith(".gamma")) or ".query_norm." in n}
    assert held and changed == trainable - held
    assert not any(n.startswith("backbone.vit.") for n in changed)
    assert {n.split(".")[1] for n in changed if n.startswith("backbone.")} == set(ADAPTER_PREFIXES)


def test_a_non_zero_gate_trains_the_injector_from_the_first_step():
    segmentor, _ = _adapted(options={"init_values": 0.1})
    changed = sgd_step(segmentor)
    trainable = {n for n, p in segmentor.named_parameters() if p.requires_grad}
    assert changed == trainable - {n for n in trainable if ".query_norm." in n}


def test_once_moved_off_init_every_trainable_parameter_gets_a_gradient():
    segmentor, _ = _adapted(options={"init_values": 0.1})
    with torch.no_grad():
        for name, p in segmentor.backbone.named_parameters():
            if "sampling_offsets.weight" in name or "attention_weights.weight" in name:
                p.normal_(std=0.01)
    segmentor.train()
    x, y = torch.randn(2, 6, 32, 32), torch.randint(0, 3, (2, 32, 32))
    torch.nn.functional.cross_entropy(segmentor(x), y).backward()
    for name, p in segmentor.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name
        else:
            assert p.grad is None, name


def test_linear_decoder_reads_only_the_stride_32_map():
    segmentor, _ = _adapted("linear")
    trainable = {n for n, p in segmentor.named_parameters() if p.requires_grad}
    held = {n for n in trainable if (".injector." in n and not n.endswith(".gamma")) or ".query_norm." in n}
    changed = sgd_step(segmentor)
    # The stride-4/8/16 outputs feed nothing, and c1..c3 reach the stride-32 map only through the
    # extractors' queries (cut off at init): their norms, ``up`` and ``fc1..fc3`` stay as they were.
    unused = {f"backbone.{m}.{p}" for m in ("norm1", "norm2", "norm3", "up") for p in ("weight", "bias")}
    unused |= {f"backbone.spm.fc{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")}
    assert changed == trainable - held - unused


def test_tl_variant_passes_its_coordinates_to_the_vit():
    segmentor, _ = _adapted(model="prithvi_tiny_tl")
    torch.manual_seed(1)
    backbone = segmentor.backbone.eval()
    x = torch.randn(1, 6, 64, 64)
    location = torch.tensor([[40.0, -3.0]])
    with torch.no_grad():
        plain, with_coords = backbone(x)[-1], backbone(x, location_coords=location)[-1]
    assert not torch.allclose(plain, with_coords)


@pytest.mark.parametrize(
    ("name", "paper_row"),
    [("prithvi_eo_v1_100", "ViT-B"), ("prithvi_eo_v2_100_tl", "ViT-B"), ("prithvi_eo_v2_300", "ViT-L")],
)
def test_full_size_overhead_next_to_the_papers(name, paper_row, capsys):
    with torch.device("meta"):
        segmentor = build_segmentor(ModelSpec(name), DecoderSpec("linear"), num_classes=2, img_size=224)
        vit = count_parameters(segmentor.backbone).total
        report = apply_tuning(segmentor, TuningSpec("vit_adapter"))
    dim, heads = (768, 12) if paper_row == "ViT-B" else (1024, 16)
    adapter = sum(p.numel() for _, p in segmentor.backbone.adapter_parameters())
    assert adapter == adapter_formula(dim=dim, in_chans=6, heads=heads)
    assert report.total == vit + report.trainable
    with capsys.disabled():
        print(
            f"\n{name}: ViT-Adapter {adapter / 1e6:.2f}M on a {vit / 1e6:.2f}M ViT = {100 * adapter / vit:.1f} % "
            f"(paper: up to {100 * PAPER_OVERHEAD:.1f} %); trainable with the linear decoder "
            f"{100 * report.fraction:.1f} %"
        )
    if paper_row == "ViT-B":  # the paper's "up to" figure is the ViT-B one
        assert adapter / vit == pytest.approx(PAPER_OVERHEAD, abs=0.001)
    else:
        assert adapter / vit < PAPER_OVERHEAD


@pytest.mark.parametrize("name", ["clay_v1_base", "decur_resnet50", "vit_b16", "prithvi_eo_v2_600", "resnet_tiny"])
def test_plan_time_refuses_other_backbones(name):
    with pytest.raises(ConfigError, match=rf"grid.yaml: .*vit_adapter .*not {name}; use one of prithvi_tiny"):
        validate_tuning(TuningSpec("vit_adapter"), "grid.yaml", backbone=name)


def test_plan_time_accepts_the_prithvi_family():
    assert set(supported_backbones()) >= {"prithvi_eo_v1_100", "prithvi_eo_v2_100_tl", "prithvi_eo_v2_300"}
    for name in supported_backbones():
        validate_tuning(TuningSpec("vit_adapter"), backbone=name)


def test_plan_time_checks_interaction_indexes_against_the_depth():
    spec = TuningSpec("vit_adapter", {"interaction_indexes": [[0, 2], [3, 5], [6, 8], [9, 11]]})
    validate_tuning(spec, backbone="prithvi_eo_v1_100")
    with pytest.raises(ConfigError, match=r"cell: .*covering blocks 0\.\.23"):
        validate_tuning(spec, "cell", backbone="prithvi_eo_v2_300")


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"n_points": 0}, "n_points must be a positive integer"),
        ({"deform_ratio": 2}, r"deform_ratio must lie in \(0, 1\]"),
        ({"deform_num_heads": True}, "deform_num_heads must be a positive integer"),
        ({"interaction_indexes": [[0, 1, 2]]}, r"\[start, end\] block index pairs"),
        ({"use_extra_extractor": "yes"}, "use_extra_extractor must be true or false"),
        ({"with_cffn": True}, "unknown vit_adapter option 'with_cffn'"),
    ],
)
def test_bad_options_are_named(options, match):
    with pytest.raises(ConfigError, match=match):
        validate_tuning(TuningSpec("vit_adapter", options))


def test_apply_refuses_a_non_prithvi_segmentor():
    segmentor = build_segmentor(ModelSpec("clay_tiny"), DecoderSpec("linear"), num_classes=2, img_size=64)
    with pytest.raises(ConfigError, match="cell: tuning method vit_adapter needs a Prithvi backbone"):
        apply_tuning(segmentor, TuningSpec("vit_adapter"), where="cell")


def test_heads_that_do_not_divide_are_named_with_the_cell():
    with pytest.raises(ConfigError, match=r"cell: vit_adapter: .*deform_num_heads 3"):
        segmentor = build_segmentor(ModelSpec("prithvi_tiny"), DecoderSpec("linear"), num_classes=2, img_size=64)
        apply_tuning(segmentor, TuningSpec("vit_adapter", {"deform_num_heads": 3}), where="cell")


def test_pyramid_indices_for_the_vit_are_refused_on_the_adapter():
    segmentor = build_segmentor(
        ModelSpec("prithvi_tiny"), DecoderSpec("upernet", {"select_indices": [0, 1, 2, 3]}), num_classes=2, img_size=64
    )
    apply_tuning(segmentor, TuningSpec("vit_adapter"))  # four maps: indices 0..3 exist
    segmentor = build_segmentor(
        ModelSpec("prithvi_eo_v1_100"),
        DecoderSpec("upernet", {"select_indices": [2, 5, 8, 11]}),
        num_classes=2,
        img_size=224,
    )
    with pytest.raises(ConfigError, match="select_indices"):
        apply_tuning(segmentor, TuningSpec("vit_adapter"))


@pytest.mark.slow
def test_trains_as_a_cell(tmp_path):
    from geopeft.cache.build import prepare
    from geopeft.cell import run_cell
    from geopeft.data.synthetic import get_writer
    from geopeft.io import read_json
    from geopeft.paths import SweepPaths
    from geopeft.spec import CellSpec, RunEnv, TrainSpec

    counts = dict.fromkeys(("train", "val", "test", "bolivia"), 2)
    splits = get_writer("sen1floods11")(tmp_path / "raw", counts=counts, size=32, seed=0)
    prepare("sen1floods11", tmp_path / "raw", tmp_path / "cache", splits_dir=splits, progress=False)
    spec = CellSpec(
        model=ModelSpec("prithvi_tiny"),
        tuning=TuningSpec("vit_adapter"),
        decoder=DecoderSpec("upernet", {"channels": 16}),
        dataset="sen1floods11",
        train=TrainSpec(lr=1e-3, batch_size=2, max_epochs=1),
    )
    paths = SweepPaths(tmp_path / "runs").cell(spec.cell_id)
    run_cell(spec, RunEnv(str(tmp_path / "cache"), threads=1), paths, log=lambda _: None)
    result = read_json(paths.result)
    assert 0 < result["params"]["trainable"] < result["params"]["total"]
    for metrics in result["regions"].values():
        assert metrics["n"] == 2 and 0.0 <= metrics["miou"] <= 1.0


def test_papers_linear_head_upsamples_the_stride_32_map_by_16_then_rescales():
    """The reference's ``LinearDecoder(upsampling_size=16)`` + ``rescale: true`` on the adapter's last map."""
    torch.manual_seed(0)
    segmentor = build_segmentor(
        ModelSpec("prithvi_tiny"), DecoderSpec("linear", {"upsampling": 16}), num_classes=2, img_size=64
    )
    apply_tuning(segmentor, TuningSpec("vit_adapter", {}))
    assert segmentor.decoder.conv.stride == (16, 16)
    with torch.no_grad():
        assert segmentor.eval()(torch.randn(1, 6, 64, 64)).shape == (1, 2, 64, 64)
