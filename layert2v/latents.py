"""Layered latents from layer pixels: the one encoder that training and the pipeline's conditions share.

RGB layers (full, background, premultiplied foregrounds, eq. 3) go through the RGB VAE in one batched call, alpha
mattes through the alpha path in another; the latents are placed in their segments by the layout.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from diffusers import AutoencoderKLWan

from .layout import LayerLayout, Segment
from .models.vae import AlphaPath, encode_rgb


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
    parts = encode_segments(vae, alpha_path, layers)
    like = next(iter(parts.values()))
    return layout.concat({n: parts[n] if n in parts else torch.zeros_like(like) for n in layout.names})
