"""Footage with known layers, made from real photographs, for testing and benchmarking the engine.

:func:`make_clip`: the background is a crop of a photograph matplotlib ships (``grace_hopper.jpg``); each foreground
is a disc textured with another crop of it (colour-rotated so it stands out), with an anti-aliased edge, moving
across the frame. :func:`shot_frames`: a real cut-out with its own alpha (matplotlib's gift-box picture or its logo)
moving over a photograph (matplotlib's, or scikit-learn's two, which layert2v's text encoder brings along), seen by
a static or panning camera, at any size and length (made a few frames at a time). The truth is a
:class:`LayeredVideo`; :func:`write_footage` and :func:`write_shot` save what a camera would have recorded (its full
video) as a video file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from ...io.codec import VideoWriter, write_video
from ...video import LayeredVideo

SUPERSAMPLE = 4
BLUR = 0.7  # px: footage from a camera is not sharper than its pixels (and 4:2:0 codecs need that)


PHOTOGRAPHS = {"grace_hopper": "matplotlib", "china": "sklearn", "flower": "sklearn"}  # name -> the package's
CUTOUTS = {"present": "Minduka_Present_Blue_Pack.png", "logo": "logo2.png"}  # RGBA pictures matplotlib ships


def photograph(name: str = "grace_hopper") -> Image.Image:
    """A photograph a dependency ships: matplotlib's ``grace_hopper.jpg`` (512x600), scikit-learn's ``china.jpg`` and
    ``flower.jpg`` (640x427)."""
    if PHOTOGRAPHS.get(name) == "matplotlib":
        import matplotlib.cbook

        return Image.open(matplotlib.cbook.get_sample_data(f"{name}.jpg", asfileobj=False)).convert("RGB")
    if PHOTOGRAPHS.get(name) == "sklearn":
        import sklearn.datasets

        return Image.open(Path(sklearn.datasets.__file__).parent / "images" / f"{name}.jpg").convert("RGB")
    raise ValueError(f"unknown photograph {name!r}; choose from {sorted(PHOTOGRAPHS)}")


def cutout(name: str, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(straight RGB (h, w, 3), alpha (h, w)) of a cut-out matplotlib ships, resized premultiplied to ``height``
    pixels; the colour is 0 where alpha is."""
    import matplotlib.cbook

    if name not in CUTOUTS:
        raise ValueError(f"unknown cut-out {name!r}; choose from {sorted(CUTOUTS)}")
    rgba = Image.open(matplotlib.cbook.get_sample_data(CUTOUTS[name], asfileobj=False)).convert("RGBa")
    width = max(1, round(rgba.width * height / rgba.height))
    array = np.asarray(rgba.resize((width, height), Image.Resampling.LANCZOS), np.float32) / 255.0
    alpha = np.clip(array[..., 3], 0.0, 1.0)
    colour = np.divide(array[..., :3], alpha[..., None], out=np.zeros_like(array[..., :3]), where=alpha[..., None] > 0)
    return np.clip(colour, 0.0, 1.0), alpha


@dataclass(frozen=True)
class Shot:
    """A clip of a cut-out crossing a photograph: the object's height as a share of the frame's, its centre's start
    and end as shares of the frame (it moves in a straight line), and how far the camera pans over the clip, as a
    share of the frame width (0: a static camera)."""

    background: str = "grace_hopper"
    cutout: str = "present"
    height: float = 0.4
    start: tuple[float, float] = (0.2, 0.5)  # (x, y)
    end: tuple[float, float] = (0.8, 0.5)
    pan: float = 0.0

    def scene(self, size: tuple[int, int]) -> np.ndarray:
        """The photograph as the camera's whole sweep: (H, W * (1 + pan), 3), cut to that aspect and resized."""
        width, height = size
        wide = round(width * (1 + self.pan))
        image = photograph(self.background)
        aspect = wide / height
        w, h = image.size
        cw, ch = (w, round(w / aspect)) if w / h < aspect else (round(h * aspect), h)
        left, top = (w - cw) // 2, (h - ch) // 2
        region = image.crop((left, top, left + cw, top + ch)).resize((wide, height), Image.Resampling.BICUBIC)
        return np.clip(np.asarray(region.filter(ImageFilter.GaussianBlur(BLUR)), np.float32) / 255.0, 0.0, 1.0)


def shot_frames(shot: Shot, size: tuple[int, int], num_frames: int, first: int = 0, count: int | None = None,
                fps: float = 24) -> LayeredVideo:
    """Frames ``first .. first + count`` of a :class:`Shot` of ``num_frames`` frames at ``size`` (width, height),
    as its true layers (a long clip is made a few frames at a time)."""
    width, height = size
    count = num_frames - first if count is None else count
    scene = shot.scene(size)
    colour, alpha = cutout(shot.cutout, max(2, round(shot.height * height)))
    oh, ow = alpha.shape
    full, background, foreground, matte = [], [], [], []
    for t in range(first, first + count):
        u = t / max(1, num_frames - 1)
        pan = round(u * (scene.shape[1] - width))
        bg = scene[:, pan:pan + width]
        cx, cy = (shot.start[i] + u * (shot.end[i] - shot.start[i]) for i in (0, 1))
        left, top = round(cx * width - ow / 2), round(cy * height - oh / 2)
        a = np.zeros((height, width), np.float32)
        fg = np.zeros((height, width, 3), np.float32)
        y0, y1, x0, x1 = max(0, top), min(height, top + oh), max(0, left), min(width, left + ow)
        if y1 > y0 and x1 > x0:
            a[y0:y1, x0:x1] = alpha[y0 - top:y1 - top, x0 - left:x1 - left]
            fg[y0:y1, x0:x1] = colour[y0 - top:y1 - top, x0 - left:x1 - left]
        background.append(bg)
        foreground.append(fg)
        matte.append(a)
        full.append(fg * a[..., None] + bg * (1.0 - a[..., None]))
    return LayeredVideo(full=np.stack(full), background=np.stack(background), foregrounds=[np.stack(foreground)],
                        alphas=[np.stack(matte)], fps=fps,
                        prompts={"full": f"a {shot.cutout} moving over a photograph", "background": "a photograph",
                                 "foregrounds": [f"a {shot.cutout}"]})


def write_shot(path: str | Path, shot: Shot, size: tuple[int, int], num_frames: int, fps: float = 24,
               codec: str = "libx264", chunk: int = 16) -> Path:
    """Record a :class:`Shot` as a video file, ``chunk`` frames at a time (any length in bounded memory)."""
    with VideoWriter(path, fps, codec) as writer:
        for first in range(0, num_frames, chunk):
            writer.write(shot_frames(shot, size, num_frames, first, min(chunk, num_frames - first), fps).full)
    return Path(path)


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
