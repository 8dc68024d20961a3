"""VBench dimensions, computed the way VBench computes them, on numpy videos.

Every function takes one clip, (T, H, W, 3) float in [0, 1], and returns that clip's score. Networks
(DINO, CLIP, RAFT, AMT, ViCLIP, the LAION head) sit behind the small protocols below, so the arithmetic
here is testable with stand-ins and the real backbones live in :mod:`layert2v.eval.backbones`.

Frames are quantised to 8-bit first (``round(x * 255)``) because VBench reads 8-bit video files: a
score computed on float frames would not be comparable with published numbers.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

# Table 1 of LayerT2V, then the two extra dimensions LayerFlow and VBench add, then the weight-free
# motion figure. Dynamic Degree and Frame Difference sit next to the temporal scores on purpose: a
# static video scores perfectly on flicker and consistency, and only these two columns show it.
DIMENSIONS: dict[str, str] = {
    "aesthetic_quality": "Aesthetic Quality",
    "motion_smoothness": "Motion Smoothness",
    "temporal_flickering": "Temporal Flickering",
    "frame_difference": "Frame Difference (0-255, weight-free)",
    "dynamic_degree": "Dynamic Degree",
    "subject_consistency": "Subject Consistency",
    "background_consistency": "Background Consistency",
    "text_alignment": "Text Alignment (ViCLIP)",
}


# ------------------------------------------------------------------------------------------ protocols
@runtime_checkable
class ImageFeatureExtractor(Protocol):
    """Per-frame image embeddings (DINO ViT-B/16 for subject, CLIP ViT-B/32 for background consistency)."""

    def encode(self, frames: np.ndarray) -> np.ndarray:
        """(T, H, W, 3) float in [0, 1] -> (T, D) features (need not be normalised)."""
        ...


@runtime_checkable
class FlowEstimator(Protocol):
    """Optical flow between two frames (RAFT for Dynamic Degree)."""

    def flow(self, frame0: np.ndarray, frame1: np.ndarray) -> np.ndarray:
        """Two (H, W, 3) float frames in [0, 1] -> (H, W, 2) flow (u, v) in pixels."""
        ...


@runtime_checkable
class FrameInterpolator(Protocol):
    """Middle-frame interpolation (AMT-S for Motion Smoothness)."""

    def interpolate(self, frame0: np.ndarray, frame1: np.ndarray) -> np.ndarray:
        """Two (H, W, 3) float frames in [0, 1] -> the (H, W, 3) frame halfway between them, in [0, 1]."""
        ...


@runtime_checkable
class AestheticScorer(Protocol):
    """LAION aesthetic predictor: a linear head on normalised CLIP ViT-L/14 image embeddings."""

    def score(self, frames: np.ndarray) -> np.ndarray:
        """(T, H, W, 3) float in [0, 1] -> (T,) raw LAION scores (roughly 1..10)."""
        ...


@runtime_checkable
class VideoTextEncoder(Protocol):
    """ViCLIP: one embedding for a short clip and one for a prompt, in a shared space."""

    num_frames: int  # frames the video tower expects (8 for ViCLIP)

    def encode_video(self, frames: np.ndarray) -> np.ndarray:
        """(num_frames, H, W, 3) float in [0, 1] -> (D,) embedding."""
        ...

    def encode_text(self, text: str) -> np.ndarray:
        """A prompt -> (D,) embedding."""
        ...


# ------------------------------------------------------------------------------------------- helpers
def to_8bit(frames: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] -> float64 values on the 0..255 integer grid, as a decoded video file gives."""
    return np.round(np.clip(np.asarray(frames, dtype=np.float64), 0.0, 1.0) * 255.0)


def _check_clip(frames: np.ndarray, min_frames: int = 2) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected a (T, H, W, 3) clip, got shape {frames.shape}")
    if frames.shape[0] < min_frames:
        raise ValueError(f"this dimension needs at least {min_frames} frames, got {frames.shape[0]}")


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


# --------------------------------------------------------------------------------- weight-free scores
def temporal_flickering(frames: np.ndarray) -> float:
    """(255 - mean |f_i - f_{i+1}|) / 255 over all pixels, channels and adjacent pairs (8-bit scale)."""
    return (255.0 - frame_difference(frames)) / 255.0


def frame_difference(frames: np.ndarray) -> float:
    """Mean |f_i - f_{i+1}| on the 0..255 scale: 0 for a still video. Equals 255 * (1 - flicker).

    Reported next to Temporal Flickering so a static video, which flickers perfectly well, is visible
    even when no optical-flow model is available for Dynamic Degree.
    """
    _check_clip(frames)
    return float(np.mean([np.abs(to_8bit(frames[i]) - to_8bit(frames[i + 1])).mean() for i in range(len(frames) - 1)]))


