"""Layer metrics: do the generated layers add up, stay apart, and hold still where they should?

Without ground truth they judge a layered video by itself (recomposition, colour leakage, matte
binariness and stability); with a ground-truth layered video they compare layer by layer.
"""

from __future__ import annotations

import numpy as np

from ..video import LayeredVideo

PSNR_CAP = 100.0  # dB, for identical images (keeps report.json finite)
LEAK_TOLERANCE = 0.1  # Euclidean RGB distance in [0, 1] units
BINARY_MARGIN = 0.05
IOU_THRESHOLD = 0.5


def mean_squared_error(a: np.ndarray, b: np.ndarray) -> float:
    """Mean of (a - b)^2 over all pixels, channels and frames."""
    return float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


def psnr_of(err: float) -> float:
    """PSNR in dB of a mean squared error of images in [0, 1]; capped at 100 dB. A clip scored in parts has the PSNR
    of its parts' mean squared errors averaged by size."""
    return PSNR_CAP if err <= 10 ** (-PSNR_CAP / 10) else float(-10.0 * np.log10(err))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB for images in [0, 1] over all pixels, channels and frames; capped at 100 dB."""
    return psnr_of(mean_squared_error(a, b))


def recomposite_psnr(video: LayeredVideo) -> float:
    """PSNR of the foregrounds composited over the generated background against the generated full video."""
    return psnr(video.composite(), video.full)


def fg_leakage(video: LayeredVideo, tolerance: float = LEAK_TOLERANCE) -> float | None:
    """Share of background pixels under a foreground that carry that foreground's colour.

    For each foreground k and frame t, R = {alpha_k > 0.5} and m = mean straight colour of foreground k
    over R. A background pixel in R leaks if ||background - m||_2 <= tolerance. The result is leaking
    pixels / pixels in R, pooled over frames and foregrounds; None if no foreground covers any pixel.
    A background that is genuinely the subject's colour (a white cat on snow) also counts: compare runs.
    """
    leaking, covered = fg_leakage_counts(video, tolerance)
    return leaking / covered if covered else None


def fg_leakage_counts(video: LayeredVideo, tolerance: float = LEAK_TOLERANCE) -> tuple[int, int]:
    """(leaking pixels, pixels in R) of :func:`fg_leakage`: a clip scored in parts pools these."""
    leaking = covered = 0
    for fg, alpha in zip(video.foregrounds, video.alphas):
        for t in range(video.num_frames):
            region = alpha[t] > 0.5
            n = int(region.sum())
            if n == 0:
                continue
            mean_colour = fg[t][region].astype(np.float64).mean(axis=0)
            distance = np.linalg.norm(video.background[t][region].astype(np.float64) - mean_colour, axis=-1)
            leaking += int((distance <= tolerance).sum())
            covered += n
    return leaking, covered


def alpha_binariness(video: LayeredVideo, margin: float = BINARY_MARGIN) -> float:
    """Share of alpha values within `margin` of 0 or 1, over all mattes, frames and pixels."""
    near = sum(int(((a <= margin) | (a >= 1.0 - margin)).sum()) for a in video.alphas)
    return near / sum(a.size for a in video.alphas)


def alpha_stability_curve(video: LayeredVideo) -> np.ndarray:
    """Per frame t = 2..T, mean |a_t - a_{t-1}| over pixels and mattes: (T - 1,). Lower is steadier."""
    return alpha_change_curve(video.alphas)


def alpha_change_curve(alphas: list[np.ndarray]) -> np.ndarray:
    """:func:`alpha_stability_curve` of mattes (T, H, W) given as arrays (a clip scored in parts joins them)."""
    frames = len(alphas[0])
    curve = np.zeros(frames - 1)
    for alpha in alphas:
        curve += [np.abs(alpha[t] - alpha[t - 1]).mean(dtype=np.float64) for t in range(1, frames)]
    return curve / len(alphas)


def alpha_stability(video: LayeredVideo) -> float:
    """Mean |a_t - a_{t-1}| over mattes, frame pairs and pixels."""
    return float(alpha_stability_curve(video).mean())


def iou(pred: np.ndarray, gt: np.ndarray, threshold: float = IOU_THRESHOLD) -> float:
    """Volumetric IoU of (pred > threshold) and (gt > threshold) over the whole clip; 1.0 if both are empty."""
    p, g = pred > threshold, gt > threshold
    union = int((p | g).sum())
    return 1.0 if union == 0 else int((p & g).sum()) / union


def check_matches(video: LayeredVideo, gt: LayeredVideo, name: str) -> None:
    """Raise if a ground truth cannot be compared with `video` layer by layer."""
    if gt.full.shape != video.full.shape:
        raise ValueError(
            f"ground truth for {name} is {gt.full.shape} (T, H, W, C) but the video is {video.full.shape}: "
            "resize/trim one of them so they match"
        )
    if gt.num_foregrounds != video.num_foregrounds:
        raise ValueError(
            f"ground truth for {name} has {gt.num_foregrounds} foreground(s) but the video has "
            f"{video.num_foregrounds}: give a ground truth with the same layer count"
        )


def gt_layer_metrics(video: LayeredVideo, gt: LayeredVideo) -> dict[str, float]:
    """Per-layer PSNR (foregrounds premultiplied: their colour outside the matte is arbitrary) and alpha IoU.

    ``psnr_recomposite`` compares the composite of the video's own layers with the ground truth's full video: for a
    decomposition, whose ground-truth full video is its input, it says whether the layers add back up to the input
    (``psnr_full`` only says whether the video's full segment does).
    """
    out = {"psnr_full": psnr(video.full, gt.full), "psnr_background": psnr(video.background, gt.background),
           "psnr_recomposite": psnr(video.composite(), gt.full)}
    for k in range(1, video.num_foregrounds + 1):
        out[f"psnr_foreground_{k}"] = psnr(video.premultiplied(k), gt.premultiplied(k))
        out[f"psnr_alpha_{k}"] = psnr(video.alphas[k - 1], gt.alphas[k - 1])
        out[f"iou_alpha_{k}"] = iou(video.alphas[k - 1], gt.alphas[k - 1])
    return out
