"""The RGB VAE (diffusers' AutoencoderKLWan) and LayerT2V's alpha path through it.

Alpha mattes are single-channel, sparse and near-binary; the RGB VAE handles them poorly. LayerT2V's stage 1
keeps the pretrained encoder frozen (so alpha latents stay in the space the DiT knows), adds a lightweight
projection head after it, and adapts the decoder with LoRA. The alpha is replicated to 3 channels on the way in
and the 3 decoded channels are averaged on the way out.

The decoder LoRA is applied as a temporary weight parametrisation (W + B A) while the alpha path decodes, so the
same VAE object keeps decoding RGB unchanged and its state dict keeps Wan's names. (peft's Conv3d LoRA cannot be
used here: Wan's causal convolutions pad and cache frames inside ``forward``, which peft's side branch bypasses.)
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import AutoencoderKLWan
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch.nn.utils import parametrize


def _latent_stats(vae: AutoencoderKLWan, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean, device=like.device, dtype=like.dtype).view(shape)
    std = torch.tensor(vae.config.latents_std, device=like.device, dtype=like.dtype).view(shape)
    return mean, std


def encode_rgb(vae: AutoencoderKLWan, video: torch.Tensor) -> torch.Tensor:
    """(B, 3, T, H, W) in [0, 1] -> normalised latents (B, z, T', H', W') (posterior mode, Wan's normalisation)."""
    x = video.to(vae.dtype) * 2.0 - 1.0
    mu = vae.encode(x).latent_dist.mode()
    mean, std = _latent_stats(vae, mu)
    return (mu - mean) / std


@torch.no_grad()
def empty_latent(vae: AutoencoderKLWan, num_frames: int, height: int, width: int) -> torch.Tensor:
    """The normalised latent (1, z, T', H', W') of an all-black clip: what a premultiplied foreground's latent is
    outside its object, and L_cons's empty layer (see ``flow.composite_latents``). Not 0 for a trained VAE."""
    black = torch.zeros(1, 3, num_frames, height, width, device=vae.device, dtype=vae.dtype)
    return encode_rgb(vae, black).float()


def decode_unclamped(vae: AutoencoderKLWan, z: torch.Tensor) -> torch.Tensor:
    """``vae.decode(z)`` without its final clamp to [-1, 1], for training losses.

    The clamp has no gradient outside [-1, 1]. Targets here sit on that edge (black premultiplied foregrounds,
    binary alphas), so a decoder that overshoots them stops learning everywhere. The decoder's own output is
    captured with a hook, so diffusers' frame-by-frame causal decoding is used unchanged.
    """
    if vae.use_tiling or vae.config.patch_size is not None:
        raise ValueError("decode_unclamped needs an untiled VAE without patchification (Wan2.1 layout)")
    chunks: list[torch.Tensor] = []
    handle = vae.decoder.register_forward_hook(lambda module, args, out: chunks.append(out))
    try:
        vae.decode(z)
    finally:
        handle.remove()
    return torch.cat(chunks, dim=2)


def decode_rgb(vae: AutoencoderKLWan, latents: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """Normalised latents -> (B, 3, T, H, W) in [0, 1] (unclamped for training losses: see decode_unclamped)."""
    mean, std = _latent_stats(vae, latents)
    z = (latents * std + mean).to(vae.dtype)
    out = vae.decode(z).sample if clamp else decode_unclamped(vae, z)
    return (out.float() + 1.0) / 2.0


@torch.no_grad()
def init_from_scratch(vae: AutoencoderKLWan) -> AutoencoderKLWan:
    """Initialise a Wan VAE for training from scratch as an image network inflated in time.

    With PyTorch's default init, a from-scratch Wan VAE learns to decode the mean colour within a few dozen steps
    and then ignores its latent: on the first frame two of the three temporal taps of every causal convolution
    see only zero padding, so each one shrinks the signal ~3x, and the latent's path fades before it can be
    learned. Here every 3x3x3 convolution keeps its weight on the newest frame only (He-normal over the spatial
    fan-in), the time convolutions of the resamplers start as frame copies, each residual branch and attention
    output starts at zero (every block is the identity), and biases start at zero. Later temporal training
    grows the other taps from zero.
    """
    for name, module in vae.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.Conv3d)):
            continue
        w = module.weight
        if module.bias is not None:
            module.bias.zero_()
        if name.endswith(("conv2", "proj")):  # last layer of a residual branch / attention output
            w.zero_()
        elif w.dim() == 5 and w.shape[2] > 1 and w.shape[3] == 1 and w.shape[4] == 1:  # resampler time_conv
            w.zero_()
            eye = torch.eye(w.shape[1], dtype=w.dtype)
            for start in range(0, w.shape[0], w.shape[1]):  # upsampling ones emit two frames: copy into both
                w[start:start + w.shape[1], :, -1, 0, 0] = eye
        elif w.dim() == 5 and w.shape[2] > 1:
            w.zero_()
            nn.init.kaiming_normal_(w[:, :, -1], nonlinearity="relu")
        else:
            nn.init.kaiming_normal_(w, nonlinearity="linear")
    return vae


