"""Trajectory following (LayerT2V v1): did each object go where its box trajectory asked it to?

Boxes are [x0, y0, x1, y1] in pixels of the saved video, x1/y1 exclusive (a box covering pixel columns
2..4 is [2, y0, 5, y1]); ``null`` marks a frame where the object is absent. A trajectory document is::

    {"objects": [{"foreground": 1, "boxes": [[x0, y0, x1, y1], null, ...]}, ...]}

with one box (or null) per frame. ``foreground`` (1-based, defaults to the object's position) names the
layer whose matte the object was generated in. Detector output uses the same document.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..trajectory import box_from_alpha

Box = tuple[float, float, float, float]  # in pixels
HIT_IOU = 0.5  # a frame is a hit when its box IoU reaches this
HIT_RATE = "hit_rate@0.5"  # the summary key: share of requested frames that are hits


def area(box: Box | None) -> float:
    return 0.0 if box is None else max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def intersection(a: Box | None, b: Box | None) -> float:
    if a is None or b is None:
        return 0.0
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def box_iou(a: Box | None, b: Box | None) -> float:
    """IoU of two boxes; 0 when either is missing (an object that should be there and is not, or vice versa)."""
    inter = intersection(a, b)
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class ObjectScore:
    """One object in one video: volumetric IoU and the per-frame hits that hit-rate@0.5 pools."""

    foreground: int
    viou: float | None  # sum of intersections / sum of unions; None if both tracks are empty throughout
    frames: int  # frames with a requested box
    hits: int  # of those, frames with IoU >= HIT_IOU
    ious: list[float]


def score_object(predicted: list[Box | None], requested: list[Box | None], foreground: int) -> ObjectScore:
    """Compare a predicted box track with the requested one, frame by frame."""
    if len(predicted) != len(requested):
        raise ValueError(f"object {foreground}: {len(predicted)} predicted frames vs {len(requested)} requested")
    inter = sum(intersection(p, r) for p, r in zip(predicted, requested))
    union = sum(area(p) + area(r) for p, r in zip(predicted, requested)) - inter
    ious = [box_iou(p, r) for p, r in zip(predicted, requested) if r is not None]
    return ObjectScore(
        foreground=foreground,
        viou=inter / union if union > 0 else None,
        frames=len(ious),
        hits=sum(v >= HIT_IOU for v in ious),
        ious=ious,
    )


def summarise(scores: list[ObjectScore]) -> dict[str, float | int | None]:
    """mIoU = mean volumetric IoU over (video, object) pairs; hit-rate@0.5 = share of all requested frames hit.

    The hit-rate is not an average precision: generated mattes carry no confidence to rank, so there is no
    precision-recall curve. LayerT2V v1 reports "AP50" without defining its protocol; this is not that number.
    """
    vious = [s.viou for s in scores if s.viou is not None]
    frames = sum(s.frames for s in scores)
    return {
        "miou": float(np.mean(vious)) if vious else None,
        HIT_RATE: sum(s.hits for s in scores) / frames if frames else None,
        "objects": len(scores),
        "frames": frames,
    }


def parse_trajectory(doc: object, num_frames: int, num_foregrounds: int, source: str) -> dict[int, list[Box | None]]:
    """Validate a trajectory document; return {foreground number: per-frame boxes}."""
    if not isinstance(doc, dict) or not isinstance(doc.get("objects"), list):
        raise ValueError(f'{source}: expected {{"objects": [{{"foreground": k, "boxes": [...]}}, ...]}}')
    tracks: dict[int, list[Box | None]] = {}
    for i, obj in enumerate(doc["objects"]):
        k = obj.get("foreground", i + 1) if isinstance(obj, dict) else None
        boxes = obj.get("boxes") if isinstance(obj, dict) else None
        if not isinstance(k, int) or not 1 <= k <= num_foregrounds:
            raise ValueError(f"{source}: object {i} names foreground {k!r}; the video has 1..{num_foregrounds}")
        if not isinstance(boxes, list) or len(boxes) != num_frames:
            n = len(boxes) if isinstance(boxes, list) else "no"
            raise ValueError(f"{source}: object {i} has {n} boxes; give one box or null per frame ({num_frames})")
        track: list[Box | None] = []
        for t, box in enumerate(boxes):
            if box is None:
                track.append(None)
            elif isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box):
                if box[2] < box[0] or box[3] < box[1]:
                    raise ValueError(f"{source}: object {i} frame {t} box {box} has x1 < x0 or y1 < y0")
                track.append(tuple(float(v) for v in box))  # type: ignore[arg-type]
            else:
                raise ValueError(f"{source}: object {i} frame {t}: expected [x0, y0, x1, y1] or null, got {box!r}")
        if k in tracks:
            raise ValueError(f"{source}: foreground {k} appears twice")
        tracks[k] = track
    return tracks


def read_json(path: str | Path) -> object:
    """Read a JSON file with a one-line error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); fix or regenerate it") from e


def alpha_tracks(alphas: list[np.ndarray]) -> dict[int, list[Box | None]]:
    """Per foreground, the per-frame box of its generated matte."""
    return {k: [box_from_alpha(a) for a in alpha] for k, alpha in enumerate(alphas, start=1)}
