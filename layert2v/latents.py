"""Layer pixels <-> layered latents: the one encoder that training and the pipeline's given layers share, and the
pipeline's decoder.

RGB layers (full, background, premultiplied foregrounds, eq. 3) go through the RGB VAE in one batched call, alpha
mattes through the alpha path in another; the latents are placed in their segments by the layout. Decoding splits
them by the layout the same way and unpremultiplies the foregrounds.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from diffusers import AutoencoderKLWan

from .layout import FOREGROUND, LayerLayout, Segment
from .models.vae import AlphaPath, decode_rgb, encode_rgb
from .preflight import compression

VAE_ENCODE_CHUNK = 4  # AutoencoderKLWan._encode: frame 0, then chunks of 4 frames


def encode_segments(vae: AutoencoderKLWan, alpha_path: AlphaPath, layers: Mapping[str, torch.Tensor]
                    ) -> dict[str, torch.Tensor]:
    """Segment name -> pixels in [0, 1], (B, 3, T, H, W) for RGB segments (foregrounds premultiplied) and
    (B, 1, T, H, W) for alphas -> segment name -> normalised latents (B, C, T', H', W')."""
    rgb = [n for n in layers if Segment.from_name(n).is_rgb]
    alpha = [n for n in layers if not Segment.from_name(n).is_rgb]
    out: dict[str, torch.Tensor] = {}
    for names, encode in ((rgb, lambda x: encode_rgb(vae, x)), (alpha, lambda x: alpha_path.encode(vae, x))):
        if not names:
            continue
        stacked = torch.stack([layers[n] for n in names], dim=1)  # (B, n, ...): each clip's layers side by side
        latents = encode(stacked.flatten(0, 1)).unflatten(0, stacked.shape[:2])
        out.update((n, latents[:, i]) for i, n in enumerate(names))
    return out


def encode_layered(vae: AutoencoderKLWan, alpha_path: AlphaPath, layers: Mapping[str, torch.Tensor],
                   layout: LayerLayout) -> torch.Tensor:
    """Layer pixels -> latents concatenated in layout order (B, C, S*T', H', W'); segments not in ``layers`` are
    zeros (the pipeline's generated segments, which its noise replaces)."""
    return _in_layout(encode_segments(vae, alpha_path, layers), layout)


def _in_layout(parts: Mapping[str, torch.Tensor], layout: LayerLayout) -> torch.Tensor:
    like = next(iter(parts.values()))
    return layout.concat({n: parts[n] if n in parts else torch.zeros_like(like) for n in layout.names})


def encode_given(vae: AutoencoderKLWan, alpha_path: AlphaPath, given: Mapping[str, np.ndarray], layout: LayerLayout,
                 device: torch.device) -> torch.Tensor:
    """Given layers (name -> frames in [0, 1]: RGB (T, H, W, 3), alphas (T, H, W); a foreground straight, with its
    alpha) -> clean latents placed in their segments (zeros elsewhere), float32 on ``device``.

    diffusers' Wan VAE encodes frame 0 and then 4 frames at a time, dropping a shorter remainder: with the
    built-in VAE (2x in time) a clip of 4k+3 frames would lose its last two. Such clips are encoded with their
    last frame repeated up to 4k+1 and the extra latent frame cut off; the encoder is causal, so the latents
    kept are those of the clip's own frames.
    """
    layers = {}
    for name, frames in given.items():
        x = torch.from_numpy(np.asarray(frames, dtype=np.float32)).to(device)
        segment = layout.segment(name)
        if not segment.is_rgb:
            layers[name] = x[None, None]
            continue
        if segment.kind == FOREGROUND:  # RGB VAE sees premultiplied foregrounds
            alpha = torch.from_numpy(np.asarray(given[segment.partner], np.float32))
            x = x * alpha.to(device)[..., None]
        layers[name] = x.permute(3, 0, 1, 2)[None]
    num_frames = next(iter(layers.values())).shape[2]
    pad = -(num_frames - 1) % VAE_ENCODE_CHUNK
    if pad:
        layers = {n: torch.cat([x, x[:, :, -1:].expand(-1, -1, pad, -1, -1)], dim=2) for n, x in layers.items()}
    parts = encode_segments(vae, alpha_path, layers)
    latent_frames = (num_frames - 1) // compression(vae.config)[0] + 1
    return _in_layout({n: z[:, :, :latent_frames].float() for n, z in parts.items()}, layout)


def decode_layered(vae: AutoencoderKLWan, alpha_path: AlphaPath, latents: torch.Tensor,
                   layout: LayerLayout) -> dict[str, np.ndarray]:
    """Layered latents -> segment name -> frames in [0, 1] (RGB (T, H, W, 3), alphas (T, H, W)): one batched RGB
    decode, one batched alpha decode; foregrounds unpremultiplied (0 where the alpha is below 1/255)."""
    parts = layout.split(latents)
    rgb_names, alpha_names = layout.rgb_names, layout.alpha_names
    rgb = decode_rgb(vae, torch.cat([parts[n] for n in rgb_names]))
    alpha = alpha_path.decode(vae, torch.cat([parts[n] for n in alpha_names]))
    out = {n: rgb[i].permute(1, 2, 3, 0).clamp(0, 1).cpu().numpy() for i, n in enumerate(rgb_names)}
    out.update({n: alpha[i, 0].cpu().numpy() for i, n in enumerate(alpha_names)})
    for k in layout.composite_order:
        fg = layout.foreground_name(k)
        a = out[layout.alpha_name(k)][..., None]
        out[fg] = np.where(a > 1 / 255, np.clip(out[fg] / np.maximum(a, 1e-6), 0, 1), 0.0)
    return out
