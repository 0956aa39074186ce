"""Clay v1's wavelength-conditioned patch embedding and its sin-cos position/metadata encodings.

Follows TerraTorch's ``clay_v1/modules.py`` (``FCBlock``, ``WavesTransformer``, ``DynamicEmbedding``) and
``clay_v1/utils.py`` (``posemb_sincos_1d``, ``posemb_sincos_2d_with_gsd``), as described in
architectures.md §2.3–2.4. Module names (``fclayer.l1|l2``, ``weight_generator.{weight_tokens, bias_token,
fc_weight, fc_bias, encoder.layers.0.*}``) match the official checkpoint keys under
``model.encoder.patch_embedding.``.

The conv kernel of the patch embedding is not a parameter: it is generated on every call from the band
wavelengths by a small transformer over wavelength tokens, so one set of weights serves any number and
order of bands.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geopeft.errors import ConfigError

__all__ = [
    "KERNEL_SCALE",
    "WAVE_DIM",
    "DynamicEmbedding",
    "FCBlock",
    "WavesTransformer",
    "posemb_sincos_1d",
    "posemb_sincos_2d_with_gsd",
]

#: Width of the wavelength tokens and of the weight generator's transformer (fixed in Clay v1).
WAVE_DIM = 128
#: Number of learned weight tokens prepended to the wavelength tokens (fixed in Clay v1).
NUM_LATENT_TOKENS = 128
#: The generated kernel is multiplied by this before the convolution (``dynamic_weight * 0.02``).
KERNEL_SCALE = 0.02
_TEMPERATURE = 10000.0


def posemb_sincos_1d(pos: Tensor, dim: int) -> Tensor:
    """Clay's 1-D sin-cos embedding (used for the wavelengths in µm).

    ``omega_i = 1 / 10000^(i / (dim/2 - 1))`` (note the ``- 1``, unlike Prithvi), output
    ``[sin(pos·omega), cos(pos·omega)]``; computed in float32 like the reference.

    Args:
        pos: ``[N]`` positions (wavelengths).
        dim: output width; must be even and at least 4.

    Returns:
        ``[N, dim]`` float32.
    """
    if dim % 2 or dim < 4:
        raise ConfigError(f"posemb_sincos_1d needs an even width >= 4, got {dim}")
    pos = pos.to(torch.float32)
    omega = torch.arange(dim // 2, dtype=torch.float32, device=pos.device) / (dim // 2 - 1)
    omega = 1.0 / (_TEMPERATURE**omega)
    scaled = pos[:, None] * omega[None, :]
    return torch.cat([scaled.sin(), scaled.cos()], dim=1)


def posemb_sincos_2d_with_gsd(h: int, w: int, dim: int, gsd: Tensor) -> Tensor:
    """Clay's GSD-scaled 2-D sin-cos embedding of an ``h × w`` token grid (row-major tokens).

    ``omega_i = 1 / 10000^(2·(i / (dim/4 - 1)) / dim) · gsd`` for ``i < dim/4`` (the reference's odd
    exponent, kept as is); output ``[sin x·omega, cos x·omega, sin y·omega, cos y·omega]`` with ``x`` the
    column and ``y`` the row index. Computed in float32 in the reference's operation order.

    Args:
        h: grid rows.
        w: grid columns.
        dim: output width; a multiple of 4 and at least 8.
        gsd: ``[B]`` ground sample distance per sample (metres); the reference takes one per batch,
            which is the case of equal entries.

    Returns:
        ``[B, h·w, dim]`` float32.
    """
    if dim % 4 or dim < 8:
        raise ConfigError(f"posemb_sincos_2d_with_gsd needs a width divisible by 4 and >= 8, got {dim}")
    device = gsd.device
    y, x = torch.meshgrid(
        torch.arange(h, dtype=torch.float32, device=device),
        torch.arange(w, dtype=torch.float32, device=device),
        indexing="ij",
    )
    omega = torch.arange(dim // 4, dtype=torch.float32, device=device) / (dim // 4 - 1)
    omega = 1.0 / (_TEMPERATURE ** (2 * omega / dim))
    omega = omega[None, :] * gsd.to(torch.float32)[:, None]  # [B, dim/4]
    xs = x.flatten()[None, :, None] * omega[:, None, :]  # [B, L, dim/4]
    ys = y.flatten()[None, :, None] * omega[:, None, :]
    return torch.cat([xs.sin(), xs.cos(), ys.sin(), ys.cos()], dim=-1)


class FCBlock(nn.Module):
    """Residual two-layer MLP with GELU after each layer: ``x + gelu(l2(gelu(l1(x))))``.

    Args:
        size: input and output width.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        self.l1 = nn.Linear(size, size)
        self.l2 = nn.Linear(size, size)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block to ``[N, size]``."""
        y = F.gelu(self.l1(x))
        y = F.gelu(self.l2(y))
        return x + y


class WavesTransformer(nn.Module):
    """Generates the patch-embedding kernel rows and bias from encoded wavelengths.

    The sequence is ``[weight_tokens (128), wave tokens (C), bias_token (1)]`` (unbatched), passed
    through one post-norm ``nn.TransformerEncoderLayer`` (4 heads, GELU, dropout 0, FF width 2048).
    ``fc_weight`` maps each wave token's output plus its input to one kernel slice ``p·p·D``;
    ``fc_bias`` maps the bias token's output to the ``D`` conv biases.

    Args:
        wave_dim: token width.
        output_dim: ``patch_size² · embed_dim``.
        num_latent_tokens: number of weight tokens.
        embed_dim: token width of the ViT (size of the bias).
        num_heads: heads of the generator's attention.
        num_layers: generator depth.
    """

    def __init__(
        self,
        wave_dim: int,
        output_dim: int,
        num_latent_tokens: int,
        embed_dim: int,
        num_heads: int = 4,
        num_layers: int = 1,
    ) -> None:
        super().__init__()
        self.num_latent_tokens = num_latent_tokens
        layer = nn.TransformerEncoderLayer(
            d_model=wave_dim, nhead=num_heads, activation="gelu", dropout=0.0, norm_first=False, batch_first=False
        )
        # enable_nested_tensor only matters for padded batches and warns with batch_first=False.
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.fc_weight = nn.Linear(wave_dim, output_dim)
        self.fc_bias = nn.Linear(wave_dim, embed_dim)
        self.weight_tokens = nn.Parameter(torch.randn(num_latent_tokens, wave_dim) * 0.02)
        self.bias_token = nn.Parameter(torch.randn(1, wave_dim) * 0.02)

    def forward(self, waves: Tensor) -> tuple[Tensor, Tensor]:
        """``[C, wave_dim]`` encoded wavelengths → kernel rows ``[C, output_dim]`` and bias ``[embed_dim]``."""
        tokens = torch.cat([self.weight_tokens, waves, self.bias_token], dim=0)
        out: Tensor = self.encoder(tokens)
        start = self.num_latent_tokens
        weights: Tensor = self.fc_weight(out[start:-1] + tokens[start:-1])
        bias: Tensor = self.fc_bias(out[-1])
        return weights, bias


class DynamicEmbedding(nn.Module):
    """Patch embedding whose ``Conv2d(C → D, kernel = stride = p)`` kernel is generated from wavelengths.

    Args:
        patch_size: patch size ``p``.
        embed_dim: token width ``D``.
        wave_dim: width of the wavelength tokens.
        num_latent_tokens: weight tokens of the generator.
    """

    def __init__(
        self, patch_size: int, embed_dim: int, wave_dim: int = WAVE_DIM, num_latent_tokens: int = NUM_LATENT_TOKENS
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.wave_dim = wave_dim
        self.weight_generator = WavesTransformer(wave_dim, patch_size**2 * embed_dim, num_latent_tokens, embed_dim)
        self.fclayer = FCBlock(wave_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        """Clay's ``initialize_weights``: xavier-uniform weights and zero biases for every Linear inside."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def generate_kernel(self, waves: Tensor) -> tuple[Tensor, Tensor]:
        """The conv kernel ``[D, C, p, p]`` (already × :data:`KERNEL_SCALE`) and bias ``[D]`` for ``waves``.

        Args:
            waves: ``[C]`` central wavelengths in µm, in channel order.
        """
        encoded = self.fclayer(posemb_sincos_1d(waves, self.wave_dim))
        weight, bias = self.weight_generator(encoded)
        p = self.patch_size
        # Each wave token gives one input channel's slice, laid out (cout, k1, k2).
        kernel = weight.reshape(waves.shape[0], self.embed_dim, p, p).transpose(0, 1)
        return kernel * KERNEL_SCALE, bias

    def forward(self, image: Tensor, waves: Tensor) -> Tensor:
        """Embed ``[B, C, H, W]`` into ``[B, (H/p)·(W/p), D]`` tokens (row-major)."""
        kernel, bias = self.generate_kernel(waves)
        out = F.conv2d(image, kernel.to(image.dtype), bias=bias.to(image.dtype), stride=self.patch_size)
        return out.flatten(2).transpose(1, 2)
