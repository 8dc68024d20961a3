""":class:`ClipSource`, what the on-disk datasets share: samples grouped by foreground count, and the trainer's
call ``source(index, k) -> LayeredVideo``, the clip for training index ``index`` with ``k`` foregrounds."""

from __future__ import annotations

from functools import cached_property

from torch.utils.data import Dataset

from ..video import LayeredVideo
from .fit import ClipShape, fit_clip


class ClipSource(Dataset):
    """A map-style dataset of LayeredVideo samples that is also a clip function ``(index, k) -> LayeredVideo``.

    Subclasses give ``__len__``, ``num_foregrounds(i)`` (without decoding) and ``load(i, draw)``. With a
    :class:`~layert2v.data.fit.ClipShape`, every clip is fitted to it; ``draw`` picks the frame window, so
    ``source(index, k)`` is the same clip for the same pair in any process and successive passes over a sample
    read different windows of it.
    """

    shape: ClipShape | None = None
    directory: object = None  # where the samples are, for messages

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.directory})"

    def __len__(self) -> int:
        raise NotImplementedError

    def num_foregrounds(self, index: int) -> int:
        raise NotImplementedError

    def load(self, index: int, draw: int) -> LayeredVideo:
        raise NotImplementedError

    def fit(self, video: LayeredVideo, draw: int) -> LayeredVideo:
        """``video`` fitted to :attr:`shape` (window ``draw``), or unchanged without a shape."""
        return video if self.shape is None else fit_clip(video, self.shape, draw)

    def __getitem__(self, index: int) -> LayeredVideo:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        index %= len(self)
        return self.load(index, draw=index)

    @cached_property
    def by_k(self) -> dict[int, list[int]]:
        """Sample indices per foreground count."""
        groups: dict[int, list[int]] = {}
        for i in range(len(self)):
            groups.setdefault(self.num_foregrounds(i), []).append(i)
        return groups

    def __call__(self, index: int, k: int) -> LayeredVideo:
        """Training clip ``index`` with ``k`` foregrounds: the samples with ``k`` foregrounds in turn."""
        if k not in self.by_k:
            raise ValueError(f"{self} has no sample with {k} foreground(s); set data.num_foregrounds within "
                             f"{sorted(self.by_k)}")
        items = self.by_k[k]
        return self.load(items[index % len(items)], draw=index)
