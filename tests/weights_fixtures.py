"""Writers of checkpoint files in the official key layouts, shared by the loader and catalogue tests.

Every layout is written from the key lists of architectures.md (Prithvi §1.4, Clay §2.5, DeCUR §3) and of timm's
``vit_base_patch16_224`` (the ViT-B/16 baseline), never from our models' ``state_dict()``, so a loader is checked
against the published names, not against itself.
"""

from __future__ import annotations

from pathlib import Path

import torch

# --- Prithvi EO (V1 flat MAE keys, V2 ``encoder.``/``decoder.`` keys, TL scales) ---------------------------------

TEMPORAL_SCALE, LOCATION_SCALE = 1.3e-6, 0.058


def _block_shapes(prefix: str, dim: int) -> dict[str, tuple[int, ...]]:
    out = {}
    for layer, (w, b) in {
        "norm1": ((dim,), (dim,)),
        "attn.qkv": ((3 * dim, dim), (3 * dim,)),
        "attn.proj": ((dim, dim), (dim,)),
        "norm2": ((dim,), (dim,)),
        "mlp.fc1": ((4 * dim, dim), (4 * dim,)),
        "mlp.fc2": ((dim, 4 * dim), (dim,)),
    }.items():
        out[f"{prefix}{layer}.weight"], out[f"{prefix}{layer}.bias"] = w, b
    return out


def official_shapes(
    *, dim: int, depth: int, patch: int = 16, frames: int, v2: bool, tl: bool, dec_dim: int = 512
) -> dict[str, tuple[int, ...]]:
    """Key → shape of an official Prithvi MAE checkpoint (encoder then MAE decoder, 8 decoder blocks)."""
    tokens = 1 + frames * (224 // patch) ** 2
    enc = "encoder." if v2 else ""
    dec = "decoder." if v2 else ""
    shapes: dict[str, tuple[int, ...]] = {
        f"{enc}cls_token": (1, 1, dim),
        f"{enc}pos_embed": (1, tokens, dim),
        f"{enc}patch_embed.proj.weight": (dim, 6, 1, patch, patch),
        f"{enc}patch_embed.proj.bias": (dim,),
    }
    for i in range(depth):
        shapes |= _block_shapes(f"{enc}blocks.{i}.", dim)
    shapes |= {f"{enc}norm.weight": (dim,), f"{enc}norm.bias": (dim,)}
    if tl:
        shapes |= {f"{enc}temporal_embed_enc.scale": (1,), f"{enc}location_embed_enc.scale": (1,)}
    shapes |= {
        f"{dec}mask_token": (1, 1, dec_dim),
        f"{dec}decoder_embed.weight": (dec_dim, dim),
        f"{dec}decoder_embed.bias": (dec_dim,),
        f"{dec}decoder_pos_embed": (1, tokens, dec_dim),
    }
    for i in range(8):
        shapes |= _block_shapes(f"{dec}decoder_blocks.{i}.", dec_dim)
    shapes |= {
        f"{dec}decoder_norm.weight": (dec_dim,),
        f"{dec}decoder_norm.bias": (dec_dim,),
        f"{dec}decoder_pred.weight": (patch * patch * 6, dec_dim),
        f"{dec}decoder_pred.bias": (patch * patch * 6,),
    }
    if tl:
        shapes |= {f"{dec}temporal_embed_dec.scale": (1,), f"{dec}location_embed_dec.scale": (1,)}
    return shapes


def official_state_dict(**kwargs: object) -> dict[str, torch.Tensor]:
    """Random encoder tensors (zeros for the decoder, which is dropped) in the official layout."""
    gen = torch.Generator().manual_seed(0)
    out = {}
    for key, shape in official_shapes(**kwargs).items():  # type: ignore[arg-type]
        is_decoder = "decoder" in key or key == "mask_token"
        out[key] = torch.zeros(shape) if is_decoder else torch.randn(shape, generator=gen)
    if kwargs.get("tl"):
        prefix = "encoder." if kwargs.get("v2") else ""
        out[f"{prefix}temporal_embed_enc.scale"] = torch.tensor([TEMPORAL_SCALE])
        out[f"{prefix}location_embed_enc.scale"] = torch.tensor([LOCATION_SCALE])
    return out


# --- Clay v1 (Lightning checkpoint, ``model.encoder.*``) ----------------------------------------------------------

WAVE, LATENT, GEN_FF = 128, 128, 2048  # weight generator: token width, weight tokens, TransformerEncoder FF


def official_encoder_shapes(dim: int, depth: int, patch: int = 8, mlp: int = 4) -> dict[str, tuple[int, ...]]:
    """The encoder's checkpoint keys (without ``model.encoder.``) and shapes, from architectures.md §2.2–2.5."""
    gen = "patch_embedding.weight_generator."
    layer = gen + "encoder.layers.0."
    shapes: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, dim),
        "patch_embedding.fclayer.l1.weight": (WAVE, WAVE),
        "patch_embedding.fclayer.l1.bias": (WAVE,),
        "patch_embedding.fclayer.l2.weight": (WAVE, WAVE),
        "patch_embedding.fclayer.l2.bias": (WAVE,),
        gen + "weight_tokens": (LATENT, WAVE),
        gen + "bias_token": (1, WAVE),
        gen + "fc_weight.weight": (patch * patch * dim, WAVE),
        gen + "fc_weight.bias": (patch * patch * dim,),
        gen + "fc_bias.weight": (dim, WAVE),
        gen + "fc_bias.bias": (dim,),
        layer + "self_attn.in_proj_weight": (3 * WAVE, WAVE),
        layer + "self_attn.in_proj_bias": (3 * WAVE,),
        layer + "self_attn.out_proj.weight": (WAVE, WAVE),
        layer + "self_attn.out_proj.bias": (WAVE,),
        layer + "linear1.weight": (GEN_FF, WAVE),
        layer + "linear1.bias": (GEN_FF,),
        layer + "linear2.weight": (WAVE, GEN_FF),
        layer + "linear2.bias": (WAVE,),
        "transformer.norm.weight": (dim,),
        "transformer.norm.bias": (dim,),
    }
    for norm in ("norm1", "norm2"):
        shapes[f"{layer}{norm}.weight"] = shapes[f"{layer}{norm}.bias"] = (WAVE,)
    for i in range(depth):
        p = f"transformer.layers.{i}."
        shapes[p + "0.norm.weight"] = shapes[p + "0.norm.bias"] = (dim,)
        shapes[p + "0.to_qkv.weight"] = (3 * dim, dim)
        shapes[p + "0.to_out.weight"] = (dim, dim)
        shapes[p + "1.net.0.weight"] = shapes[p + "1.net.0.bias"] = (dim,)
        shapes[p + "1.net.1.weight"] = (mlp * dim, dim)
        shapes[p + "1.net.1.bias"] = (mlp * dim,)
        shapes[p + "1.net.3.weight"] = (dim, mlp * dim)
        shapes[p + "1.net.3.bias"] = (dim,)
    return shapes


