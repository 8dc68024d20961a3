"""The world as datasets: :class:`WorldDataset`, endless and deterministic, and :func:`write_dataset`, its first clips
in the project's on-disk format."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from ...video import LayeredVideo
from .render import render
from .sampling import sample_spec
from .specs import ClipSpec, attributes
from .vocabulary import SPLIT_IDS, SPLITS


class WorldDataset(Dataset):
    """The world as an endless, deterministic map-style dataset: item ``i`` is always the same clip.

    Item ``i`` is clip seed ``seed * 2**32 + i`` of ``split``, so ``WorldDataset()[i]`` equals
    ``generate_clip(i)``. Use ``DataLoader(..., collate_fn=list)``: items are LayeredVideo objects.
    """

    def __init__(self, length: int = 1_000_000, *, seed: int = 0, split: str = "train", **options: Any):
        if length < 1 or seed < 0 or split not in SPLIT_IDS:
            raise ValueError(f"need length >= 1, seed >= 0 and split in {SPLITS}; got {length}, {seed}, {split!r}")
        self.length, self.seed, self.split = length, seed, split
        self.options = options  # sample_spec's num_frames, height, width, num_foregrounds, fps
        self.spec(0)  # a bad option fails here, not at the first item

    def __len__(self) -> int:
        return self.length

    def _index(self, index: int) -> int:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} clips")
        return index % self.length

    def spec(self, index: int) -> ClipSpec:
        """Ground-truth attributes of item ``index``."""
        return sample_spec(self.seed * 2**32 + self._index(index), split=self.split, **self.options)

    def __getitem__(self, index: int) -> LayeredVideo:
        return render(self.spec(index))


def write_dataset(directory: str | Path, n: int, *, seed: int = 0, split: str = "train", overwrite: bool = False,
                  **options: Any) -> Path:
    """Write the first ``n`` clips of ``WorldDataset(seed=seed, split=split, ...)`` in the project's dataset format
    (``metadata.jsonl`` plus one saved LayeredVideo per sample; see :mod:`layert2v.data.folder`). Each metadata
    line also carries the clip's ``seed``, ``split`` and ground-truth ``attributes``. ``options`` are
    :func:`~layert2v.data.world.sampling.sample_spec`'s (num_frames, height, width, num_foregrounds, fps)."""
    from ..folder import write_folder

    dataset = WorldDataset(max(n, 1), seed=seed, split=split, **options)

    def items() -> Iterator[tuple[LayeredVideo, dict[str, Any]]]:
        for i in range(n):
            spec = dataset.spec(i)
            yield render(spec), {"seed": spec.seed, "split": split, "attributes": attributes(spec)}

    return write_folder(directory, items(), overwrite=overwrite)
