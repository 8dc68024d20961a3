"""Stage 5, the quality check: the weight-free checks that always run, and the paper's key-frame judge rule.

Weight-free (metric definitions are the project's, from :mod:`layert2v.eval.layers`):

- ``recomposite_psnr``: the foregrounds over the background against the input, >= ``min_recomposite_psnr``;
- ``coverage_k``: mean alpha of foreground k (its share of the frame), within [min_coverage, max_coverage];
- ``alpha_stability``: mean |a_t - a_{t-1}|, <= ``max_alpha_instability``;
- ``fg_leakage``: share of background pixels under a matte that carry the foreground's colour, <= max_leakage.

Judge (appendix C.2): every ``key_interval`` frames a strip [original | mask | background | foreground on black]
is scored (bg_score, fg_score) in 0..10; the interval [N, N + key_interval] qualifies when both scores at both
ends are >= ``min_judge_score``. The clip keeps its longest run of qualifying intervals, or is rejected.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from ...eval.layers import alpha_change_curve, fg_leakage_counts, mean_squared_error, psnr_of
from ...video import LayeredVideo
from .config import Quality


class Scores:
    """The weight-free scores of a clip given in consecutive parts (``layert2v decompose`` streams a long clip in
    windows): each part is scored with :mod:`layert2v.eval.layers`' definitions and the parts are pooled, so the
    result is what the whole clip in one piece would score (up to float rounding)."""

    def __init__(self) -> None:
        self.frames = 0
        self.squared_error = 0.0  # recomposite MSE x frames
        self.coverage: list[float] = []  # mean alpha x frames, per foreground
        self.changes: list[float] = []  # alpha_stability's per-frame-pair values
        self.leaking = self.covered = 0
        self._last: list[np.ndarray] | None = None  # the previous part's last mattes

    def add(self, part: LayeredVideo) -> Scores:
        t = part.num_frames
        self.frames += t
        self.squared_error += mean_squared_error(part.composite(), part.full) * t
        if not self.coverage:
            self.coverage = [0.0] * part.num_foregrounds
        for k, alpha in enumerate(part.alphas):
            self.coverage[k] += float(alpha.mean(dtype=np.float64)) * t
        if self._last is not None:  # the pair across the seam
            seam = [np.stack([a0, a[0]]) for a0, a in zip(self._last, part.alphas)]
            self.changes += alpha_change_curve(seam).tolist()
        if t > 1:
            self.changes += alpha_change_curve(part.alphas).tolist()
        self._last = [a[-1].copy() for a in part.alphas]
        leaking, covered = fg_leakage_counts(part)
        self.leaking, self.covered = self.leaking + leaking, self.covered + covered
        return self

    def scores(self) -> dict[str, Any]:
        out: dict[str, Any] = {"recomposite_psnr": psnr_of(self.squared_error / self.frames)}
        for k, total in enumerate(self.coverage, start=1):
            out[f"coverage_{k}"] = total / self.frames
        out["alpha_stability"] = float(np.mean(self.changes)) if self.changes else 0.0
        out["fg_leakage"] = self.leaking / self.covered if self.covered else None
        return out


def weight_free_scores(video: LayeredVideo) -> dict[str, Any]:
    """recomposite_psnr, coverage_k, alpha_stability and fg_leakage of a whole clip."""
    return Scores().add(video).scores()


def weight_free_failures(scores: dict[str, Any], quality: Quality) -> list[str]:
    """The reasons `scores` fail the bar (empty when they pass)."""
    out = []
    if scores["recomposite_psnr"] < quality.min_recomposite_psnr:
        out.append(f"recomposite PSNR {scores['recomposite_psnr']:.1f} dB < {quality.min_recomposite_psnr:g}")
    for key, value in scores.items():
        if key.startswith("coverage_") and not quality.min_coverage <= value <= quality.max_coverage:
            out.append(f"foreground {key[9:]} covers {value:.3f} of the frame, outside "
                       f"[{quality.min_coverage:g}, {quality.max_coverage:g}]")
    if scores["alpha_stability"] > quality.max_alpha_instability:
        out.append(f"alpha instability {scores['alpha_stability']:.3f} > {quality.max_alpha_instability:g}")
    if scores["fg_leakage"] is not None and scores["fg_leakage"] > quality.max_leakage:
        out.append(f"background leakage {scores['fg_leakage']:.3f} > {quality.max_leakage:g}")
    return out


def key_frames(num_frames: int, interval: int) -> list[int]:
    """0, interval, 2 interval, ... up to the last frame (which is always included)."""
    keys = list(range(0, num_frames, interval))
    if keys[-1] != num_frames - 1:
        keys.append(num_frames - 1)
    return keys


def _to_image(array: np.ndarray) -> Image.Image:
    return Image.fromarray(np.rint(np.clip(array, 0.0, 1.0) * 255).astype(np.uint8))


def panel(video: LayeredVideo, t: int) -> Image.Image:
    """The judge's strip for frame t: original | union of masks (white) | background | foregrounds on black."""
    mask = np.zeros(video.full.shape[1:3], np.float32)
    fg = np.zeros(video.full.shape[1:], np.float32)
    for k in video.layout.composite_order:
        a = video.alphas[k - 1][t]
        mask = np.maximum(mask, a)
        fg = video.foregrounds[k - 1][t] * a[..., None] + fg * (1.0 - a[..., None])
    strip = np.concatenate([video.full[t], np.repeat(mask[..., None], 3, -1), video.background[t], fg], axis=1)
    return _to_image(strip)


def qualified_span(scores: dict[int, tuple[int, int]], keys: list[int], minimum: int) -> tuple[int, int] | None:
    """The longest [first, last] frame span whose consecutive key frames all score >= minimum on both counts."""
    good = [all(v >= minimum for v in scores.get(k, (-1, -1))) for k in keys]
    best: tuple[int, int] | None = None
    i = 0
    while i < len(keys):
        if not good[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(keys) and good[j + 1]:
            j += 1
        if j > i and (best is None or keys[j] - keys[i] > best[1] - best[0]):
            best = (keys[i], keys[j])
        i = j + 1
    if best is None and len(keys) == 1 and good[0]:
        best = (0, keys[0])
    return best
