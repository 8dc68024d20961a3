"""Drawing a :class:`~.specs.ClipSpec` from ``(seed, split)`` (:func:`sample_spec`, captions included) and the held-out
evaluation cases (:func:`heldout_prompts`)."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from .captions import describe
from .shapes import SHAPE_BOUNDS
from .specs import BackgroundSpec, ClipSpec, ObjectSpec
from .vocabulary import (
    COLOURS,
    DIRECTIONS,
    HELDOUT_BACKGROUNDS,
    HELDOUT_OBJECTS,
    MOTIONS,
    PANS,
    SPLIT_IDS,
    SPLITS,
    TRAIN_BACKGROUNDS,
    TRAIN_OBJECTS,
)


def _pick(rng: np.random.Generator, options: list | tuple) -> Any:
    return options[int(rng.integers(len(options)))]


def _sample_path(rng: np.random.Generator, motion: str, shape: str, height: int, width: int) -> dict[str, float]:
    """Motion parameters that keep the whole object in frame and move it by at least a third of the frame."""
    m = min(height, width)
    extent = max(abs(b) for b in SHAPE_BOUNDS[shape])
    if motion in ("growing", "shrinking"):
        r0 = float(rng.uniform(0.05, 0.065))
        r1 = r0 * float(rng.uniform(2.3, 2.7))
        r_max = r1
    else:
        r_max = float(rng.uniform(0.085, 0.12))
    # Margins: the object's extent plus a pixel, as fractions of width and height.
    mx = (extent * r_max * m + 1.0) / width
    my = (extent * r_max * m + 1.0) / height
    span_x, span_y = 1.0 - 2 * mx, 1.0 - 2 * my

    if motion in DIRECTIONS:
        dx, dy = DIRECTIONS[motion]
        diagonal = dx != 0 and dy != 0
        lo, hi = (0.35, 0.45) if diagonal else (0.42, 0.55)
        dist_x = min(float(rng.uniform(lo, hi)), span_x) * dx
        dist_y = min(float(rng.uniform(lo, hi)), span_y) * dy
        x0 = float(rng.uniform(mx + max(0.0, -dist_x), 1.0 - mx - max(0.0, dist_x)))
        y0 = float(rng.uniform(my + max(0.0, -dist_y), 1.0 - my - max(0.0, dist_y)))
        return {"x0": x0, "y0": y0, "x1": x0 + dist_x, "y1": y0 + dist_y, "radius": r_max}
    if motion == "circling":
        orbit = float(rng.uniform(0.17, 0.22))
        ox, oy = orbit * m / width, orbit * m / height
        return {
            "cx": float(rng.uniform(mx + ox, 1.0 - mx - ox)), "cy": float(rng.uniform(my + oy, 1.0 - my - oy)),
            "orbit": orbit, "phase": float(rng.uniform(0, 2 * math.pi)), "turn": float(_pick(rng, (-1.0, 1.0))),
            "radius": r_max,
        }
    if motion in ("growing", "shrinking"):
        small, big = (r0, r1) if motion == "growing" else (r1, r0)
        return {"x0": float(rng.uniform(mx, 1 - mx)), "y0": float(rng.uniform(my, 1 - my)),
                "radius0": small, "radius1": big}
    if motion == "bouncing":
        floor = 1.0 - my - float(rng.uniform(0.0, 0.05))
        return {"x0": float(rng.uniform(mx, 1 - mx)), "floor": floor,
                "height": min(float(rng.uniform(0.4, 0.5)), floor - my), "bounces": 2.0, "radius": r_max}
    raise ValueError(f"unknown motion {motion!r}; choose from {MOTIONS}")


def _sample_background(rng: np.random.Generator, kind: str, colour: str) -> BackgroundSpec:
    pan = None if kind == "sky" else _pick(rng, PANS)
    params: dict[str, float] = {"speed": float(rng.uniform(0.15, 0.3)) if pan else 0.0}
    if kind == "sky":
        params["gamma"] = float(rng.uniform(0.7, 1.4))
    elif kind in ("stripes", "checker", "dots"):
        params["cells"] = float(rng.uniform(3.5, 5.0))  # repeats across the frame
        params["phase_x"] = float(rng.uniform(0, 1))
        params["phase_y"] = float(rng.uniform(0, 1))
        if kind == "dots":
            params["dot_radius"] = float(rng.uniform(0.22, 0.3))  # of the period
    elif kind == "horizon":
        params["level"] = float(rng.uniform(0.45, 0.62))
        params["hill_height"] = float(rng.uniform(0.03, 0.05))
        params["hill_width"] = float(rng.uniform(0.6, 1.0))
        params["phase_x"] = float(rng.uniform(0, 1))
    elif kind == "waves":
        params["cells"] = float(rng.uniform(3.5, 5.0))
        params["wobble_width"] = float(rng.uniform(0.4, 0.7))
        params["phase_x"] = float(rng.uniform(0, 1))
        params["phase_y"] = float(rng.uniform(0, 1))
    elif kind == "noise":
        params["cells"] = float(int(rng.integers(4, 7)))
        params["noise_seed"] = float(int(rng.integers(2**31)))
    return BackgroundSpec(kind=kind, colour=colour, pan=pan, params=params)


def sample_spec(
    seed: int,
    *,
    num_frames: int = 17,
    height: int = 64,
    width: int = 64,
    num_foregrounds: int | None = None,
    split: str = "train",
    fps: int = 8,
) -> ClipSpec:
    """Draw a clip's attributes from ``(seed, split)``; captions included. ``num_foregrounds`` None: 1 to 3."""
    if split not in SPLIT_IDS:
        raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if num_frames < 1 or height < 16 or width < 16:  # one frame: a still, for the VAE's image pretraining
        raise ValueError(f"clips need >= 1 frame and >= 16x16 pixels, got {num_frames}x{height}x{width}")
    rng = np.random.default_rng([seed, SPLIT_IDS[split]])
    k = int(rng.integers(1, 4)) if num_foregrounds is None else int(num_foregrounds)
    if not 1 <= k <= len(COLOURS) - 1:
        raise ValueError(f"num_foregrounds must be between 1 and {len(COLOURS) - 1}, got {k}")

    bg_heldout, obj_heldout = False, [False] * k
    if split == "heldout":
        bg_heldout = bool(rng.random() < 0.4)
        obj_heldout = [bool(x) for x in rng.random(k) < 0.3]
        if not bg_heldout and not any(obj_heldout):
            obj_heldout[int(rng.integers(k))] = True
    kind, bg_colour = _pick(rng, sorted(HELDOUT_BACKGROUNDS) if bg_heldout else TRAIN_BACKGROUNDS)
    background = _sample_background(rng, kind, bg_colour)

    objects: list[ObjectSpec] = []
    used = {bg_colour}
    for held in obj_heldout:
        pool = sorted(HELDOUT_OBJECTS) if held else TRAIN_OBJECTS
        pool = [(c, s) for c, s in pool if c not in used] or [(c, s) for c, s in TRAIN_OBJECTS if c not in used]
        colour, shape = _pick(rng, pool)
        used.add(colour)
        motion = _pick(rng, MOTIONS)
        objects.append(ObjectSpec(shape, colour, motion, _sample_path(rng, motion, shape, height, width)))

    spec = ClipSpec(seed, split, num_frames, height, width, fps, background, objects)
    return replace(spec, prompts=describe(spec))


def heldout_prompts(n: int, seed: int = 0, **kwargs: Any) -> list[ClipSpec]:
    """``n`` held-out evaluation cases: specs of ``split="heldout"`` clips ``seed .. seed + n - 1``.

    Each spec's ``prompts`` holds the full/background/foreground prompts to generate from, and its attributes are
    the ground truth to score against; ``render(spec)`` gives the ground-truth clip. ``kwargs`` go to
    :func:`sample_spec` (num_frames, height, width, num_foregrounds, fps).
    """
    return [sample_spec(seed + i, split="heldout", **kwargs) for i in range(n)]
