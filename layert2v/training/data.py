"""Training clips: the sources (index, K) -> LayeredVideo, and each step's batch of them.

A source is any picklable callable ``data(index, num_foregrounds) -> LayeredVideo`` that returns the same clip
for the same pair in any process; ``Trainer(config, data=...)`` takes one, else :func:`build_data` makes the
configured one. A step's indices and foreground count follow from the step number alone, so a resumed run reads
the clips the interrupted one would have read.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..layout import LayerLayout
from ..video import LayeredVideo
from .config import DataConfig, TrainConfig

ClipFn = Callable[[int, int], LayeredVideo]  # a source: data(index, num_foregrounds) -> the same clip in any process


@dataclass(frozen=True)
class Reads:
    """What a stage reads of a clip: its RGB layers (all of them, the full video only, or none) and its alphas."""

    rgb: str  # "all" | "full" | "none"
    alphas: bool

    def rgb_names(self, layout: LayerLayout) -> list[str]:
        return {"all": layout.rgb_names, "full": layout.rgb_names[:1], "none": []}[self.rgb]


@dataclass
class ClipBatch:
    """Clips as the VAE encodes them, stacked where they are made. DataLoader workers hand the main process one
    tensor per field through shared memory: numpy arrays would be pickled through a pipe (about 2.6 MB a clip),
    and stacking 128 clips there takes about as long as a GPU step."""

    rgb: torch.Tensor  # (B, L, 3, T, H, W) in [0, 1]: Reads.rgb_names of the layout, foregrounds premultiplied
    alphas: torch.Tensor  # (B, K, 1, T, H, W); (B, 0, 1, T, H, W) where the stage reads none
    prompts: list[dict[str, Any]]  # each clip's full / background / foreground prompts

    def layers(self, layout: LayerLayout) -> dict[str, torch.Tensor]:
        """Segment name -> (B, C, T, H, W) pixels of every layer stacked here (the latent encoder's input)."""
        out = dict(zip(layout.rgb_names, self.rgb.unbind(1)))
        out.update(zip(layout.alpha_names, self.alphas.unbind(1)))
        return out


@dataclass
class Batch:
    """One step's batch on this process: its step, foreground count, data indices and, where the stage makes
    fresh clips, their pixels (None where a latent cache answers by index)."""

    step: int
    k: int
    indices: list[int]
    clips: ClipBatch | None


def clip_batch(samples: list[LayeredVideo], reads: Reads) -> ClipBatch:
    """Clips with one foreground count -> a ClipBatch of what a stage reads. Workers stack nothing the stage
    throws away."""
    k = samples[0].num_foregrounds
    frames = samples[0].full.shape[:3]
    num_rgb = len(reads.rgb_names(LayerLayout(k)))
    num_alphas = k if reads.alphas else 0
    rgb = torch.empty(len(samples), num_rgb, 3, *frames)
    alphas = torch.empty(len(samples), num_alphas, 1, *frames)
    for b, s in enumerate(samples):
        layers = (s.full, s.background, *(s.premultiplied(i) for i in range(1, k + 1)))  # layout.rgb_names order
        for i, x in enumerate(layers[:num_rgb]):
            rgb[b, i] = torch.from_numpy(x).permute(3, 0, 1, 2)
        for i in range(num_alphas):
            alphas[b, i, 0] = torch.from_numpy(s.alphas[i])
    return ClipBatch(rgb, alphas, [s.prompts for s in samples])


def batch_indices(cfg: TrainConfig, step: int, num_processes: int = 1, process_index: int = 0
                  ) -> tuple[list[int], int]:
    """The data indices of a step's batch on one process and its number of foregrounds (one K per batch).
    Each micro-batch of a step (gradient accumulation) is a step of its own here: see ``Trainer.micro_step``."""
    k = random.Random(cfg.data.seed * 1_000_003 + step).randint(*cfg.data.num_foregrounds)
    size = cfg.train.batch_size
    first = (step * num_processes + process_index) * size
    return [first + i for i in range(size)], k


class Clips(Dataset):
    """The clips ``data(i, k)`` for the given indices, so DataLoader workers can make (and stack) them."""

    def __init__(self, data: ClipFn, indices: list[int], k: int):
        self.data, self.indices, self.k = data, indices, k

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> LayeredVideo:
        return self.data(self.indices[j], self.k)


class StepBatches(Dataset):
    """Micro-step -> its Batch with fresh clips: DataLoader workers make the coming steps' clips while the current
    one trains (every stage without a latent cache)."""

    def __init__(self, data: ClipFn, cfg: TrainConfig, reads: Reads, num_processes: int, process_index: int):
        self.data, self.cfg, self.reads = data, cfg, reads
        self.num_processes, self.process_index = num_processes, process_index

    def __len__(self) -> int:
        return self.cfg.train.steps * self.cfg.train.gradient_accumulation

    def __getitem__(self, micro_step: int) -> Batch:
        indices, k = batch_indices(self.cfg, micro_step, self.num_processes, self.process_index)
        return Batch(micro_step, k, indices, clip_batch([self.data(i, k) for i in indices], self.reads))


def as_is(item: Any) -> Any:
    """collate_fn for items that are whole batches already (a module function, so workers can unpickle it)."""
    return item


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, C) float [0, 1] -> (1, C, T, H, W)."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)[None].float()


class WorldClips:
    """(index, K) -> the procedural world's training clip: the same clip for the same pair, in any process."""

    def __init__(self, data: DataConfig):
        self.d = data

    def __call__(self, index: int, k: int) -> LayeredVideo:
        from ..data.world import generate_clip

        d = self.d
        return generate_clip(d.seed * 1_000_003 + index, num_frames=d.frames, height=d.height, width=d.width,
                             num_foregrounds=k, split="train")


def build_data(cfg: TrainConfig) -> ClipFn:
    """The configured clip source: a picklable function (index, num_foregrounds) -> LayeredVideo. The on-disk
    datasets (``folder``: layert2v's format; ``vidlayer``: the VidLayer release) fit their clips to the stage's
    frames and size; opening one checks its samples' metadata, before any decoding."""
    d = cfg.data
    if d.kind == "world":
        return WorldClips(d)
    from ..data.fit import ClipShape

    shape = ClipShape(d.frames, d.height, d.width, d.fps, d.seed)
    if d.kind == "folder":
        from ..data.folder import FolderDataset

        return FolderDataset(d.path, shape)
    if d.kind == "vidlayer":
        from ..data.vidlayer import VidLayerDataset

        return VidLayerDataset(d.path, shape, allow_absolute_paths=d.allow_absolute_paths)
    raise ValueError(f"unknown clip source {d.kind!r}; data.kind is world, folder or vidlayer")
