"""Fitting a clip of any length and size to a training shape: frame sampling, then resize and centre-crop.

Time. A clip of N source frames at ``fps_src`` gives ``shape.frames`` frames stepped by ``fps_src / shape.fps``
source frames (``shape.fps`` None: step 1, consecutive frames; the step never drops below 1, so frames are never
invented by the step). Where the stepped window does not fit in the clip, the step shrinks until the window
spans the whole clip; a clip with fewer than ``shape.frames`` frames holds its last frame to fill the window.
The window's start is drawn from ``numpy.random.default_rng((shape.seed, draw))``: the same ``(seed, draw)``
gives the same frames in any process, so a resumed run reads exactly what the interrupted one would have.

Space. The largest centred box with the target aspect ratio is cut from the frame, then resized to
``(shape.height, shape.width)`` with an antialiased bilinear (triangle) filter: "scale the short side, then
centre-crop", up to rounding. The filter's weights are non-negative, so resized values stay within the input's
range (no ringing).

Layers. Full and background resize as they are. A foreground is resized **premultiplied, with its alpha, by the
same filter** and then un-premultiplied: ``alpha' = R(alpha)``, ``fg' = R(fg * alpha) / alpha'`` where
``alpha' > 0``, and 0 where ``alpha' = 0``. So the resized clip's premultiplied foreground (what the RGB VAE
encodes) is exactly ``R`` of the original premultiplied foreground, and colour from outside the matte never
bleeds into the edge. (Resizing straight colour and alpha separately would give ``R(fg) * R(alpha)`` at the
edges, which mixes in whatever the straight foreground holds where alpha is 0, e.g. the source background.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from ..video import LayeredVideo


@dataclass(frozen=True)
class ClipShape:
    """The frame count, size and frame rate clips are fitted to, and the seed of their frame windows."""

    frames: int
    height: int
    width: int
    fps: float | None = None  # sample at this rate; None: consecutive source frames
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("frames", "height", "width"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ClipShape.{name} must be a positive integer, got {value!r}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"ClipShape.fps must be positive or None (consecutive frames), got {self.fps!r}")


def frame_indices(num_source: int, source_fps: float, shape: ClipShape, draw: int) -> list[int]:
    """The source frame numbers of window ``draw`` (see the module docstring)."""
    if num_source < 1:
        raise ValueError("a clip with no frames cannot be sampled")
    n = shape.frames
    step = 1.0 if shape.fps is None else max(1.0, source_fps / shape.fps)
    if n > 1 and (n - 1) * step > num_source - 1:  # the window does not fit: spread it over the whole clip
        step = max(1.0, (num_source - 1) / (n - 1))
    offsets = [math.floor(i * step + 1e-9) for i in range(n)]
    last_start = max(0, num_source - 1 - offsets[-1])
    start = int(np.random.default_rng((shape.seed, draw)).integers(0, last_start + 1))
    return [min(start + o, num_source - 1) for o in offsets]


def crop_box(height: int, width: int, to_height: int, to_width: int) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the largest centred box of a ``height`` x ``width`` frame with the aspect
    ratio of ``to_height`` x ``to_width``."""
    if height * to_width > width * to_height:  # the source is taller than the target: cut rows
        h, w = max(1, round(width * to_height / to_width)), width
    else:
        h, w = height, max(1, round(height * to_width / to_height))
    return (height - h) // 2, (width - w) // 2, h, w


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """(T, H, W, C) or (T, H, W) float frames -> centre-cropped and resized to (T, height, width[, C])."""
    squeeze = frames.ndim == 3
    x = frames[..., None] if squeeze else frames
    top, left, h, w = crop_box(x.shape[1], x.shape[2], height, width)
    x = x[:, top:top + h, left:left + w]
    if (h, w) != (height, width):
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).permute(0, 3, 1, 2)
        t = F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
        x = t.permute(0, 2, 3, 1).numpy()
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x[..., 0] if squeeze else x


def unpremultiply(premultiplied: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Straight colour from premultiplied colour (T, H, W, 3) and alpha (T, H, W); 0 where alpha is 0."""
    a = alpha[..., None]
    straight = np.divide(premultiplied, a, out=np.zeros_like(premultiplied), where=a > 0)
    return np.clip(straight, 0.0, 1.0)


def resize_layers(video: LayeredVideo, height: int, width: int) -> LayeredVideo:
    """Every layer centre-cropped and resized to ``height`` x ``width``; foregrounds premultiplied (see the module
    docstring). A clip already at that size is returned unchanged."""
    if (video.full.shape[1], video.full.shape[2]) == (height, width):
        return video
    alphas = [np.clip(resize_frames(a, height, width), 0.0, 1.0) for a in video.alphas]
    foregrounds = [unpremultiply(resize_frames(video.premultiplied(k), height, width), a)
                   for k, a in enumerate(alphas, start=1)]
    return replace(video, full=resize_frames(video.full, height, width),
                   background=resize_frames(video.background, height, width), foregrounds=foregrounds,
                   alphas=alphas)


def take_frames(video: LayeredVideo, indices: list[int]) -> LayeredVideo:
    """The clip made of source frames ``indices`` (in that order, repeats allowed)."""
    if indices == list(range(video.num_frames)):
        return video
    return replace(video, full=video.full[indices], background=video.background[indices],
                   foregrounds=[f[indices] for f in video.foregrounds], alphas=[a[indices] for a in video.alphas])


def resample(video: LayeredVideo, shape: ClipShape, draw: int) -> LayeredVideo:
    """``video`` fitted to ``shape``: window ``draw`` of its frames, centre-cropped and resized."""
    out = resize_layers(take_frames(video, frame_indices(video.num_frames, video.fps, shape, draw)),
                        shape.height, shape.width)
    if shape.fps is None or shape.fps == out.fps:
        return out
    return replace(out, fps=int(shape.fps) if float(shape.fps).is_integer() else shape.fps)
