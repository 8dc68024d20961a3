"""The shapes as signed distance functions in a canonical frame (radius 1), their bounds, and anti-aliased coverage."""

from __future__ import annotations

import math

import numpy as np

from .vocabulary import SHAPES


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
MAX_EXTENT = max(max(abs(b) for b in bounds) for bounds in SHAPE_BOUNDS.values())


def coverage(sdf_pixels: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage from a signed distance in pixels: a one-pixel linear ramp across the edge."""
    return np.clip(0.5 - sdf_pixels, 0.0, 1.0)
