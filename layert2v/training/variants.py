"""LayerFlow's variants in one model: per training sample, which segments are given clean instead of generated.

  text         nothing given                                 text -> every layer
  background   the background                                bg -> foregrounds (and full)
  foregrounds  every foreground with its alpha               fg -> background (and full)
  full         the full video                                decomposition into layers
  all_but_one  background and every foreground pair but one  regenerate that one foreground (its pair and full)

A config's ``variants`` maps these names to weights (the mix); each sample draws one from a generator keyed by its
place in the data stream, so a resumed or distributed run draws what one process would. Given segments sit at
t = 0 and stay out of the loss; the draw also picks, for ``boxes`` > 0, which foregrounds carry their box masks
(trained box conditioning, :class:`~layert2v.models.transformer.LayeredWanTransformer`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping

import numpy as np

from ..layout import BACKGROUND, FULL, LayerLayout

VARIANTS = ("text", "background", "foregrounds", "full", "all_but_one")


def given_segments(variant: str, layout: LayerLayout, rng: random.Random) -> tuple[str, ...]:
    """The segment names a variant gives for ``layout``; ``all_but_one`` draws its regenerated foreground from
    ``rng``."""
    pairs = [(layout.foreground_name(k), layout.alpha_name(k)) for k in layout.composite_order]
    if variant == "text":
        return ()
    if variant == "background":
        return (BACKGROUND,)
    if variant == "foregrounds":
        return tuple(name for pair in pairs for name in pair)
    if variant == "full":
        return (FULL,)
    if variant == "all_but_one":
        regenerated = rng.randrange(len(pairs))
        return (BACKGROUND, *(name for i, pair in enumerate(pairs) if i != regenerated for name in pair))
    raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")


def check_mix(mix: Mapping[str, float]) -> None:
    """Refuse a mix with unknown names, negative weights or nothing to draw, naming the fix."""
    unknown = sorted(set(mix) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown} in `variants`; choose from {', '.join(VARIANTS)}")
    bad = {k: v for k, v in mix.items() if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0}
    if bad:
        raise ValueError(f"`variants` weights must be numbers >= 0, got {bad}")
    if mix and sum(mix.values()) <= 0:
        raise ValueError("`variants` weights sum to 0; give at least one variant a positive weight")


class VariantSampler:
    """Draws each sample's given segments and box-carrying foregrounds from the config's mix.

    Args:
        mix: variant name -> weight (relative); empty means every sample is ``text``.
        boxes: share of foregrounds (each drawn on its own) that carry their box masks; 0 for none.
        seed: the run's seed; a sample's draw depends on (seed, index) only.
    """

    def __init__(self, mix: Mapping[str, float], boxes: float = 0.0, seed: int = 0):
        check_mix(mix)
        if not 0.0 <= boxes <= 1.0:
            raise ValueError(f"`boxes` is a share of foregrounds, in [0, 1]; got {boxes}")
        self.names = [n for n in VARIANTS if mix.get(n, 0) > 0] or ["text"]
        self.weights = [float(mix.get(n, 1.0)) for n in self.names]
        self.boxes = boxes
        self.seed = seed

    def _rng(self, index: int) -> random.Random:
        return random.Random(self.seed * 1_000_033 + index)

    def variant(self, index: int) -> str:
        return self._rng(index).choices(self.names, self.weights)[0]

    def draw(self, index: int, layout: LayerLayout) -> tuple[str, tuple[str, ...], tuple[bool, ...]]:
        """(variant, given segment names, per foreground 1..K whether it carries its box) for sample ``index``."""
        rng = self._rng(index)
        variant = rng.choices(self.names, self.weights)[0]
        given = given_segments(variant, layout, rng)
        with_box = tuple(rng.random() < self.boxes for _ in layout.composite_order)
        return variant, given, with_box

    def generated(self, indices: list[int], layout: LayerLayout) -> np.ndarray:
        """(B, S) float32, 1 where a sample's segment is generated, 0 where given."""
        rows = []
        for index in indices:
            _, given, _ = self.draw(index, layout)
            rows.append([0.0 if name in given else 1.0 for name in layout.names])
        return np.asarray(rows, dtype=np.float32)


def boxes_from_alphas(alphas: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """(T, H, W) matte -> (T, 4) normalised boxes (x0, y0, x1, y1) around the pixels above ``threshold``; a frame
    where the object is absent gets an empty box (0, 0, 0, 0), which covers nothing."""
    t, h, w = alphas.shape
    out = np.zeros((t, 4), dtype=np.float64)
    for i in range(t):
        ys, xs = np.nonzero(alphas[i] > threshold)
        if len(xs):
            out[i] = (xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h)
    return out