# ---------------------------------------------------------------------------------- feature-based ones
def consistency_terms(features: np.ndarray) -> tuple[float, int]:
    """VBench's subject/background consistency for one clip as (sum of per-frame terms, number of terms).

    Frame i >= 2 contributes (max(0, cos(f_1, f_i)) + max(0, cos(f_{i-1}, f_i))) / 2. The clip's score is
    sum / count; the benchmark score divides the sum over all clips by the count over all clips (VBench
    weights by frames, not by clips).
    """
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need (T >= 2, D) features, got shape {features.shape}")
    total = 0.0
    for i in range(1, len(features)):
        to_first = max(0.0, _cosine(features[0], features[i]))
        to_previous = max(0.0, _cosine(features[i - 1], features[i]))
        total += (to_first + to_previous) / 2.0
    return total, len(features) - 1


def consistency(frames: np.ndarray, extractor: ImageFeatureExtractor) -> tuple[float, int]:
    """Subject (DINO) or background (CLIP) consistency terms of one clip: see :func:`consistency_terms`."""
    _check_clip(frames)
    return consistency_terms(extractor.encode(frames))


def motion_smoothness(frames: np.ndarray, interpolator: FrameInterpolator) -> float:
    """Drop the odd frames, interpolate them back from their even neighbours, and score the error.

    Score = (255 - mean abs error between interpolated and original odd frames) / 255 on the 8-bit scale.
    The last odd frame of an even-length clip has no right neighbour and is not scored, as in VBench.
    """
    _check_clip(frames, min_frames=3)
    even = frames[0::2]
    errors = []
    for j in range(len(even) - 1):
        middle = interpolator.interpolate(even[j], even[j + 1])
        errors.append(np.abs(to_8bit(middle) - to_8bit(frames[2 * j + 1])).mean())
    return (255.0 - float(np.mean(errors))) / 255.0


def aesthetic_quality(frames: np.ndarray, scorer: AestheticScorer) -> float:
    """Mean over frames of the LAION aesthetic score divided by 10."""
    _check_clip(frames, min_frames=1)
    return float(np.mean(np.asarray(scorer.score(frames), dtype=np.float64) / 10.0))


# ----------------------------------------------------------------------------------- dynamic degree
def flow_peak_magnitude(flow: np.ndarray) -> float:
    """Mean of the top 5% flow magnitudes (int(H * W * 0.05) pixels): large motion of a small subject counts."""
    magnitude = np.sqrt(np.square(flow[..., 0]) + np.square(flow[..., 1])).ravel()
    cut = int(magnitude.size * 0.05)
    if cut == 0:
        return 0.0
    return float(np.sort(magnitude)[::-1][:cut].mean())


def dynamic_thresholds(height: int, width: int, num_frames: int, fps: float) -> tuple[float, int]:
    """VBench's rule: (magnitude threshold, number of frame pairs that must exceed it).

    The threshold is 6 px at a short side of 256, scaled with the short side, and raised by 8 / fps for
    clips slower than 8 fps; the count is round(4 * num_frames / 16) of the (subsampled) frames.
    """
    factor = max(1.0, 8.0 / fps)
    return factor * 6.0 * (min(height, width) / 256.0), round(4 * (num_frames / 16.0))


def dynamic_frame_indices(num_frames: int, fps: float) -> list[int]:
    """VBench estimates flow at about 8 fps: every round(fps / 8)-th frame (at least every frame)."""
    return list(range(0, num_frames, max(1, round(fps / 8))))


def is_dynamic(peaks: list[float], threshold: float, count: int) -> bool:
    """True once `count` frame pairs have a peak magnitude above `threshold` (VBench's check_move)."""
    moving = 0
    for peak in peaks:
        if peak > threshold:
            moving += 1
        if moving >= count:
            return True
    return False


def dynamic_degree(frames: np.ndarray, fps: float, estimator: FlowEstimator) -> bool:
    """Whether the clip contains large motion; the benchmark score is the share of dynamic clips."""
    _check_clip(frames)
    sampled = frames[dynamic_frame_indices(len(frames), fps)]
    threshold, count = dynamic_thresholds(frames.shape[1], frames.shape[2], len(sampled), fps)
    quantised = [(to_8bit(frame) / 255.0).astype(np.float32) for frame in sampled]
    peaks = [flow_peak_magnitude(estimator.flow(a, b)) for a, b in zip(quantised[:-1], quantised[1:])]
    return is_dynamic(peaks, threshold, count)


# ----------------------------------------------------------------------------------- text alignment
def middle_frame_indices(num_samples: int, length: int) -> list[int]:
    """Split the clip into `num_samples` equal stretches and take the middle of each (VBench 'middle').

    Clips shorter than `num_samples` repeat their last frame.
    """
    taken = min(num_samples, length)
    edges = np.linspace(0, length, taken + 1).astype(int)
    indices = [int(start + end - 1) // 2 for start, end in zip(edges[:-1], edges[1:])]
    return indices + [indices[-1]] * (num_samples - len(indices))


def text_alignment(frames: np.ndarray, text: str, encoder: VideoTextEncoder) -> float:
    """Cosine between the ViCLIP embedding of `num_frames` middle-sampled frames and the prompt's."""
    _check_clip(frames, min_frames=1)
    clip = frames[middle_frame_indices(encoder.num_frames, len(frames))]
    video_embedding = np.asarray(encoder.encode_video(clip), np.float64)
    return _cosine(video_embedding, np.asarray(encoder.encode_text(text), np.float64))
