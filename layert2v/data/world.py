"""The procedural layered world: coloured shapes moving over textured backgrounds, with exact layer ground truth.

It is what the small built-in model trains on and what tests and tutorials use, because every layer is known
exactly: the clean background, each object's straight RGB and its own alpha matte (anti-aliased, never reduced by
occlusion), and the full video as their composite in layer order (foreground 1 lies on the background, K on top).

A clip is drawn in two steps so that evaluation can know the truth without pixels:

* :func:`sample_spec` turns ``(seed, split)`` into a :class:`ClipSpec` -- background kind/colour/pan, and per object
  its shape, colour, motion and path -- plus its captions (:mod:`layert2v.data.captions`);
* :func:`render` turns a spec into a :class:`~layert2v.video.LayeredVideo`, vectorised numpy, a few ms a clip.

Held-out split: the (colour, shape) pairs in :data:`HELDOUT_OBJECTS` and the (kind, colour) backgrounds in
:data:`HELDOUT_BACKGROUNDS` never appear with ``split="train"``. Every ``split="heldout"`` clip contains at least
one of them (other parts of a held-out clip use training combinations), so a model trained on the train split can be
tested on attribute combinations it never saw. :func:`heldout_prompts` lists such cases.

Coordinates: positions are fractions of the frame width (x) and height (y), sizes fractions of min(H, W); y
points down, so "up" means decreasing y.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from ..video import LayeredVideo, over

# ------------------------------------------------------------------------------------------ vocabulary
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.89, 0.12, 0.12),
    "orange": (1.00, 0.55, 0.05),
    "yellow": (0.98, 0.90, 0.12),
    "green": (0.15, 0.70, 0.20),
    "cyan": (0.10, 0.85, 0.90),
    "blue": (0.12, 0.25, 0.90),
    "purple": (0.55, 0.18, 0.78),
    "pink": (1.00, 0.50, 0.78),
    "white": (0.96, 0.96, 0.96),
    "black": (0.06, 0.06, 0.06),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star", "ring", "cross")
MOTIONS: tuple[str, ...] = (
    "left", "right", "up", "down", "up-left", "up-right", "down-left", "down-right",
    "circling", "growing", "shrinking", "bouncing",
)
BACKGROUNDS: tuple[str, ...] = ("sky", "stripes", "checker", "horizon", "waves", "dots", "noise")
PANS: tuple[str | None, ...] = (None, "left", "right")  # direction the background texture moves
SPLITS: tuple[str, ...] = ("train", "heldout")

# Unit direction of each straight motion, (dx, dy) with y down.
DIRECTIONS: dict[str, tuple[int, int]] = {
    "left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1),
    "up-left": (-1, -1), "up-right": (1, -1), "down-left": (-1, 1), "down-right": (1, 1),
}

# One held-out colour per shape and one held-out colour per background kind: every attribute is still seen in
# training, only these combinations are not.
HELDOUT_OBJECTS: frozenset[tuple[str, str]] = frozenset({  # (colour, shape)
    ("red", "star"), ("green", "triangle"), ("blue", "ring"), ("yellow", "cross"),
    ("orange", "square"), ("purple", "diamond"), ("cyan", "circle"),
})
HELDOUT_BACKGROUNDS: frozenset[tuple[str, str]] = frozenset({  # (kind, colour)
    ("sky", "orange"), ("stripes", "pink"), ("checker", "blue"), ("horizon", "purple"),
    ("waves", "red"), ("dots", "green"), ("noise", "yellow"),
})
TRAIN_OBJECTS: tuple[tuple[str, str], ...] = tuple(
    (c, s) for c in COLOURS for s in SHAPES if (c, s) not in HELDOUT_OBJECTS
)
TRAIN_BACKGROUNDS: tuple[tuple[str, str], ...] = tuple(
    (k, c) for k in BACKGROUNDS for c in COLOURS if (k, c) not in HELDOUT_BACKGROUNDS
)
_SPLIT_IDS = {"train": 0, "heldout": 1}


def background_tones(colour: str) -> tuple[np.ndarray, np.ndarray]:
    """The two tones a background of this colour is painted with: the colour itself and a lighter tint (a darker
    shade for light colours). Every background pixel lies on the segment between them, which the readers use."""
    c = np.asarray(COLOURS[colour], dtype=np.float32)
    luminance = 0.30 * c[0] + 0.59 * c[1] + 0.11 * c[2]
    second = c * 0.6 if luminance > 0.6 else c + 0.45 * (1.0 - c)
    return c, second.astype(np.float32)


# ------------------------------------------------------------------------------------------------ shapes
def _polygon(n: int, radii: tuple[float, ...], start: float = -math.pi / 2) -> np.ndarray:
    """Vertices of a regular polygon/star: n points, radii cycled (two radii make a star)."""
    angles = start + np.arange(n) * 2 * math.pi / n
    r = np.resize(np.asarray(radii, dtype=np.float64), n)
    return np.stack([r * np.cos(angles), r * np.sin(angles)], axis=1)


_TRIANGLE = _polygon(3, (1.35,))
_STAR = _polygon(10, (1.3, 0.55))


def _sd_box(u: np.ndarray, v: np.ndarray, bx: float, by: float) -> np.ndarray:
    qx, qy = np.abs(u) - bx, np.abs(v) - by
    outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
    return outside + np.minimum(np.maximum(qx, qy), 0)


def _sd_polygon(u: np.ndarray, v: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Exact signed distance to a simple polygon (negative inside); vectorised over pixels, looped over edges."""
    d = (u - verts[0, 0]) ** 2 + (v - verts[0, 1]) ** 2
    sign = np.ones_like(u)
    n = len(verts)
    for i in range(n):
        (xi, yi), (xj, yj) = verts[i], verts[i - 1]
        ex, ey = xj - xi, yj - yi
        wx, wy = u - xi, v - yi
        h = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
        bx, by = wx - ex * h, wy - ey * h
        d = np.minimum(d, bx * bx + by * by)
        c1, c2, c3 = v >= yi, v < yj, ex * wy > ey * wx
        sign = np.where((c1 & c2 & c3) | (~c1 & ~c2 & ~c3), -sign, sign)
    return sign * np.sqrt(d)


