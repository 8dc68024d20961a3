"""The transformer stages' clip latents and prompt embeddings: :class:`LatentCache` encodes each step's clips (or a
fixed set of them, once, before the first step) and their prompts, as :class:`EncodedClip`."""

from __future__ import annotations

import random
from typing import Protocol

import torch
from tqdm.auto import tqdm

from ..layout import LayerLayout
from ..models.text import TextEncoder
from .config import TrainConfig
from .data import Batch, ClipBatch, ClipFn, Clips, Reads, clip_batch


class Encoder(Protocol):
    """What the cache asks of its stage (:class:`~layert2v.training.recipes.LatentRecipe` is one)."""

    cfg: TrainConfig
    data: ClipFn
    reads: Reads
    device: torch.device
    text_encoder: TextEncoder

    def encode(self, clips: ClipBatch, k: int) -> torch.Tensor: ...


class LatentCache:
    """Encoded clips and prompt embeddings of a transformer stage. With ``data.cache`` = N, clip ``index % N`` of
    each foreground count is encoded once (``fill``: in batches before the first step) and kept in host memory;
    with 0, each step's fresh clips are encoded in one VAE call and their prompts are not kept."""

    def __init__(self, recipe: Encoder):
        self.recipe, self.cfg = recipe, recipe.cfg
        self._encoded: dict[tuple[int, int], EncodedClip] = {}
        self._prompt_cache: dict[str, torch.Tensor] = {}

    def of(self, batch: Batch) -> list[EncodedClip]:
        """The encoded clips of a batch: from the cache by index, or its fresh clips encoded in one VAE call."""
        if self.cfg.data.cache:
            return [self.encoded(i, batch.k) for i in batch.indices]
        return self.encode(batch.clips, batch.k)

    def encoded(self, index: int, k: int) -> EncodedClip:
        """A cached clip's latents: clip ``index % N`` is encoded on first use."""
        key = (index % self.cfg.data.cache, k)
        if key not in self._encoded:
            self._encoded[key] = self.encode(clip_batch([self.recipe.data(key[0], k)], self.recipe.reads), k)[0]
        return self._encoded[key]

    def encode(self, clips: ClipBatch, k: int) -> list[EncodedClip]:
        """VAE-encode clips in one batch (a GPU encodes a batch in about the time of one clip)."""
        layout = LayerLayout(k, conditions=self.cfg.conditions)
        with torch.no_grad():
            latents = self.recipe.encode(clips, k).cpu()  # host memory: a step moves only its batch to the device
        no_alphas = torch.empty(0, dtype=torch.float16)  # stage t2v never reads them
        return [EncodedClip(latents[j:j + 1], clips.alphas[j, :, 0].half() if self.recipe.reads.alphas else no_alphas,
                            self.layer_prompts(layout, p))
                for j, p in enumerate(clips.prompts)]

    def layer_prompts(self, layout: LayerLayout, prompts: dict) -> list[str]:
        """A clip's prompts in layout order, in LayerFlow's indexed form when the config asks for it."""
        ordered = layout.layer_prompts(prompts["full"], prompts["background"], prompts["foregrounds"])
        return layout.indexed_prompts(ordered) if self.cfg.layer_index_prompts else ordered

    def fill(self, batch: int, workers: int, show: bool, mine: tuple[int, int] = (0, 1)) -> None:
        """Encode the cached clips of every foreground count, and their prompts, before the first step, ``batch``
        clips per VAE call; ``workers`` processes make the clips while the VAE encodes. ``mine`` = (rank, ranks):
        each process fills only the clips its batches read (index % ranks == rank when the cache divides evenly
        among the processes' batches, which Trainer checks)."""
        from torch.utils.data import DataLoader

        n = self.cfg.data.cache
        if not n:
            return
        rank, ranks = mine
        lo, hi = self.cfg.data.num_foregrounds
        missing = {k: [i for i in range(n) if (i, k) not in self._encoded and self.owned(i, rank, ranks)]
                   for k in range(lo, hi + 1)}
        total = sum(len(indices) for indices in missing.values())
        bar = tqdm(total=total, desc="encode clips", disable=not total or not show)
        for k, indices in missing.items():
            loader = DataLoader(Clips(self.recipe.data, indices, k), batch_size=batch, num_workers=workers,
                                collate_fn=StackFor(self.recipe.reads))
            for start, samples in zip(range(0, len(indices), batch), loader):
                for i, clip in zip(indices[start:start + batch], self.encode(samples, k)):
                    self._encoded[(i, k)] = clip
                bar.update(len(samples.prompts))
        bar.close()
        prompts = list(dict.fromkeys([""] + [p for c in self._encoded.values() for p in c.prompts]))
        for start in range(0, len(prompts), 256):
            self.cache_prompts(prompts[start:start + 256])

    def owned(self, index: int, rank: int, ranks: int) -> bool:
        """Whether cached clip ``index`` is read by process ``rank``'s batches (see ``data.batch_indices``)."""
        size = self.cfg.train.batch_size
        return (index // size) % ranks == rank

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """(P,) prompts -> (P, L, D) on the training device. Cached clips' prompts are encoded once and kept;
        fresh clips' are encoded each step (not kept: their number grows without bound)."""
        encoder, device = self.recipe.text_encoder, self.recipe.device
        if not self.cfg.data.cache:
            unique = list(dict.fromkeys(prompts))
            where = {p: i for i, p in enumerate(unique)}
            return encoder.encode(unique)[[where[p] for p in prompts]].to(device)
        self.cache_prompts(prompts)
        return torch.stack([self._prompt_cache[p] for p in prompts]).to(device)

    def cache_prompts(self, prompts: list[str]) -> None:
        missing = [p for p in dict.fromkeys(prompts) if p not in self._prompt_cache]
        if missing:
            for p, e in zip(missing, self.recipe.text_encoder.encode(missing)):
                self._prompt_cache[p] = e.cpu()  # held in host memory, as the clip cache

    def prompts_of(self, clip: EncodedClip, index: int) -> list[str]:
        """The layer prompts in layout order; all empty for a `prompt_dropout` share (deterministic per sample:
        ``index`` is its place in the data stream)."""
        if random.Random(self.cfg.train.seed * 7919 + index).random() < self.cfg.prompt_dropout:
            return [""] * len(clip.prompts)
        return clip.prompts


class StackFor:
    """collate_fn: samples -> the ClipBatch of what a stage reads (picklable, so workers stack)."""

    def __init__(self, reads: Reads):
        self.reads = reads

    def __call__(self, samples: list) -> ClipBatch:
        return clip_batch(samples, self.reads)


class EncodedClip:
    """A clip as the transformer stages use it: its latents, ground-truth alphas and layer prompts."""

    def __init__(self, latents: torch.Tensor, alphas: torch.Tensor, prompts: list[str]):
        self.latents = latents  # (1, C, S*T', H', W') in layout order; stage t2v: the full video's only
        self.alphas = alphas  # (K, T, H, W), float16 (L_cons and L_mask targets); empty in stage t2v
        self.prompts = prompts  # layout.prompt_names order
