"""Activation checkpointing: the same gradients, fewer saved activations, refusals, and the spec field."""

import contextlib
import copy

import pytest
import torch
from torch import nn

from geopeft.errors import ConfigError
from geopeft.models.build import build_segmentor, resolve_bands
from geopeft.spec import CellSpec, DecoderSpec, ModelSpec, TrainSpec, TuningSpec
from geopeft.train.memory import checkpoint_blocks
from geopeft.tuning import apply_tuning

SIZE = 32

CASES = [  # backbone, method and options, decoder: every kind of block and every method that adds modules
    ("prithvi_tiny", "full", {}, "upernet"),
    ("prithvi_tiny", "lora", {"r": 2, "alpha": 2, "dropout": 0.3}, "fcn"),  # LoRA dropout: RNG replayed
    ("prithvi_tiny", "vpt", {"num_tokens": 3}, "linear"),  # prompt hooks stay outside the recomputed part
    ("prithvi_tiny", "vit_adapter", {}, "upernet"),
    ("clay_tiny", "lora", {"r": 2, "alpha": 2}, "linear"),
    ("clay_tiny", "vpt", {"num_tokens": 3}, "fcn"),
    ("vit_b16", "linear_probe", {}, "linear"),
]


def build(backbone, method, options, decoder, checkpointed):
    torch.manual_seed(0)
    model = build_segmentor(ModelSpec(backbone), DecoderSpec(decoder), num_classes=3, img_size=SIZE)
    apply_tuning(model, TuningSpec(method, options))
    if checkpointed:
        assert checkpoint_blocks(model) > 0
    return model


def batch(model_name):
    generator = torch.Generator().manual_seed(1)
    bands = len(resolve_bands(ModelSpec(model_name)))
    image = torch.randn(2, bands, SIZE, SIZE, generator=generator)
    return image, torch.randint(0, 3, (2, SIZE, SIZE), generator=generator)


def backward(model, image, target, pack=None):
    """One training forward and backward (``pack`` sees every tensor saved for backward); the gradients."""
    model.train()
    torch.manual_seed(7)  # dropout and prompt dropout draw from the global generator
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t) if pack else contextlib.nullcontext():
        loss = nn.functional.cross_entropy(model(image), target)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(("backbone", "method", "options", "decoder"), CASES)
def test_checkpointed_blocks_give_the_same_loss_and_gradients(backbone, method, options, decoder):
    image, target = batch(backbone)
    loss, grads = backward(build(backbone, method, options, decoder, False), image, target)
    loss_ckpt, grads_ckpt = backward(build(backbone, method, options, decoder, True), image, target)
    assert torch.equal(loss, loss_ckpt)
    assert grads.keys() == grads_ckpt.keys() and grads
    for name, grad in grads.items():
        torch.testing.assert_close(grads_ckpt[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def saved_bytes(model, image, target):
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    backward(model, image, target, pack)
    return total


@pytest.mark.parametrize("method", ["full", "lora"])
def test_checkpointing_keeps_only_the_block_inputs(method):
    """The deeper the backbone, the larger the share of activations that are no longer kept."""
    image, target = batch("prithvi_tiny")
    plain = saved_bytes(build("prithvi_tiny", method, {}, "linear", False), image, target)
    ckpt = saved_bytes(build("prithvi_tiny", method, {}, "linear", True), image, target)
    assert ckpt < 0.5 * plain, (ckpt, plain)


def test_evaluation_runs_the_blocks_plainly_and_the_output_is_unchanged():
    image, _ = batch("prithvi_tiny")
    plain, ckpt = (build("prithvi_tiny", "lora", {}, "linear", flag).eval() for flag in (False, True))
    with torch.no_grad():
        assert torch.equal(plain(image), ckpt(image))


def test_state_dict_keys_stay_and_a_deep_copy_checkpoints_its_own_blocks():
    model = build("prithvi_tiny", "lora", {}, "linear", True)
    assert set(model.state_dict()) == set(build("prithvi_tiny", "lora", {}, "linear", False).state_dict())
    twin = copy.deepcopy(model)  # what the ZeRO-3 strategy trains
    block, twin_block = model.backbone.blocks[0], twin.backbone.blocks[0]
    assert twin_block.forward.__self__ is twin_block and block.forward.__self__ is block
    image, target = batch("prithvi_tiny")
    _, grads = backward(twin, image, target)
    assert grads and all(p.grad is None for p in model.parameters())  # the copy trained, not the original


def test_convolutional_backbones_and_a_second_application_are_refused():
    resnet = build_segmentor(ModelSpec("resnet_tiny"), DecoderSpec("fcn"), num_classes=2, img_size=SIZE)
    with pytest.raises(ConfigError, match=r"cell A: train.activation_checkpointing applies to ViT.*set it to false"):
        checkpoint_blocks(resnet, "cell A")
    model = build("prithvi_tiny", "full", {}, "linear", True)
    with pytest.raises(ConfigError, match="checkpointed already"):
        checkpoint_blocks(model)


def test_the_spec_field_keeps_old_cell_ids_and_is_checked():
    kwargs = {"model": ModelSpec("prithvi_tiny"), "tuning": TuningSpec("lora"), "decoder": DecoderSpec("linear")}
    plain = CellSpec(dataset="sen1floods11", train=TrainSpec(lr=1e-4), **kwargs)
    ckpt = CellSpec(dataset="sen1floods11", train=TrainSpec(lr=1e-4, activation_checkpointing=True), **kwargs)
    assert plain.to_dict()["train"]["activation_checkpointing"] is False
    assert ckpt.to_dict()["train"]["activation_checkpointing"] is True and ckpt.cell_id != plain.cell_id
    assert CellSpec.from_dict(ckpt.to_dict()) == ckpt and CellSpec.from_dict(plain.to_dict()) == plain
    with pytest.raises(ConfigError, match=r"train\.activation_checkpointing must be true or false, got 'yes'"):
        TrainSpec(lr=1e-4, activation_checkpointing="yes")  # type: ignore[arg-type]
