"""Rectified flow for layered latents: timestep sampling, interpolation and LayerT2V's three losses.

Conventions (LayerT2V §3): z_t = (1 - t) z0 + t z1 with z0 the data and z1 ~ N(0, I) one shared noise over all
segments; the model predicts the velocity v = z1 - z0, so z0_hat = z_t - t v. The model's timestep input is
1000 t, as in Wan. Condition segments sit at t = 0 (z_t = z0) and are left out of every loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .layout import BACKGROUND, FULL, LayerLayout
from .models.vae import alpha_gradient_loss

NUM_TRAIN_TIMESTEPS = 1000


def sample_timesteps(
    batch: int, mean: float = 0.5, std: float = 1.0, generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Logit-normal t in (0, 1): sigmoid of N(mean, std) (appendix A: mean 0.5, std 1.0)."""
    u = torch.randn(batch, generator=generator, device=device) * std + mean
    return torch.sigmoid(u)


def interpolate(z0: torch.Tensor, z1: torch.Tensor, t_segments: torch.Tensor, layout: LayerLayout) -> torch.Tensor:
    """z_t per segment: t_segments is (B, S); condition segments (t = 0) stay clean."""
    return mix(z0, z1, expand_segments(t_segments, z0, layout))


def interpolate_clip(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """z_t of unlayered latents (B, C, T', H', W') at one t per sample (B,) (plain text-to-video)."""
    return mix(z0, z1, t.view(-1, *[1] * (z0.ndim - 1)))


def mix(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(1 - t) z0 + t z1, t broadcast against the latents."""
    return (1.0 - t) * z0 + t * z1


def expand_segments(values: torch.Tensor, like: torch.Tensor, layout: LayerLayout) -> torch.Tensor:
    """(B, S) per-segment values -> broadcastable to (B, C, S*T', H', W') latents."""
    per_seg = like.shape[2] // layout.num_segments
    return values.repeat_interleave(per_seg, dim=1)[:, None, :, None, None].to(like.dtype)


def downsample_alpha(alpha: torch.Tensor, latent_shape: tuple[int, int, int]) -> torch.Tensor:
    """GT alpha (B, 1, T, H, W) -> the latent grid (B, 1, T', H', W') (Ã of eq. 10).

    Wan's causal VAE maps frame 0 to latent frame 0 and each following group of frames to one latent frame, so
    time is averaged in those groups; space is area-averaged.
    """
    t_lat, h_lat, w_lat = latent_shape
    b, _, t, h, w = alpha.shape
    first, rest = alpha[:, :, :1], alpha[:, :, 1:]
    if t_lat > 1:
        group = rest.shape[2] // (t_lat - 1)
        rest = rest.reshape(b, 1, t_lat - 1, group, h, w).mean(3)
        frames = torch.cat([first, rest], dim=2)
    else:
        frames = first
    frames = frames.flatten(1, 2)  # (B, T', H, W)
    frames = F.adaptive_avg_pool2d(frames, (h_lat, w_lat))
    return frames.unflatten(1, (1, t_lat))


def composite_latents(
    parts: dict[str, torch.Tensor], alphas_small: list[torch.Tensor], layout: LayerLayout, empty: torch.Tensor
) -> torch.Tensor:
    """Premultiplied latent over operator in layer order: z = z_bg; z = z_fg_k + (z - z_empty) (1 - Ã_k).

    ``empty`` is the latent of an empty layer (an all-black clip). Eq. 10 writes z_fg + z (1 - Ã), which holds
    only for an encoder that maps black to 0. A VAE does not (Wan's normalised latent of black is far from 0), so
    the premultiplied foreground's latent carries that offset and eq. 10 counts it once per layer. Treating the
    encoder as affine removes it: on ground-truth world clips the latent composite then misses the full video's
    latent by an MSE of 0.04 (K = 1) and 0.10 (K = 3) instead of 0.72 and 5.97.
    """
    z = parts[BACKGROUND]
    for k in layout.composite_order:
        z = parts[layout.foreground_name(k)] + (z - empty) * (1.0 - alphas_small[k - 1])
    return z


@dataclass
class LossWeights:
    """Appendix A defaults."""

    cons: float = 0.1
    mask: float = 0.1
    grad: float = 0.1


def layered_flow_loss(
    velocity: torch.Tensor,
    z0: torch.Tensor,
    z1: torch.Tensor,
    z_t: torch.Tensor,
    t_segments: torch.Tensor,
    layout: LayerLayout,
    alphas: torch.Tensor | None = None,
    decode_alpha: Callable[[torch.Tensor], torch.Tensor] | None = None,
    weights: LossWeights | None = None,
    empty_latent: torch.Tensor | None = None,
    generated: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """L_FM + λ_cons L_cons + λ_mask L_mask (eq. 9-12) on generated segments only.

    velocity, z0, z1, z_t: (B, C, S*T', H', W'); t_segments: (B, S); alphas: GT mattes (B, K, T, H, W) in
    [0, 1], needed for L_cons and L_mask; decode_alpha: the (frozen) alpha path decoder for L_mask, or None to
    skip that term; empty_latent: the latent of an empty layer, (1, C, T', H', W'), needed for L_cons (see
    :func:`composite_latents`); generated: (B, S) 1/0 per sample and segment when samples give different segments
    (the variant mix, :mod:`layert2v.training.variants`), else ``layout.generated`` holds for every sample.
    """
    weights = weights or LossWeights()
    if generated is None:
        generated = torch.tensor(layout.generated, dtype=z0.dtype, device=z0.device).expand(z0.shape[0], -1)
    gen = expand_segments(generated, z0, layout)  # (B, 1, S*T', 1, 1)
    n_gen = gen.sum() * z0.shape[1] * z0.shape[3] * z0.shape[4]
    fm = ((velocity.float() - (z1 - z0).float()) ** 2 * gen).sum() / n_gen
    losses = {"fm": fm}
    total = fm

    if alphas is not None and (weights.cons > 0 or weights.mask > 0):
        t = expand_segments(t_segments, z_t, layout)
        z0_hat = z_t.float() - t.float() * velocity.float()
        # Condition segments are known exactly: use the clean latent there.
        z0_hat = z0_hat * gen + z0.float() * (1 - gen)
        parts = layout.split(z0_hat)
        target_full = layout.split(z0.float())[FULL]
        full = layout.index(FULL)
        if weights.cons > 0 and bool((torch.cat([generated[:, :full], generated[:, full + 1:]], 1) > 0).any()):
            if empty_latent is None:
                raise ValueError("L_cons needs empty_latent, the latent of an all-black clip")
            lat_shape = tuple(parts[FULL].shape[2:])
            small = [downsample_alpha(alphas[:, k : k + 1].float(), lat_shape) for k in range(layout.num_foregrounds)]
            cons = F.mse_loss(composite_latents(parts, small, layout, empty_latent.float()), target_full)
            losses["cons"] = cons
            total = total + weights.cons * cons
        if weights.mask > 0 and decode_alpha is not None:
            mask_terms = []
            for k in range(1, layout.num_foregrounds + 1):
                keep = generated[:, layout.alpha(k)] > 0  # samples whose alpha k is generated
                if not bool(keep.any()):
                    continue
                pred = decode_alpha(parts[layout.alpha_name(k)][keep])
                target = alphas[keep, k - 1 : k].to(pred.dtype)
                mask_terms.append(F.smooth_l1_loss(pred, target) + weights.grad * alpha_gradient_loss(pred, target))
            if mask_terms:
                mask = torch.stack(mask_terms).mean()
                losses["mask"] = mask
                total = total + weights.mask * mask
    losses["loss"] = total
    return losses