def shape_sdf(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) to a shape in its canonical frame, where the object's radius is 1."""
    if shape == "circle":
        return np.sqrt(u * u + v * v) - 1.0
    if shape == "square":
        return _sd_box(u, v, 0.85, 0.85)
    if shape == "diamond":
        return (np.abs(u) + np.abs(v) - 1.2) / math.sqrt(2.0)
    if shape == "triangle":
        return _sd_polygon(u, v, _TRIANGLE)
    if shape == "star":
        return _sd_polygon(u, v, _STAR)
    if shape == "ring":
        return np.abs(np.sqrt(u * u + v * v) - 0.8) - 0.25
    if shape == "cross":
        return np.minimum(_sd_box(u, v, 1.0, 0.33), _sd_box(u, v, 0.33, 1.0))
    raise ValueError(f"unknown shape {shape!r}; choose from {SHAPES}")


def _bounds(verts: np.ndarray) -> tuple[float, float, float, float]:
    return float(verts[:, 0].min()), float(verts[:, 0].max()), float(verts[:, 1].min()), float(verts[:, 1].max())


# Canonical bounding box (u0, u1, v0, v1) of each shape, radius 1.
SHAPE_BOUNDS: dict[str, tuple[float, float, float, float]] = {
    "circle": (-1.0, 1.0, -1.0, 1.0),
    "square": (-0.85, 0.85, -0.85, 0.85),
    "diamond": (-1.2, 1.2, -1.2, 1.2),
    "triangle": _bounds(_TRIANGLE),
    "star": _bounds(_STAR),
    "ring": (-1.05, 1.05, -1.05, 1.05),
    "cross": (-1.0, 1.0, -1.0, 1.0),
}
_MAX_EXTENT = max(max(abs(b) for b in bounds) for bounds in SHAPE_BOUNDS.values())