def write_clay_checkpoint(
    path: Path, dim: int = 64, depth: int = 2, drop: str | None = None, extra: str | None = None
) -> dict[str, torch.Tensor]:
    """A Lightning-style checkpoint with the official key names (encoder + decoder/teacher entries)."""
    gen = torch.Generator().manual_seed(1)
    state = {
        f"model.encoder.{k}": torch.randn(s, generator=gen) for k, s in official_encoder_shapes(dim, depth).items()
    }
    state["model.decoder.embed_to_pixels.weight"] = torch.randn(4, 4, generator=gen)
    state["teacher.model.blocks.0.attn.qkv.weight"] = torch.randn(3, 3, generator=gen)
    if drop:
        del state[f"model.encoder.{drop}"]
    if extra:
        state[f"model.encoder.{extra}"] = torch.zeros(1)
    torch.save({"state_dict": state, "epoch": 3, "global_step": 10}, path)
    return state


# --- DeCUR ResNet-50 (torchgeo / timm names, ``fc.*``) -------------------------------------------------------------

R50 = {"layers": (3, 4, 6, 3), "widths": (64, 128, 256, 512), "stem": 64}
TINY = {"layers": (1, 1, 1, 1), "widths": (8, 16, 32, 64), "stem": 64}


def torchgeo_resnet_shapes(in_chans, layers, widths, stem, num_classes=None, expansion=4):
    """Key → shape of a torchgeo (torchvision/timm naming) bottleneck ResNet state dict, written out by rule."""
    shapes = {"conv1.weight": (stem, in_chans, 7, 7)}

    def bn(prefix, c):
        shapes.update({f"{prefix}.{n}": (c,) for n in ("weight", "bias", "running_mean", "running_var")})
        shapes[f"{prefix}.num_batches_tracked"] = ()

    bn("bn1", stem)
    inp = stem
    for stage, (blocks, w) in enumerate(zip(layers, widths, strict=True), start=1):
        out = expansion * w
        for b in range(blocks):
            p = f"layer{stage}.{b}"
            shapes[f"{p}.conv1.weight"] = (w, inp, 1, 1)
            bn(f"{p}.bn1", w)
            shapes[f"{p}.conv2.weight"] = (w, w, 3, 3)
            bn(f"{p}.bn2", w)
            shapes[f"{p}.conv3.weight"] = (out, w, 1, 1)
            bn(f"{p}.bn3", out)
            if b == 0:
                shapes[f"{p}.downsample.0.weight"] = (out, inp, 1, 1)
                bn(f"{p}.downsample.1", out)
            inp = out
    if num_classes:
        shapes["fc.weight"] = (num_classes, inp)
        shapes["fc.bias"] = (num_classes,)
    return shapes