class _LowRankDelta(nn.Module):
    """Parametrisation W -> W + scale * (up @ down).view_as(W). Holds references, not parameters."""

    def __init__(self, down: nn.Parameter, up: nn.Parameter, scale: float):
        super().__init__()
        self._factors = (down, up)
        self.scale = scale

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        down, up = self._factors
        return weight + self.scale * (up @ down).view_as(weight).to(weight.dtype)


def decoder_conv_targets(vae: AutoencoderKLWan) -> list[tuple[str, int, int]]:
    """(name, out_channels, fan_in) of every convolution in the VAE decoder: where the alpha LoRA goes."""
    targets = []
    for name, module in vae.decoder.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Conv3d)):
            w = module.weight
            targets.append((name, w.shape[0], math.prod(w.shape[1:])))
    return targets


class AlphaPath(ModelMixin, ConfigMixin):
    """Projection head after the frozen encoder + LoRA on the decoder, for alpha mattes.

    Build it for a VAE with ``AlphaPath.for_vae(vae, rank)``; it stores only its own small weights.
    """

    @register_to_config
    def __init__(self, z_dim: int = 16, rank: int = 128, targets: list[list] | None = None):
        super().__init__()
        # Zero-initialised residual 1x1x1 projection: starts as the identity on the encoder's latents.
        self.projection = nn.Conv3d(z_dim, z_dim, kernel_size=1)
        nn.init.zeros_(self.projection.weight)
        nn.init.zeros_(self.projection.bias)
        self.lora_down = nn.ParameterDict()
        self.lora_up = nn.ParameterDict()
        self.ranks: dict[str, int] = {}
        for name, out_ch, fan_in in targets or []:
            r = max(1, min(rank, out_ch, fan_in))
            key = name.replace(".", "__")
            down = torch.empty(r, fan_in)
            nn.init.kaiming_uniform_(down, a=math.sqrt(5))
            self.lora_down[key] = nn.Parameter(down)
            self.lora_up[key] = nn.Parameter(torch.zeros(out_ch, r))  # zero: the decoder starts unchanged
            self.ranks[key] = r

    @classmethod
    def for_vae(cls, vae: AutoencoderKLWan, rank: int = 128) -> AlphaPath:
        targets = [list(t) for t in decoder_conv_targets(vae)]
        return cls(z_dim=vae.config.z_dim, rank=rank, targets=targets)

    @contextlib.contextmanager
    def adapted_decoder(self, vae: AutoencoderKLWan) -> Iterator[None]:
        """Temporarily put the LoRA deltas on the VAE decoder's convolutions."""
        modules = dict(vae.decoder.named_modules())
        applied = []
        try:
            for key in self.lora_down:
                conv = modules[key.replace("__", ".")]
                delta = _LowRankDelta(self.lora_down[key], self.lora_up[key], 1.0)
                parametrize.register_parametrization(conv, "weight", delta, unsafe=True)
                applied.append(conv)
            yield
        finally:
            for conv in applied:
                parametrize.remove_parametrizations(conv, "weight", leave_parametrized=False)

    def encode(self, vae: AutoencoderKLWan, alpha: torch.Tensor) -> torch.Tensor:
        """(B, 1, T, H, W) alpha in [0, 1] -> normalised alpha latents."""
        z = encode_rgb(vae, alpha.expand(-1, 3, -1, -1, -1))
        return z + self.projection(z.to(self.projection.weight.dtype)).to(z.dtype)

    def forward(self, vae: AutoencoderKLWan, alpha: torch.Tensor) -> torch.Tensor:
        """Round trip (stage 1's training forward): alpha -> latents -> alpha, unclamped for the loss."""
        return self.decode(vae, self.encode(vae, alpha), clamp=False)

    def decode(self, vae: AutoencoderKLWan, latents: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """Normalised alpha latents -> (B, 1, T, H, W) alpha in [0, 1] (unclamped for training losses)."""
        # cached(): W + B A once per decode, not once per convolution call (Wan decodes frame by frame)
        with self.adapted_decoder(vae), parametrize.cached():
            alpha = decode_rgb(vae, latents, clamp=clamp).mean(dim=1, keepdim=True)
        return alpha.clamp(0.0, 1.0) if clamp else alpha


# ------------------------------------------------------------------ stage-1 losses
def sobel_edges(x: torch.Tensor) -> torch.Tensor:
    """Per-frame Sobel gradient magnitude of (B, 1, T, H, W)."""
    b, c, t, h, w = x.shape
    frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device, dtype=x.dtype)
    k = torch.stack([kx, kx.t()])[:, None]
    g = F.conv2d(F.pad(frames, (1, 1, 1, 1), mode="replicate"), k)
    return torch.sqrt(g.pow(2).sum(1, keepdim=True) + 1e-12)


