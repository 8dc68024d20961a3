"""Training-free trajectory guidance: LayerT2V v1's guided cross-attention, for models not trained with boxes.

**What "steered" means here.** During the first ``steps`` denoising steps, every cross-attention (``attn2``) of
every block adds a bias to its attention logits, before the softmax:

    logit[q, j] += strength * (2 * m_k(q) - 1)     for each key j that is a *content token* of foreground k's prompt

for every query token q of a generated segment that reads foreground k's prompt (``full``, ``foreground_k`` and
``alpha_k``; see ``LayerLayout.visible_prompts``), where m_k(q) in [0, 1] is the share of q's token cell covered by
foreground k's box in the frames that cell spans (``Trajectories.grid_masks`` on ``pipeline.video_multiples``):
``+strength`` inside the box, ``-strength`` outside, in between on its edges. Content tokens are the prompt's own
tokens (non-zero rows of the text encoder's output); the zero padding after them (Wan pads every prompt to a fixed
length) is not biased, and neither is any other prompt. So inside the box a token reads more of the foreground's
description and less of the padding (which carries no content), outside less of it; in the ``full`` segment, which
reads every prompt, the box also shifts attention from the other prompts to foreground k's. Only the conditional
CFG branch is biased; the negative prompt's attention is left alone. Segments that do not read foreground k's
prompt (the background, other foregrounds and their alphas) are untouched.

A bias on *all* of a segment's keys would change nothing (a softmax is shift-invariant); the padding tokens are
what the content tokens compete with in a foreground's segment, which reads one prompt only.

The default path stays the fused one: the pipeline swaps :class:`GuidedCrossAttnProcessor` onto ``attn2`` only for
a call with trajectories, and only the guided steps pass a :class:`BoxGuidance`; without one the processor is
:class:`~layert2v.models.transformer.LayerRoutedAttnProcessor` exactly. Guided groups run PyTorch's SDPA with an
additive mask (flash kernels take no mask); unguided groups keep the configured backend.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import torch

from ..layout import LayerLayout
from .transformer import LayerRoutedAttnProcessor, LogitBias


@dataclass(frozen=True)
class BoxGuidance:
    """Per-call input of :class:`GuidedCrossAttnProcessor` (passed as ``attention_kwargs={"box_guidance": ...}``).

    Args:
        masks: foreground k -> (tokens per segment,) box coverage of each token cell, flattened in token order
            (latent frame, row, column), on the transformer's token grid.
        tokens: (B, P, Lt) 1 on the content tokens of the prompts to steer (the conditional branch's), 0 elsewhere
            (padding, and every token of an unguided batch row such as CFG's negative branch).
        strength: the logit bias at full coverage.
    """

    masks: dict[int, torch.Tensor]
    tokens: torch.Tensor
    strength: float
    # Biases and derived guidances, built once per call: every block and every guided step reuse them.
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def with_tokens(self, tokens: torch.Tensor) -> BoxGuidance:
        return replace(self, tokens=tokens)

    def with_unguided_first(self) -> BoxGuidance:
        """The same guidance for a CFG batch [negative, conditional]: the negative row steers nothing."""
        if "cfg" not in self._cache:
            self._cache["cfg"] = self.with_tokens(torch.cat([torch.zeros_like(self.tokens), self.tokens]))
        return self._cache["cfg"]

    def logit_bias(self, layout: LayerLayout, seg_ids: tuple[int, ...], prompt_ids: tuple[int, ...],
                   queries_per_segment: int, dtype: torch.dtype) -> torch.Tensor | None:
        """(B, 1, len(seg_ids) * Ls, len(prompt_ids) * Lt) additive bias for one routing group; None when nothing in
        the group is guided. Built once per (layout, group, size, dtype) and reused."""
        key = (layout, seg_ids, prompt_ids, queries_per_segment, dtype)
        if key not in self._cache:
            self._cache[key] = self._logit_bias(layout, seg_ids, prompt_ids, queries_per_segment, dtype)
        return self._cache[key]

    def _logit_bias(self, layout: LayerLayout, seg_ids: tuple[int, ...], prompt_ids: tuple[int, ...],
                    queries_per_segment: int, dtype: torch.dtype) -> torch.Tensor | None:
        batch, _, lt = self.tokens.shape
        bias = None
        for k, mask in self.masks.items():
            prompt = layout.prompt_names.index(layout.foreground_name(k))
            if prompt not in prompt_ids:
                continue
            if mask.numel() != queries_per_segment:
                raise ValueError(f"box guidance has {mask.numel()} token cells per segment but the attention sees "
                                 f"{queries_per_segment}; it needs whole segments (no context parallelism)")
            col = prompt_ids.index(prompt)
            sign = (2 * mask.to(self.tokens.device, torch.float32) - 1) * self.strength  # (Ls,)
            weight = self.tokens[:, prompt].float()  # (B, Lt)
            for row, seg in enumerate(seg_ids):
                if not layout.generated[seg]:
                    continue
                if bias is None:
                    bias = torch.zeros(batch, len(seg_ids), queries_per_segment, len(prompt_ids), lt,
                                       device=self.tokens.device)
                bias[:, row, :, col] += sign[None, :, None] * weight[:, None, :]
        if bias is None:
            return None
        return bias.flatten(3, 4).flatten(1, 2)[:, None].to(dtype)


class GuidedCrossAttnProcessor(LayerRoutedAttnProcessor):
    """``attn2``'s processor with trajectory guidance: layer-routed cross-attention plus the box bias of
    :class:`BoxGuidance` when one is passed; exactly :class:`LayerRoutedAttnProcessor` when none is."""

    def logit_bias(self, layout: LayerLayout, box_guidance: BoxGuidance | None = None) -> LogitBias | None:
        return None if box_guidance is None else functools.partial(box_guidance.logit_bias, layout)


@contextlib.contextmanager
def guided_cross_attention_processors(transformer: torch.nn.Module) -> Iterator[None]:
    """Run every block's ``attn2`` with a :class:`GuidedCrossAttnProcessor` (keeping its attention backend) inside the
    ``with``; the previous processors come back afterwards, also on error."""
    previous = [block.attn2.processor for block in transformer.blocks]
    if not all(type(p) is LayerRoutedAttnProcessor for p in previous):
        names = sorted({type(p).__name__ for p in previous})
        raise ValueError(f"trajectory guidance replaces attn2's LayerRoutedAttnProcessor, but this model runs {names}; "
                         "restore the default processors (or drop the trajectories)")
    try:
        for block, old in zip(transformer.blocks, previous):
            new = GuidedCrossAttnProcessor()
            new._attention_backend = old._attention_backend
            new._parallel_config = getattr(old, "_parallel_config", None)
            block.attn2.set_processor(new)
        yield
    finally:
        for block, old in zip(transformer.blocks, previous):
            block.attn2.set_processor(old)


def content_tokens(prompt_embeddings: torch.Tensor) -> torch.Tensor:
    """(..., Lt, D) text-encoder output -> (..., Lt) 1.0 on the prompt's own tokens, 0.0 on the zero padding."""
    return (prompt_embeddings != 0).any(-1).float()
