"""The five stage interfaces, the weight-free backends, and the registry that names every backend.

Each stage is one small interface with one method. Arrays follow LayeredVideo: float32 in [0, 1], frames first,
RGB (T, H, W, 3), masks (T, H, W) bool, alphas (T, H, W) float32, foregrounds straight (not premultiplied).

=============  ===============================  ====================================================
stage          weight-free backend              real-model backend (engine.backends / engine.judge)
=============  ===============================  ====================================================
captions       ``sidecar`` (<name>.json)        ``qwen3vl``: Qwen3-VL / Qwen3-VL-MoE / Qwen2.5-VL
segmentation   ``clean_plate`` (static camera)  ``sam3``: Sam3VideoModel + Sam3VideoProcessor
matting        ``pymatting`` (cf / lbdm / knn)  ``vitmatte``: VitMatteForImageMatting
removal        ``temporal_plate`` (static cam)  ``wan_vace``: diffusers WanVACEPipeline
judge          ``none`` (weight-free checks     ``openai`` (any OpenAI-compatible endpoint),
               in engine.quality always run)    ``qwen3vl`` (local)
=============  ===============================  ====================================================

A backend may also be named ``package.module:ClassName``: any class with the stage's method (and, optionally,
``uses_model = True`` so that Ray gives it an actor pool) plugs in, e.g. a video matting model that is not on
the package index.
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from .clip import Reject


class Captioner(ABC):
    """Writes the three layer captions of a clip."""

    uses_model = False

    @abstractmethod
    def caption(self, frames: np.ndarray, object_names: list[str]) -> dict[str, Any]:
        """``{"full": str, "background": str, "foregrounds": [str, ...]}``; `object_names` may be empty."""


class Segmenter(ABC):
    """Finds and tracks each named foreground object through the clip.

    Optional: ``prepare(frames, object_names)`` sees frames sampled across a whole clip that :meth:`segment` will
    then get in consecutive windows (``layert2v decompose`` streams long clips); a backend that models the clip as a
    whole (a static camera's clean plate) estimates it there and raises :class:`Reject` for a clip it cannot handle.
    """

    uses_model = False

    @abstractmethod
    def segment(self, frames: np.ndarray, object_names: list[str]) -> list[np.ndarray]:
        """One (T, H, W) bool mask per name, in the order given."""


class Matter(ABC):
    """Turns hard masks into soft alpha mattes and straight foreground colours."""

    uses_model = False

    @abstractmethod
    def matte(self, frames: np.ndarray, masks: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """``(alphas, foregrounds)``, one of each per mask."""


class Remover(ABC):
    """Removes the foregrounds, giving the clean background video.

    Optional: ``prepare(frames, masks)``, as for :class:`Segmenter`: frames sampled across the whole clip, with
    their masks."""

    uses_model = False

    @abstractmethod
    def remove(self, frames: np.ndarray, masks: list[np.ndarray], caption: str = "") -> np.ndarray:
        """The background (T, H, W, 3) with every masked object gone; `caption` describes the background."""


class Judge(ABC):
    """Scores decomposed key frames like the paper's GPT-4o check: ``{frame: (bg_score, fg_score)}``, 0..10."""

    uses_model = False

    @abstractmethod
    def score(self, panels: dict[int, Image.Image], description: str) -> dict[int, tuple[int, int]]:
        """`panels` maps a frame index to its [original | mask | background | foreground] strip."""


# --------------------------------------------------------------------------------- weight-free backends
class SidecarCaptioner(Captioner):
    """Captions come only from the ``<name>.json`` sidecar; a clip without one is rejected."""

    def caption(self, frames: np.ndarray, object_names: list[str]) -> dict[str, Any]:
        raise Reject("no captions: the clip has no <name>.json sidecar and the captions backend is 'sidecar' "
                     "(write the sidecar or configure captions: {backend: qwen3vl, model: DIR})")


STRIP = 64  # rows at a time of a per-pixel median over time: its temporaries stay a strip's size on big frames


def median_over_time(frames: np.ndarray, covered: np.ndarray | None = None) -> np.ndarray:
    """Each pixel's median over the frames (T, H, W, C) -> (H, W, C); with ``covered`` (T, H, W), over the frames
    where the pixel is not covered (NaN where it is covered in all). Computed STRIP rows at a time: the same values
    as one ``np.median`` / ``np.nanmedian`` call, without their whole-clip copies (gigabytes at 1080p)."""
    strips = []
    for top in range(0, frames.shape[1], STRIP):
        rows = frames[:, top:top + STRIP]
        if covered is None:
            strips.append(np.median(rows, axis=0))
            continue
        visible = np.where(~covered[:, top:top + STRIP, :, None], rows, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN slice: a pixel covered in every frame
            strips.append(np.nanmedian(visible, axis=0))
    return np.concatenate(strips, axis=0)


def _disk(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return xx * xx + yy * yy <= radius * radius


class CleanPlateSegmenter(Segmenter):
    """Static camera: what differs from the per-pixel temporal median (the clean plate) is foreground.

    A pixel is foreground where any channel differs from the plate by more than `threshold`; each frame's mask
    is opened and closed with a disk of `smooth` pixels and its holes filled. One object takes all of it; for
    several, connected components (at least `min_area` of the frame) are followed from frame to frame by
    nearest centroid, largest first. The subject must move off every pixel for at least half the clip.

    A clip in which the whole picture shifts (:func:`camera_shift`: the camera moves, or one object fills the frame)
    is refused. After :meth:`prepare` (frames sampled across a long clip) the plate is theirs and the
    tracks carry over from one window to the next.
    """

    def __init__(self, threshold: float = 0.1, smooth: int = 1, min_area: float = 0.001):
        self.threshold, self.smooth, self.min_area = threshold, smooth, min_area
        self.plate: np.ndarray | None = None  # the whole clip's, once prepared
        self._centroids: list[np.ndarray | None] | None = None  # the tracks, carried across windows once prepared

    def changed(self, frames: np.ndarray, plate: np.ndarray | None = None) -> np.ndarray:
        plate = median_over_time(frames) if plate is None else plate
        disk = _disk(self.smooth) if self.smooth > 0 else None
        out = np.empty(frames.shape[:3], bool)
        for t, frame in enumerate(frames):  # a frame at a time: no (T, H, W, 3) difference in memory
            m = np.abs(frame - plate).max(axis=-1) > self.threshold
            if disk is not None:
                m = ndimage.binary_closing(ndimage.binary_opening(m, disk), disk)
            out[t] = ndimage.binary_fill_holes(m)
        return out

    def check_clip(self, frames: np.ndarray, moving: np.ndarray) -> None:
        """Refuse a clip with nothing moving, or one whose camera moves."""
        if not moving.any():
            raise Reject("no object found: nothing in the clip differs from its clean plate by more than "
                         f"threshold {self.threshold:g}; the weight-free segmenter needs a static camera and a moving "
                         "subject (configure segmentation: {backend: sam3, model: DIR})")
        shift = camera_shift(frames)
        if shift is not None:
            i, (dy, dx) = shift
            raise Reject(f"the camera moves: the whole picture shifts by {dx:+d} px across and {dy:+d} px down "
                         f"between frames {i} and {i + 1} of the clip's sample (or one object fills the frame); "
                         "the weight-free backends need a static camera and background around the object (configure "
                         "segmentation: {backend: sam3, model: DIR} and removal: {backend: wan_vace, model: DIR})")

    def prepare(self, frames: np.ndarray, object_names: list[str]) -> None:
        self.plate = None
        plate = median_over_time(frames)
        self.check_clip(frames, self.changed(frames, plate))
        self.plate, self._centroids = plate, None

    def segment(self, frames: np.ndarray, object_names: list[str]) -> list[np.ndarray]:
        moving = self.changed(frames, self.plate)
        if self.plate is None:  # the whole clip: checked here (prepare checked a streamed one)
            self.check_clip(frames, moving)
        k = max(1, len(object_names))
        if k == 1:
            return [moving]
        t, h, w = moving.shape
        masks = [np.zeros_like(moving) for _ in range(k)]
        centroids: list[np.ndarray | None] = self._centroids or [None] * k
        for i in range(t):
            labels, n = ndimage.label(moving[i])
            areas = ndimage.sum_labels(np.ones_like(labels), labels, range(1, n + 1)) if n else np.zeros(0)
            parts = [j + 1 for j in np.argsort(-areas) if areas[j] >= self.min_area * h * w]
            centres = ndimage.center_of_mass(moving[i], labels, parts) if parts else []
            free = list(range(len(parts)))
            for track in sorted(range(k), key=lambda j: centroids[j] is None):  # tracks with a history first
                if not free:
                    break
                if centroids[track] is None:
                    pick = free[0]  # the largest unclaimed component
                else:
                    pick = min(free, key=lambda j: float(np.linalg.norm(np.subtract(centres[j],
                                                                                    centroids[track]))))
                free.remove(pick)
                masks[track][i] = labels == parts[pick]
                centroids[track] = np.asarray(centres[pick])
        if self.plate is not None:
            self._centroids = centroids
        return masks


ANALYSIS_SIDE = 256  # camera_shift looks at frames block-averaged to at most this many pixels a side
BLOCK_GRID = 4  # ... split into up to 4 x 4 blocks of at least 16 x 16 pixels
TEXTURE = 0.02  # a block whose grey values vary less than this (std) has nothing to follow
CONSENSUS = 0.75  # the share of textured blocks shifting together that makes a whole-picture move


def camera_shift(frames: np.ndarray) -> tuple[int, tuple[int, int]] | None:
    """The first pair of consecutive frames (i, i + 1) in which the picture shifts as a whole, as (i, (dy, dx) in
    pixels, the content's motion), or None when the camera holds still.

    The grey frames, block-averaged to at most ANALYSIS_SIDE pixels a side, are cut into a grid of blocks; each
    textured block's shift is its phase correlation's peak (zero unless the zero-shift peak is below half of it).
    When at least CONSENSUS of the textured blocks (and they are at least half of all blocks) shift by the same
    amount, give or take one pixel, the picture moved as a whole: the camera moved, or one object fills the frame.
    A moving object with background around it moves only its own blocks.
    """
    grey = frames.mean(axis=-1)
    f = max(1, int(np.ceil(max(grey.shape[1:]) / ANALYSIS_SIDE)))
    h, w = grey.shape[1] // f * f, grey.shape[2] // f * f
    small = grey[:, :h, :w].reshape(len(grey), h // f, f, w // f, f).mean(axis=(2, 4))
    gy, gx = (max(1, min(BLOCK_GRID, n // 16)) for n in small.shape[1:])
    bh, bw = small.shape[1] // gy, small.shape[2] // gx
    window = np.outer(np.hanning(bh), np.hanning(bw))
    blocks = small[:, :gy * bh, :gx * bw].reshape(len(small), gy, bh, gx, bw).transpose(0, 1, 3, 2, 4)
    blocks = blocks.reshape(len(small), gy * gx, bh, bw)
    textured = blocks.std(axis=(2, 3)) >= TEXTURE  # (T, blocks)
    spectra = np.fft.rfft2((blocks - blocks.mean(axis=(2, 3), keepdims=True)) * window)
    for i in range(len(small) - 1):
        both = textured[i] & textured[i + 1]
        if both.sum() < max(1, gy * gx / 2):
            continue  # mostly plain: nothing to tell a moving camera by
        shifts = []
        for b in np.flatnonzero(both):
            cross = spectra[i, b] * np.conj(spectra[i + 1, b])
            r = np.fft.irfft2(cross / np.maximum(np.abs(cross), 1e-12), s=(bh, bw))
            peak = np.unravel_index(int(np.argmax(r)), r.shape)
            if peak == (0, 0) or r[0, 0] >= 0.5 * r[peak]:
                shifts.append((0, 0))
            else:  # the content moved by minus the peak
                shifts.append(tuple(-((q + n // 2) % n - n // 2) for q, n in zip(peak, r.shape)))
        moved = [sh for sh in shifts if sh != (0, 0)]
        if not moved:
            continue
        common = max(set(moved), key=moved.count)
        together = sum(max(abs(a - c) for a, c in zip(sh, common)) <= 1 for sh in moved)
        if together >= CONSENSUS * len(shifts):
            return i, (int(common[0] * f), int(common[1] * f))
    return None


def trimap(mask: np.ndarray, band: int) -> np.ndarray:
    """1 inside the mask eroded by `band` px, 0 outside it dilated by `band` px, 0.5 in between."""
    disk = _disk(band)
    sure = ndimage.binary_erosion(mask, disk)
    maybe = ndimage.binary_dilation(mask, disk)
    return np.where(sure, 1.0, np.where(maybe, 0.5, 0.0))


class TrimapMatter(Matter):
    """A matter that solves alpha per frame inside a trimap band of ``self.band`` pixels around each mask
    (:meth:`alpha`), then estimates the straight foreground colour with pymatting's multi-level method.

    With ``self.context`` set, each frame is solved only in the box around its mask widened by that many pixels
    (outside it the trimap says background: alpha 0, colour 0), so the cost follows the object's size, not the
    frame's; None solves the whole frame (a model that wants the whole picture).
    """

    band: int
    context: int | None = None

    @abstractmethod
    def alpha(self, image: np.ndarray, tri: np.ndarray) -> np.ndarray:
        """Alpha (H, W) in [0, 1] of one frame (H, W, 3) given its trimap (1 sure fg, 0 sure bg, 0.5 unknown)."""

    def matte(self, frames: np.ndarray, masks: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        import pymatting

        def foreground(image: np.ndarray, a: np.ndarray) -> np.ndarray:
            """pymatting's multi-level foreground on numba's one thread: its only parallel loops are nearest-pixel
            resizes, a thread barrier each (24 per frame), which cost 0.55 s per 32x32 frame with 2 threads on a
            busy 2-core machine against 0.4 ms with one; the solver itself is serial either way."""
            import numba

            threads = numba.get_num_threads()
            numba.set_num_threads(1)
            try:
                return pymatting.estimate_foreground_ml(image, a)
            finally:
                numba.set_num_threads(threads)

        alphas, foregrounds = [], []
        for mask in masks:
            alpha = np.zeros(mask.shape, np.float32)
            fg = np.zeros(frames.shape, np.float32)
            for t in range(len(frames)):
                if not mask[t].any():
                    continue
                box = self.box(mask[t])
                image = frames[t][box].astype(np.float64)
                tri = trimap(mask[t][box], self.band)
                if (tri == 1).any() and (tri == 0).any():
                    a = self.alpha(image, tri)
                else:  # thinner than the band, or covering the frame: nothing to learn from, keep the mask
                    a = mask[t][box].astype(np.float64)
                alpha[t][box] = a
                fg[t][box] = np.clip(foreground(image, a), 0.0, 1.0)
            alphas.append(alpha)
            foregrounds.append(fg)
        return alphas, foregrounds

    def box(self, mask: np.ndarray) -> tuple[slice, slice]:
        """The region a frame is solved in: the mask's bounding box widened by ``context`` (or the whole frame)."""
        if self.context is None:
            return slice(None), slice(None)
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        margin = self.band + self.context
        return (slice(max(0, rows[0] - margin), rows[-1] + margin + 1),
                slice(max(0, cols[0] - margin), cols[-1] + margin + 1))


class PymattingMatter(TrimapMatter):
    """pymatting on a trimap band around each mask: closed-form (``cf``, Levin et al.), learning-based
    (``lbdm``, Zheng & Kambhamettu) or ``knn`` alpha, then its multi-level foreground colour estimation."""

    METHODS = ("cf", "lbdm", "knn")
    context = 16  # pixels around the mask: the closed-form solution depends only on 3x3 neighbourhoods

    def __init__(self, method: str = "cf", band: int = 2):
        if method not in self.METHODS:
            raise ValueError(f"pymatting method must be one of {self.METHODS}, got {method!r}")
        self.method, self.band = method, band

    def alpha(self, image: np.ndarray, tri: np.ndarray) -> np.ndarray:
        import pymatting

        estimate = {"cf": pymatting.estimate_alpha_cf, "lbdm": pymatting.estimate_alpha_lbdm,
                    "knn": pymatting.estimate_alpha_knn}[self.method]
        return np.clip(estimate(image, tri), 0.0, 1.0)


class TemporalPlateRemover(Remover):
    """Static camera: each masked pixel (masks dilated by `dilate` px) takes the median of that pixel over the
    frames where it is uncovered; unmasked pixels keep the input. A pixel covered in every frame takes its
    nearest uncovered neighbour's plate value, and the share of such pixels is reported as ``plate_holes``.
    After :meth:`prepare` the plate is the one of the frames sampled across the whole clip."""

    def __init__(self, dilate: int = 2):
        self.dilate = dilate
        self.last_holes = 0.0
        self.plate: np.ndarray | None = None  # the whole clip's, once prepared

    def covered(self, masks: list[np.ndarray]) -> np.ndarray:
        covered = np.zeros(masks[0].shape, bool)
        for m in masks:
            covered |= m
        if self.dilate > 0:
            disk = _disk(self.dilate)
            covered = np.stack([ndimage.binary_dilation(c, disk) for c in covered])
        return covered

    def clean_plate(self, frames: np.ndarray, covered: np.ndarray) -> np.ndarray:
        """Each pixel's median over the frames where it is uncovered; holes filled from their nearest neighbour."""
        plate = median_over_time(frames, covered)  # NaN: the holes, filled below
        holes = np.isnan(plate[..., 0])
        self.last_holes = float(holes.mean())
        if holes.all():
            raise Reject("temporal clean plate: every pixel is covered in every frame")
        if holes.any():
            _, (iy, ix) = ndimage.distance_transform_edt(holes, return_indices=True)
            plate = plate[iy, ix]
        return plate.astype(np.float32)

    def prepare(self, frames: np.ndarray, masks: list[np.ndarray]) -> None:
        self.plate = self.clean_plate(frames, self.covered(masks))

    def remove(self, frames: np.ndarray, masks: list[np.ndarray], caption: str = "") -> np.ndarray:
        covered = self.covered(masks)
        plate = self.clean_plate(frames, covered) if self.plate is None else self.plate
        return np.where(covered[..., None], plate[None], frames).astype(np.float32)


class NoJudge(Judge):
    """No VLM judge: only the weight-free checks decide."""

    def score(self, panels: dict[int, Image.Image], description: str) -> dict[int, tuple[int, int]]:
        return {}


# ------------------------------------------------------------------------------------------ registry
INTERFACES: dict[str, type] = {"captions": Captioner, "segmentation": Segmenter, "matting": Matter,
                               "removal": Remover, "judge": Judge}
BACKENDS: dict[str, dict[str, str | type]] = {
    "captions": {"sidecar": SidecarCaptioner, "qwen3vl": "layert2v.data.engine.backends:Qwen3VLCaptioner"},
    "segmentation": {"clean_plate": CleanPlateSegmenter, "sam3": "layert2v.data.engine.backends:Sam3Segmenter"},
    "matting": {"pymatting": PymattingMatter, "vitmatte": "layert2v.data.engine.backends:VitMatteMatter"},
    "removal": {"temporal_plate": TemporalPlateRemover, "wan_vace": "layert2v.data.engine.backends:WanVACERemover"},
    "judge": {"none": NoJudge, "openai": "layert2v.data.engine.judge:OpenAIJudge",
              "qwen3vl": "layert2v.data.engine.backends:Qwen3VLJudge"},
}


def backend_class(stage: str, name: str) -> type:
    """The class a stage's backend name stands for: a registered name or ``package.module:Class``."""
    target = BACKENDS[stage].get(name)
    if target is None and ":" not in name:
        raise ValueError(f"unknown {stage} backend {name!r}; choose from {sorted(BACKENDS[stage])} or name a "
                         "class as package.module:Class")
    target = target or name
    if isinstance(target, type):
        return target
    module, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"{stage} backend {name!r}: cannot import {target}: {e}") from e
    method = {"captions": "caption", "segmentation": "segment", "matting": "matte", "removal": "remove",
              "judge": "score"}[stage]
    if not callable(getattr(cls, method, None)):
        raise ValueError(f"{stage} backend {target} has no {method}() method")
    return cls


def check_options(stage: str, name: str, options: dict[str, Any]) -> type:
    """Resolve the class and check `options` against its constructor, before any model loads."""
    cls = backend_class(stage, name)
    if callable(getattr(cls, "check", None)):  # e.g. the model directory exists, the API key is set
        cls.check(**options)
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(options) - set(params) - {"self"})
        if unknown:
            allowed = sorted(set(params) - {"self", "args", "kwargs"})
            raise ValueError(f"unknown option(s) {unknown} for {stage} backend {name!r}; allowed: {allowed}")
    return cls


def build_backend(stage: str, name: str, options: dict[str, Any]) -> Any:
    return check_options(stage, name, options)(**options)