def ssim_loss(pred: torch.Tensor, target: torch.Tensor, window: int = 7) -> torch.Tensor:
    """1 - SSIM (uniform window) per frame: the structural term of stage 1, needing no downloaded weights."""
    b, c, t, h, w = pred.shape
    p = pred.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    q = target.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    pad = window // 2

    def blur(z: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.pad(z, (pad, pad, pad, pad), mode="reflect"), window, stride=1)

    mu_p, mu_q = blur(p), blur(q)
    var_p = blur(p * p) - mu_p**2
    var_q = blur(q * q) - mu_q**2
    cov = blur(p * q) - mu_p * mu_q
    c1, c2 = 0.01**2, 0.03**2
    ssim = ((2 * mu_p * mu_q + c1) * (2 * cov + c2)) / ((mu_p**2 + mu_q**2 + c1) * (var_p + var_q + c2))
    return 1.0 - ssim.mean()


def alpha_reconstruction_loss(
    pred: torch.Tensor, target: torch.Tensor, lambda_edge: float = 1.0, lambda_struct: float = 1.0
) -> torch.Tensor:
    """Stage 1 (eq. 8): SmoothL1 + lambda_edge * edge L1 + lambda_struct * (1 - SSIM)."""
    rec = F.smooth_l1_loss(pred, target)
    edge = F.l1_loss(sobel_edges(pred), sobel_edges(target))
    return rec + lambda_edge * edge + lambda_struct * ssim_loss(pred, target)


def alpha_gradient_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_grad of eq. 11: L1 between spatial finite-difference gradients of the alphas."""
    dx = lambda z: z[..., :, 1:] - z[..., :, :-1]  # noqa: E731
    dy = lambda z: z[..., 1:, :] - z[..., :-1, :]  # noqa: E731
    return F.l1_loss(dx(pred), dx(target)) + F.l1_loss(dy(pred), dy(target))
