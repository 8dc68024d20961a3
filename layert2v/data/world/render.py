"""Drawing a spec: the background texture, each object's own anti-aliased alpha along its path, their composite in
layer order, as a :class:`~layert2v.video.LayeredVideo`; :func:`generate_clip` samples and draws in one call."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...video import LayeredVideo, over
from .sampling import sample_spec
from .shapes import MAX_EXTENT, coverage, shape_sdf
from .specs import BackgroundSpec, ClipSpec, ObjectSpec
from .vocabulary import BACKGROUNDS, COLOURS, DIRECTIONS


def background_tones(colour: str) -> tuple[np.ndarray, np.ndarray]:
    """The two tones a background of this colour is painted with: the colour itself and a lighter tint (a darker
    shade for light colours). Every background pixel lies on the segment between them, which the readers use."""
    c = np.asarray(COLOURS[colour], dtype=np.float32)
    luminance = 0.30 * c[0] + 0.59 * c[1] + 0.11 * c[2]
    second = c * 0.6 if luminance > 0.6 else c + 0.45 * (1.0 - c)
    return c, second.astype(np.float32)


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
    half = float(np.max(r)) * MAX_EXTENT + 2.0
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


def generate_clip_with_spec(seed: int, **options: Any) -> tuple[LayeredVideo, ClipSpec]:
    """A clip and the ground-truth attributes it was drawn from; ``options`` are :func:`sample_spec`'s (split,
    num_frames, height, width, num_foregrounds, fps)."""
    spec = sample_spec(seed, **options)
    return render(spec), spec


def generate_clip(seed: int, **options: Any) -> LayeredVideo:
    """One clip of the world, identical for identical arguments (``options`` as :func:`sample_spec`'s). The spec is
    in ``video.metadata["world"]``."""
    return generate_clip_with_spec(seed, **options)[0]
