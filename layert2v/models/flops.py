"""Analytic FLOP count of a LayeredWanTransformer forward, to turn measured seconds into achieved TFLOP/s.

Matmuls only (a multiply-add is 2 FLOPs); norms, modulation, RoPE, softmax and activations are elementwise and
left out. With D = heads x head_dim, F = ffn_dim, L = S x Ls visual tokens (S segments of Ls tokens), P prompts of
Lt text tokens and n_s = prompts segment s may read, each block costs

    self-attention   Q, K, V, out projections   8 L D^2
                     QK^T and AV over L tokens  4 L^2 D
    cross-attention  Q, out projections         4 L D^2
                     K, V of the P prompts      4 P Lt D^2      (projected once, shared by the routing groups)
                     routed QK^T and AV         4 D Lt sum_s Ls n_s
    FFN              two matmuls                4 L D F

and outside the blocks: patch embedding 2 L D C_in p, text embedding 2 P Lt (text_dim D + D^2), the timestep
MLP (per segment) and proj_out 2 L D C_out p. A plain Wan forward over the same L tokens is the same with P = 1
and every token reading its single prompt (sum_s Ls n_s = L). One sampling step is one forward per CFG branch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from math import prod
from typing import Any

from ..layout import LayerLayout
from ..preflight import compression
from .configs import WAN21_VAE

WAN21_COMPRESSION = compression(WAN21_VAE)  # (4, 8)


@dataclass(frozen=True)
class ForwardFlops:
    """FLOPs of one forward of one sample, by part."""

    self_attention_projections: float
    self_attention_scores: float
    cross_attention_projections: float
    cross_attention_scores: float
    ffn: float
    embeddings_and_head: float

    @property
    def total(self) -> float:
        return (self.self_attention_projections + self.self_attention_scores + self.cross_attention_projections
                + self.cross_attention_scores + self.ffn + self.embeddings_and_head)


def latent_grid(config: Mapping[str, Any], frames: int, height: int, width: int,
                vae_factors: tuple[int, int] = WAN21_COMPRESSION) -> tuple[int, int, int]:
    """Tokens per segment along (time, height, width): the VAE's (temporal, spatial) factors (Wan2.1's 4x/8x unless
    given: ``preflight.compression(vae.config)``), then the DiT's patch (``config["patch_size"]``)."""
    (temporal, spatial), (p_t, p_h, p_w) = vae_factors, config["patch_size"]
    return ((frames - 1) // temporal + 1) // p_t, height // spatial // p_h, width // spatial // p_w


def _forward_flops(config: Mapping[str, Any], tokens: int, prompts: int, text_len: int, routed_pairs: int,
                   timesteps: int) -> ForwardFlops:
    d = config["num_attention_heads"] * config["attention_head_dim"]
    f, blocks, patch = config["ffn_dim"], config["num_layers"], prod(config["patch_size"])
    per_block = {
        "self_attention_projections": 8 * tokens * d * d,
        "self_attention_scores": 4 * tokens * tokens * d,
        "cross_attention_projections": 4 * tokens * d * d + 4 * prompts * text_len * d * d,
        "cross_attention_scores": 4 * d * text_len * routed_pairs,
        "ffn": 4 * tokens * d * f,
    }
    outside = (2 * tokens * d * config["in_channels"] * patch + 2 * tokens * d * config["out_channels"] * patch
               + 2 * prompts * text_len * (config["text_dim"] * d + d * d)
               + 2 * timesteps * (config["freq_dim"] * d + d * d + d * 6 * d))
    return ForwardFlops(**{k: float(v * blocks) for k, v in per_block.items()}, embeddings_and_head=float(outside))


def layered_forward_flops(config: Mapping[str, Any], layout: LayerLayout, frames: int, height: int, width: int,
                          text_len: int = 512, vae_factors: tuple[int, int] = WAN21_COMPRESSION) -> ForwardFlops:
    """One layered forward of one sample: every segment ``frames`` x ``height`` x ``width`` pixels (see
    :func:`latent_grid` for ``vae_factors``)."""
    per_segment = prod(latent_grid(config, frames, height, width, vae_factors))
    routed = sum(per_segment * len(layout.visible_prompts(seg)) for seg in layout.segments)
    return _forward_flops(config, layout.num_segments * per_segment, layout.num_prompts, text_len, routed,
                          layout.num_segments)


def plain_forward_flops(config: Mapping[str, Any], tokens: int, text_len: int = 512) -> ForwardFlops:
    """One plain Wan forward of one sample over ``tokens`` visual tokens and one prompt."""
    return _forward_flops(config, tokens, 1, text_len, tokens, 1)


def sampling_flops(forward: ForwardFlops, steps: int, cfg: bool = True) -> float:
    """A whole denoising run: one forward per step and CFG branch (batched or not, the FLOPs are the same)."""
    return forward.total * steps * (2 if cfg else 1)
