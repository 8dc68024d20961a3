"""Scoring the editing variants (LayerFlow's given-layer variants and v1's trajectories) against exact truth.

Pure functions on arrays and :class:`~layert2v.video.LayeredVideo` objects, used by
``benchmarks/editing_quality.py``; docs/EVALUATION.md defines each number. Nothing here runs a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..layout import ALPHA, BACKGROUND, FOREGROUND, FULL, Segment
from ..trajectory import DEFAULT_STEPS, DEFAULT_STRENGTH, Trajectories, Trajectory, box_from_alpha
from ..video import LayeredVideo
from . import layers
from .trajectory import (
    HIT_RATE,
    ObjectScore,
    alpha_tracks,
    intersection,
    parse_trajectory,
    score_object,
    summarise,
)


# ------------------------------------------------------------------------------------------- given layers
def layer_array(video: LayeredVideo, name: str) -> np.ndarray:
    """The frames of one layer of ``video`` by its layout name (``full``, ``background``, ``foreground_k``,
    ``alpha_k``)."""
    segment = Segment.from_name(name)
    if segment.kind in (FOREGROUND, ALPHA) and segment.index > video.num_foregrounds:
        raise ValueError(f"{name}: the video has {video.num_foregrounds} foreground(s)")
    if segment.kind == FULL:
        return video.full
    if segment.kind == BACKGROUND:
        return video.background
    if segment.kind == FOREGROUND:
        return video.foregrounds[segment.index - 1]
    return video.alphas[segment.index - 1]


def true_layers(truth: LayeredVideo, names: list[str]) -> dict[str, np.ndarray]:
    """The named layers of ``truth`` as float32 arrays: conditions for ``pipe(conditions=...)``."""
    return {name: np.asarray(layer_array(truth, name), np.float32) for name in names}


def identical(video: LayeredVideo, given: dict[str, np.ndarray]) -> bool:
    """True when every given layer came back bit for bit: same shape and exactly the same values (float32)."""
    if not given:
        raise ValueError("no given layers to compare")
    return all(np.array_equal(layer_array(video, name), np.asarray(frames, np.float32))
               for name, frames in given.items())


# ---------------------------------------------------------------------------------------- decomposition
def decomposition_scores(video: LayeredVideo, truth: LayeredVideo) -> dict[str, float]:
    """A decomposition of ``truth.full`` against the true layers.

    alpha_iou: mean over foregrounds of the volumetric IoU of (alpha > 0.5) with the true matte of the same number;
    background_psnr: the background against the true one; recomposite_psnr: the composite of the video's own layers
    against the input ``truth.full``. The same definitions as ``layert2v eval --gt`` (:mod:`.layers`).
    """
    layers.check_matches(video, truth, "the decomposition")
    return {
        "alpha_iou": float(np.mean([layers.iou(a, g) for a, g in zip(video.alphas, truth.alphas)])),
        "background_psnr": layers.psnr(video.background, truth.background),
        "recomposite_psnr": layers.psnr(video.composite(), truth.full),
    }


def share(hits: list[bool]) -> float | None:
    """The share of True in ``hits``; None for an empty list (nothing was scored)."""
    return float(np.mean(hits)) if hits else None


# ------------------------------------------------------------------------------------------- trajectories
def true_boxes(alphas: list[np.ndarray]) -> dict[int, list]:
    """Per foreground (1-based), the tight pixel box of its true matte (alpha > 0.5) in every frame (None: absent)."""
    return alpha_tracks(alphas)


def paths_cross(alphas: list[np.ndarray]) -> bool:
    """True when the boxes of two different objects overlap in some frame: their paths cross (or touch)."""
    tracks = list(true_boxes(alphas).values())
    return any(intersection(a, b) > 0
               for i, first in enumerate(tracks) for second in tracks[i + 1:] for a, b in zip(first, second))


def keyframe_trajectories(alphas: list[np.ndarray], every: int = 1, strength: float = DEFAULT_STRENGTH,
                          steps: int = DEFAULT_STEPS) -> Trajectories:
    """Trajectories whose key frames are the true boxes at frames 0, every, 2 every, ... and the last frame,
    normalised to [0, 1] (frames where the object is absent are not key frames).

    Between key frames the pipeline interpolates linearly, so with ``every`` > 1 the request departs a little
    from the true path of an object that turns; score against :func:`requested_boxes`, which is what was asked.
    """
    if every < 1:
        raise ValueError(f"key frames every {every} frames: give 1 or more")
    trajectories = []
    for k, alpha in enumerate(alphas, start=1):
        t, h, w = alpha.shape
        keys = {}
        for i in sorted({*range(0, t, every), t - 1}):
            box = box_from_alpha(alpha[i])
            if box is not None:
                keys[i] = (box[0] / w, box[1] / h, box[2] / w, box[3] / h)
        if not keys:
            raise ValueError(f"foreground {k} is absent from every key frame; it has no trajectory to request")
        trajectories.append(Trajectory(k, tuple(keys.items())))
    return Trajectories(tuple(trajectories), strength=strength, steps=steps)


def requested_boxes(trajectories: Trajectories, num_frames: int, height: int, width: int) -> dict[int, list]:
    """The boxes ``trajectories`` request in every frame, in pixels: what ``layert2v eval`` reads from the
    ``trajectory.json`` of a saved video."""
    doc = trajectories.requested_document(num_frames, height, width)
    return parse_trajectory(doc, num_frames, max(trajectories.foregrounds), "requested trajectories")


def trajectory_scores(video: LayeredVideo, requested: dict[int, list]) -> list[ObjectScore]:
    """Each requested object's generated matte box against its requested boxes (eval/trajectory.py)."""
    predicted = alpha_tracks(video.alphas)
    return [score_object(predicted[k], boxes, k) for k, boxes in sorted(requested.items())]


def pooled_trajectory(scores: list[ObjectScore]) -> dict[str, Any]:
    """mIoU and hit-rate@0.5 over all scored objects (``summarise``), with the counts they rest on."""
    out = summarise(scores)
    return {"miou": out["miou"], "hit_rate": out[HIT_RATE], "objects": out["objects"], "frames": out["frames"]}


# ------------------------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Target:
    """What a row must reach: ``at_least`` a number, or a yes/no that must be yes (``at_least`` None)."""

    at_least: float | None = None
    unit: str = ""

    def met(self, measured: float | bool | None) -> bool | None:
        """None when nothing was measured."""
        if measured is None:
            return None
        if self.at_least is None:
            return bool(measured)
        return float(measured) >= self.at_least

    def __str__(self) -> str:
        if self.at_least is None:
            return "yes"
        return f"≥ {self.at_least:g}{' ' + self.unit if self.unit else ''}"


@dataclass(frozen=True)
class Row:
    """One line of the benchmark table. ``target`` None: a reference figure (e.g. without trajectories)."""

    variant: str
    metric: str
    measured: float | bool | None
    target: Target | None
    samples: str
    digits: int = 2

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.met(self.measured)

    def cells(self) -> list[str]:
        if self.measured is None:
            value = "–"
        elif isinstance(self.measured, bool):
            value = "yes" if self.measured else "no"
        else:
            value = f"{self.measured:.{self.digits}f}"
        met = "–" if self.met is None else "yes" if self.met else "no"
        return [self.variant, self.metric, value, "–" if self.target is None else str(self.target), met,
                self.samples]


def format_table(rows: list[Row]) -> str:
    """The rows as one markdown table: variant | metric | measured | target | met | samples."""
    header = ["variant", "metric", "measured", "target", "met", "samples"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row.cells()) + " |" for row in rows])