def fake_state_dict(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors of the given shapes (zero batch counters), the same for the same seed."""
    gen = torch.Generator().manual_seed(seed)
    return {
        k: torch.tensor(0, dtype=torch.long) if k.endswith("num_batches_tracked") else torch.randn(s, generator=gen)
        for k, s in shapes.items()
    }


# --- timm ViT-B/16 (``vit_base_patch16_224.augreg_in21k_ft_in1k``, Hugging Face ``model.safetensors``) -----------


def timm_vit_shapes(
    dim: int = 768, depth: int = 12, patch: int = 16, img: int = 224, num_classes: int = 1000
) -> dict[str, tuple[int, ...]]:
    """Key -> shape of timm's ``vit_base_patch16_224`` (RGB, 224 pixels, ImageNet head), written out by rule."""
    shapes: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, dim),
        "pos_embed": (1, 1 + (img // patch) ** 2, dim),
        "patch_embed.proj.weight": (dim, 3, patch, patch),
        "patch_embed.proj.bias": (dim,),
    }
    for i in range(depth):
        shapes |= _block_shapes(f"blocks.{i}.", dim)
    shapes |= {"norm.weight": (dim,), "norm.bias": (dim,)}
    shapes |= {"head.weight": (num_classes, dim), "head.bias": (num_classes,)}
    return shapes


def write_timm_vit(path: Path, *, constant: bool = False, **kwargs: int) -> dict[str, torch.Tensor]:
    """A safetensors file in :func:`timm_vit_shapes`' layout; random tensors, or one constant per key (fast)."""
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(2)
    state = {
        k: torch.full(s, (i + 1) / 1000) if constant else torch.randn(s, generator=gen)
        for i, (k, s) in enumerate(timm_vit_shapes(**kwargs).items())
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, path)
    return state


# --- catalogue entries for the tiny backbones -----------------------------------------------------------------------

#: Tiny-backbone entries: name -> (backbone, file name). Registered by the tests, as a user registers their own files.
TINY_WEIGHTS = {
    "test_prithvi_tiny": ("prithvi_tiny", "tiny_prithvi_v2.pt"),
    "test_clay_tiny": ("clay_tiny", "tiny_clay.ckpt"),
    "test_resnet_tiny": ("resnet_tiny", "tiny_decur.pth"),
}
#: The tiny Prithvi file: the V2 layout (``encoder.``/``decoder.``) at prithvi_tiny's width and depth.
TINY_PRITHVI = {"dim": 64, "depth": 4, "frames": 4, "v2": True, "tl": False, "dec_dim": 32}


def register_tiny_weights() -> None:
    """Add :data:`TINY_WEIGHTS` to the catalogue (once per process) with the official loaders."""
    from geopeft.models.clay import load_clay_weights
    from geopeft.models.resnet import load_decur_weights
    from geopeft.models.weights.pretrained import PretrainedWeights, register_weights, weights_names
    from geopeft.models.weights.prithvi import load_prithvi_weights

    loaders = {"prithvi_tiny": load_prithvi_weights, "clay_tiny": load_clay_weights, "resnet_tiny": load_decur_weights}
    for name, (backbone, filename) in TINY_WEIGHTS.items():
        if name not in weights_names():
            url = f"file:///nonexistent/{filename}"
            register_weights(PretrainedWeights(name, (backbone,), filename, url, loaders[backbone]))


def write_tiny_weights(root: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Write every :data:`TINY_WEIGHTS` file under ``root`` in its official layout; return name -> state dict."""
    root.mkdir(parents=True, exist_ok=True)
    out = {"test_prithvi_tiny": official_state_dict(**TINY_PRITHVI)}
    torch.save(out["test_prithvi_tiny"], root / TINY_WEIGHTS["test_prithvi_tiny"][1])
    out["test_clay_tiny"] = write_clay_checkpoint(root / TINY_WEIGHTS["test_clay_tiny"][1])
    out["test_resnet_tiny"] = fake_state_dict(torchgeo_resnet_shapes(13, num_classes=10, **TINY))
    torch.save(out["test_resnet_tiny"], root / TINY_WEIGHTS["test_resnet_tiny"][1])
    return out