def coverage(sdf_pixels: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage from a signed distance in pixels: a one-pixel linear ramp across the edge."""
    return np.clip(0.5 - sdf_pixels, 0.0, 1.0)


# ------------------------------------------------------------------------------------------------- specs
@dataclass
class ObjectSpec:
    """One foreground object: what it is (shape, colour, motion) and where it goes (``path``, see :func:`track`)."""

    shape: str
    colour: str
    motion: str
    path: dict[str, float] = field(default_factory=dict)


@dataclass
class BackgroundSpec:
    """The background: texture kind, colour, the direction its texture moves (None: static) and texture params."""

    kind: str
    colour: str
    pan: str | None = None
    params: dict[str, float] = field(default_factory=dict)


@dataclass
class ClipSpec:
    """Everything that determines a clip; objects are listed in layer order (first = foreground 1, bottom)."""

    seed: int
    split: str
    num_frames: int
    height: int
    width: int
    fps: int
    background: BackgroundSpec
    objects: list[ObjectSpec]
    prompts: dict[str, Any] = field(default_factory=dict)

    @property
    def heldout_combinations(self) -> list[tuple[str, str]]:
        """The held-out (colour, shape) and (kind, colour) combinations this clip contains."""
        found = [(o.colour, o.shape) for o in self.objects if (o.colour, o.shape) in HELDOUT_OBJECTS]
        bg = (self.background.kind, self.background.colour)
        return found + ([bg] if bg in HELDOUT_BACKGROUNDS else [])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClipSpec:
        d = dict(d)
        d["background"] = BackgroundSpec(**d["background"])
        d["objects"] = [ObjectSpec(**o) for o in d["objects"]]
        return cls(**d)


# ---------------------------------------------------------------------------------------------- sampling
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
    if split not in _SPLIT_IDS:
        raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if num_frames < 1 or height < 16 or width < 16:  # one frame: a still, for the VAE's image pretraining
        raise ValueError(f"clips need >= 1 frame and >= 16x16 pixels, got {num_frames}x{height}x{width}")
    rng = np.random.default_rng([seed, _SPLIT_IDS[split]])
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
    from .captions import describe

    return replace(spec, prompts=describe(spec))


# --------------------------------------------------------------------------------------------- rendering
def track(obj: ObjectSpec, num_frames: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame centre (x, y) and radius, all in pixels, of an object following its path."""
    p, m = obj.path, min(height, width)
    t = np.linspace(0.0, 1.0, num_frames)
    ones = np.ones(num_frames)
    if obj.motion in DIRECTIONS:
        x, y, r = p["x0"] + (p["x1"] - p["x0"]) * t, p["y0"] + (p["y1"] - p["y0"]) * t, p["radius"] * ones
    elif obj.motion == "circling":
        angle = p["phase"] + p["turn"] * 2 * math.pi * np.arange(num_frames) / num_frames
        x = p["cx"] + p["orbit"] * m / width * np.cos(angle)
        y = p["cy"] + p["orbit"] * m / height * np.sin(angle)
        r = p["radius"] * ones
    elif obj.motion in ("growing", "shrinking"):
        x, y, r = p["x0"] * ones, p["y0"] * ones, p["radius0"] + (p["radius1"] - p["radius0"]) * t
    elif obj.motion == "bouncing":
        x = p["x0"] * ones
        y = p["floor"] - p["height"] * np.abs(np.sin(math.pi * p["bounces"] * t))
        r = p["radius"] * ones
    else:
        raise ValueError(f"unknown motion {obj.motion!r}")
    return x * width, y * height, r * m


def render_object(obj: ObjectSpec, num_frames: int, height: int, width: int) -> np.ndarray:
    """The object's own alpha matte (T, H, W): analytic anti-aliased coverage, computed only in a window that
    follows the object (which is what keeps a clip within a few milliseconds)."""
    cx, cy, r = track(obj, num_frames, height, width)
    half = float(np.max(r)) * _MAX_EXTENT + 2.0
    sw, sh = min(width, math.ceil(2 * half)), min(height, math.ceil(2 * half))
    ox = np.clip(np.floor(cx - sw / 2), 0, width - sw).astype(int)
    oy = np.clip(np.floor(cy - sh / 2), 0, height - sh).astype(int)
    xs = (ox[:, None, None] + np.arange(sw)[None, None, :] + 0.5 - cx[:, None, None]) / r[:, None, None]
    ys = (oy[:, None, None] + np.arange(sh)[None, :, None] + 0.5 - cy[:, None, None]) / r[:, None, None]
    xs, ys = np.broadcast_arrays(xs, ys)
    window = coverage(shape_sdf(obj.shape, xs, ys) * r[:, None, None]).astype(np.float32)
    alpha = np.zeros((num_frames, height, width), dtype=np.float32)
    for t in range(num_frames):
        alpha[t, oy[t]:oy[t] + sh, ox[t]:ox[t] + sw] = window[t]
    return alpha


def background_field(bg: BackgroundSpec, num_frames: int, height: int, width: int) -> np.ndarray:
    """Per-pixel mix (T, H, W) in [0, 1]: 1 is the background colour, 0 its second tone."""
    p, m = bg.params, min(height, width)
    t = np.linspace(0.0, 1.0, num_frames)
    shift = {None: 0.0, "left": -1.0, "right": 1.0}[bg.pan] * p.get("speed", 0.0) * width * t
    # Texture coordinates: the texture moves by `shift`, so pixel x shows texture point x - shift.
    x = (np.arange(width) + 0.5)[None, None, :] - shift[:, None, None]  # (T, 1, W)
    y = (np.arange(height) + 0.5)[None, :, None]  # (1, H, 1)
    shape = (num_frames, height, width)
    if bg.kind == "sky":
        field_ = np.broadcast_to((1.0 - y / height) ** p["gamma"], shape)
    elif bg.kind == "stripes":
        period = width / p["cells"]
        phase = np.mod(x / period + p["phase_x"], 1.0)
        distance = (np.abs(phase - 0.5) - 0.25) * period  # stripe = the middle half of each period
        field_ = np.broadcast_to(coverage(distance), shape)
    elif bg.kind == "checker":
        cell = m / p["cells"]

        def smooth_parity(coord: np.ndarray, phase: float) -> np.ndarray:
            f = coord / cell + phase
            to_edge = (0.5 - np.abs(np.mod(f, 1.0) - 0.5)) * cell  # pixels to the nearest cell edge
            parity = 1.0 - 2.0 * np.mod(np.floor(f), 2.0)
            return parity * np.clip(to_edge * 2.0, 0.0, 1.0)

        field_ = 0.5 + 0.5 * smooth_parity(x, p["phase_x"]) * smooth_parity(y, p["phase_y"])
    elif bg.kind == "horizon":
        hills = p["level"] * height + p["hill_height"] * height * np.sin(
            2 * math.pi * (x / (p["hill_width"] * width) + p["phase_x"]))
        field_ = coverage(hills - y)  # ground (the colour) below the hill line, pale sky above
    elif bg.kind == "waves":
        wavelength = height / p["cells"]
        wobble = 0.25 * wavelength * np.sin(2 * math.pi * (x / (p["wobble_width"] * width) + p["phase_x"]))
        field_ = 0.5 + 0.5 * np.sin(2 * math.pi * ((y + wobble) / wavelength + p["phase_y"]))
    elif bg.kind == "dots":
        period = m / p["cells"]
        dx = (np.mod(x / period + p["phase_x"], 1.0) - 0.5) * period
        dy = (np.mod(y / period + p["phase_y"], 1.0) - 0.5) * period
        field_ = 1.0 - coverage(np.sqrt(dx * dx + dy * dy) - p["dot_radius"] * period)  # tint dots on colour
    elif bg.kind == "noise":
        field_ = _value_noise(x, y, int(p["cells"]), int(p["noise_seed"]), width, height)
    else:
        raise ValueError(f"unknown background kind {bg.kind!r}; choose from {BACKGROUNDS}")
    return np.ascontiguousarray(np.broadcast_to(field_, shape), dtype=np.float32)


def _value_noise(x: np.ndarray, y: np.ndarray, cells: int, seed: int, width: int, height: int) -> np.ndarray:
    """Smooth value noise, periodic across the width so that a panning texture wraps seamlessly."""
    rows = math.ceil(cells * height / width) + 2
    grid = np.random.default_rng(seed).random((rows, cells))
    grid = (grid - grid.min()) / max(float(np.ptp(grid)), 1e-6)
    fx, fy = x / width * cells, y / width * cells  # square cells
    ix, iy = np.floor(fx).astype(int), np.floor(fy).astype(int)
    sx, sy = fx - ix, fy - iy
    sx, sy = sx * sx * (3 - 2 * sx), sy * sy * (3 - 2 * sy)
    x0, x1 = np.mod(ix, cells), np.mod(ix + 1, cells)
    y0, y1 = np.clip(iy, 0, rows - 1), np.clip(iy + 1, 0, rows - 1)
    top = grid[y0, x0] * (1 - sx) + grid[y0, x1] * sx
    bottom = grid[y1, x0] * (1 - sx) + grid[y1, x1] * sx
    return top * (1 - sy) + bottom * sy


def render(spec: ClipSpec) -> LayeredVideo:
    """Draw a spec: clean background, each object's straight RGB and own alpha, and their composite."""
    t, h, w = spec.num_frames, spec.height, spec.width
    c, second = background_tones(spec.background.colour)
    mix = background_field(spec.background, t, h, w)[..., None]
    background = second + mix * (c - second)
    foregrounds, alphas = [], []
    for obj in spec.objects:
        alpha = render_object(obj, t, h, w)
        rgb = np.zeros((t, h, w, 3), dtype=np.float32)
        rgb[alpha > 0] = COLOURS[obj.colour]
        foregrounds.append(rgb)
        alphas.append(alpha)
    full = background
    for rgb, alpha in zip(foregrounds, alphas):  # layer order: foreground 1 first, on the background
        full = over(rgb, alpha, full)
    return LayeredVideo(
        full=np.clip(full, 0.0, 1.0),
        background=background,
        foregrounds=foregrounds,
        alphas=alphas,
        fps=spec.fps,
        prompts=dict(spec.prompts),
        seed=spec.seed,
        metadata={"source": "layert2v.data.world", "world": spec.to_dict()},
    )


def generate_clip_with_spec(
    seed: int,
    *,
    num_frames: int = 17,
    height: int = 64,
    width: int = 64,
    num_foregrounds: int | None = None,
    split: str = "train",
    fps: int = 8,
) -> tuple[LayeredVideo, ClipSpec]:
    """A clip and the ground-truth attributes it was drawn from."""
    spec = sample_spec(seed, num_frames=num_frames, height=height, width=width, num_foregrounds=num_foregrounds,
                       split=split, fps=fps)
    return render(spec), spec


def generate_clip(
    seed: int,
    *,
    num_frames: int = 17,
    height: int = 64,
    width: int = 64,
    num_foregrounds: int | None = None,
    split: str = "train",
    fps: int = 8,
) -> LayeredVideo:
    """One clip of the world, identical for identical arguments. The spec is in ``video.metadata["world"]``."""
    return generate_clip_with_spec(seed, num_frames=num_frames, height=height, width=width,
                                   num_foregrounds=num_foregrounds, split=split, fps=fps)[0]


def heldout_prompts(n: int, seed: int = 0, **kwargs: Any) -> list[ClipSpec]:
    """``n`` held-out evaluation cases: specs of ``split="heldout"`` clips ``seed .. seed + n - 1``.

    Each spec's ``prompts`` holds the full/background/foreground prompts to generate from, and its attributes are
    the ground truth to score against; ``render(spec)`` gives the ground-truth clip. ``kwargs`` go to
    :func:`sample_spec` (num_frames, height, width, num_foregrounds, fps).
    """
    return [sample_spec(seed + i, split="heldout", **kwargs) for i in range(n)]


# ----------------------------------------------------------------------------------------------- datasets
class WorldDataset(Dataset):
    """The world as an endless, deterministic map-style dataset: item ``i`` is always the same clip.

    Item ``i`` is clip seed ``seed * 2**32 + i`` of ``split``, so ``WorldDataset()[i]`` equals
    ``generate_clip(i)``. Use ``DataLoader(..., collate_fn=list)``: items are LayeredVideo objects.
    """

    def __init__(
        self,
        length: int = 1_000_000,
        *,
        seed: int = 0,
        split: str = "train",
        num_frames: int = 17,
        height: int = 64,
        width: int = 64,
        num_foregrounds: int | None = None,
        fps: int = 8,
    ):
        if length < 1 or seed < 0 or split not in _SPLIT_IDS:
            raise ValueError(f"need length >= 1, seed >= 0 and split in {SPLITS}; got {length}, {seed}, {split!r}")
        self.length, self.seed, self.split = length, seed, split
        self.options = {"num_frames": num_frames, "height": height, "width": width,
                        "num_foregrounds": num_foregrounds, "fps": fps}

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


def write_dataset(
    directory: str | Path,
    n: int,
    *,
    seed: int = 0,
    split: str = "train",
    num_frames: int = 17,
    height: int = 64,
    width: int = 64,
    num_foregrounds: int | None = None,
    fps: int = 8,
    overwrite: bool = False,
) -> Path:
    """Write the first ``n`` clips of ``WorldDataset(seed=seed, split=split, ...)`` in the project's dataset format
    (``metadata.jsonl`` plus one saved LayeredVideo per sample; see :mod:`layert2v.data.folder`). Each metadata
    line also carries the clip's ``seed``, ``split`` and ground-truth ``attributes``."""
    from .folder import write_folder

    dataset = WorldDataset(max(n, 1), seed=seed, split=split, num_frames=num_frames, height=height, width=width,
                           num_foregrounds=num_foregrounds, fps=fps)

    def items() -> Iterator[tuple[LayeredVideo, dict[str, Any]]]:
        for i in range(n):
            spec = dataset.spec(i)
            yield render(spec), {"seed": spec.seed, "split": split, "attributes": attributes(spec)}

    return write_folder(directory, items(), overwrite=overwrite)


def attributes(spec: ClipSpec) -> dict[str, Any]:
    """The spec's attributes without path details: what a caption says and a reader can check."""
    bg = spec.background
    return {"background": {"kind": bg.kind, "colour": bg.colour, "pan": bg.pan},
            "objects": [{"colour": o.colour, "shape": o.shape, "motion": o.motion} for o in spec.objects]}


def describe(spec: ClipSpec, seed: int | None = None) -> dict[str, Any]:
    """Captions of a spec at three levels; see :func:`layert2v.data.captions.describe`."""
    from .captions import describe as _describe

    return _describe(spec, seed)


def parse_prompt(prompt: str) -> dict[str, Any]:
    """Split a full prompt into background and foreground prompts; see :func:`layert2v.prompts.parse_prompt`."""
    from ..prompts import parse_prompt as _parse

    return _parse(prompt)
