"""Static-camera footage with known layers, made from real photographs, for testing and benchmarking the engine.

The background is a crop of a photograph matplotlib ships (``grace_hopper.jpg``); each foreground is a disc
textured with another crop of it (colour-rotated so it stands out), with an anti-aliased edge, moving across the
frame. The truth is a :class:`LayeredVideo`; :func:`write_footage` saves what a camera would have recorded
(its full video) as a video file with a caption sidecar.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from ...io.codec import write_video
from ...video import LayeredVideo

SUPERSAMPLE = 4
BLUR = 0.7  # px: footage from a camera is not sharper than its pixels (and 4:2:0 codecs need that)


def photograph() -> Image.Image:
    import matplotlib.cbook

    return Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")


def _crop(image: Image.Image, box: tuple[float, float, float, float], size: tuple[int, int]) -> np.ndarray:
    w, h = image.size
    left, top, right, bottom = box
    region = image.crop((int(left * w), int(top * h), int(right * w), int(bottom * h)))
    region = region.resize(size, Image.Resampling.BOX).filter(ImageFilter.GaussianBlur(BLUR))
    return np.asarray(region, np.float32) / 255.0


def disc_alpha(cx: float, cy: float, radius: float, height: int, width: int) -> np.ndarray:
    """Coverage of a disc on the pixel grid, SUPERSAMPLE^2 samples per pixel: an anti-aliased edge."""
    s = SUPERSAMPLE
    yy, xx = np.mgrid[0:height * s, 0:width * s]
    inside = ((xx + 0.5) / s - cx) ** 2 + ((yy + 0.5) / s - cy) ** 2 <= radius**2
    return inside.reshape(height, s, width, s).mean(axis=(1, 3)).astype(np.float32)


def make_clip(seed: int = 0, num_frames: int = 9, size: tuple[int, int] = (32, 32),
              num_foregrounds: int = 1) -> LayeredVideo:
    """A static photograph with `num_foregrounds` textured discs crossing it; prompts describe the layers."""
    rng = np.random.default_rng(seed)
    width, height = size
    image = photograph()
    x0, y0 = rng.uniform(0.0, 0.3, size=2)
    background = _crop(image, (x0, y0, x0 + 0.6, y0 + 0.6), size)
    backgrounds = np.repeat(background[None], num_frames, axis=0)
    foregrounds, alphas = [], []
    for k in range(num_foregrounds):
        texture = _crop(image, (0.3 + 0.1 * k, 0.1, 0.6 + 0.1 * k, 0.4), size)[..., [2, 0, 1]]  # colour-rotated
        texture = np.clip(texture * 0.6 + np.array([0.35, 0.1, 0.0], np.float32) * (k + 1), 0.0, 1.0)
        radius = height * rng.uniform(0.14, 0.18) / num_foregrounds ** 0.5
        cy = height * (k + 0.5) / num_foregrounds + rng.uniform(-1.0, 1.0)  # one lane each: they never touch
        direction = 1 if k % 2 == 0 else -1
        xs = np.linspace(radius, width - radius, num_frames)[::direction] + rng.uniform(-1.0, 1.0)
        alpha = np.stack([disc_alpha(x, cy, radius, height, width) for x in xs])
        alphas.append(alpha)
        foregrounds.append(np.repeat(texture[None], num_frames, axis=0))
    video = LayeredVideo(full=backgrounds, background=backgrounds, foregrounds=foregrounds, alphas=alphas, fps=8,
                         prompts={"full": "", "background": "a portrait photograph",
                                  "foregrounds": [f"a textured disc number {k + 1}" for k in range(num_foregrounds)]})
    video.full = video.composite()
    video.prompts["full"] = " and ".join(video.prompts["foregrounds"]) + " over a portrait photograph"
    return video


def write_footage(directory: str | Path, name: str, video: LayeredVideo, codec: str = "prores_ks") -> Path:
    """Save `video.full` as ``name.mov`` (ProRes 4444: 4:4:4, 10 bit) or, with ``codec="libx264"``, ``name.mp4``
    (4:2:0, whose halved chroma costs ~7 dB on small saturated footage), with a ``name.json`` caption sidecar."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".mov" if codec == "prores_ks" else ".mp4"
    path = write_video(directory / f"{name}{suffix}", video.full, video.fps, codec)
    (directory / f"{name}.json").write_text(json.dumps(video.prompts) + "\n", encoding="utf-8")
    return path
