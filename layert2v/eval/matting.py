"""Alpha-matte errors against a ground-truth matte, with the matting literature's conventions.

SAD, Grad and Conn follow the Deep Image Matting (Xu et al. 2017) evaluation code, which implements
Rhemann et al. (2009); MSE is reported x 1e3 and dtSSD (Erofeev et al. 2015) x 1e2 as video-matting
papers do. Generated mattes come with no trimap, so every pixel counts (the "unknown region" is the
whole frame). Image metrics are computed per frame and averaged over frames. Lower is better for all.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

GRAD_SIGMA = 1.4
CONN_STEP = 0.1
CONN_THETA = 0.15


def _pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"predicted alpha has shape {pred.shape} but the ground truth {gt.shape}")
    return pred, gt


def sad(pred: np.ndarray, gt: np.ndarray) -> float:
    """Sum of absolute differences over the frame, / 1000."""
    pred, gt = _pair(pred, gt)
    return float(np.abs(pred - gt).sum() / 1000.0)


def mse(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean squared error over the frame, x 1e3."""
    pred, gt = _pair(pred, gt)
    return float(np.mean((pred - gt) ** 2) * 1e3)


def _kernel_factors(sigma: float, epsilon: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
    """(smooth, derivative) 1-D factors whose outer product is :func:`gaussian_derivative_kernel`."""
    half = int(np.ceil(sigma * np.sqrt(-2.0 * np.log(np.sqrt(2.0 * np.pi) * sigma * epsilon))))
    r = np.arange(-half, half + 1, dtype=np.float64)
    gauss = np.exp(-(r**2) / (2 * sigma**2)) / (sigma * np.sqrt(2 * np.pi))
    derivative = -r * gauss / sigma**2
    norm = np.sqrt(np.sum(gauss**2) * np.sum(derivative**2))  # the L2 norm of their outer product
    return gauss, derivative / norm


def gaussian_derivative_kernel(sigma: float = GRAD_SIGMA) -> np.ndarray:
    """The x-derivative-of-Gaussian kernel of DIM's gaussgradient (epsilon 0.01), scaled to unit L2 norm.

    Half-width ceil(sigma * sqrt(-2 ln(sqrt(2 pi) * sigma * epsilon))): 4 for sigma = 1.4, so 9 x 9.
    Rows are y, columns x; the y kernel is the transpose.
    """
    smooth, derivative = _kernel_factors(sigma)
    return np.outer(smooth, derivative)


def gradient_magnitude(alpha: np.ndarray, sigma: float = GRAD_SIGMA) -> np.ndarray:
    """|grad alpha| from Gaussian-derivative filtering with replicated borders.

    The kernel is an outer product, so it runs as two 1-D passes: the same result with 9x fewer operations.
    """
    smooth, derivative = _kernel_factors(sigma)

    def along(axis: int) -> np.ndarray:
        smoothed = ndimage.correlate1d(alpha, smooth, axis=1 - axis, mode="nearest")
        return ndimage.correlate1d(smoothed, derivative, axis=axis, mode="nearest")

    return np.sqrt(along(1) ** 2 + along(0) ** 2)


def grad(pred: np.ndarray, gt: np.ndarray, sigma: float = GRAD_SIGMA) -> float:
    """Sum of squared differences of gradient magnitudes, / 1000.

    DIM min-max normalises each map first (mat2gray); for mattes spanning [0, 1] that is the identity,
    and it is skipped here so that a faint prediction is not stretched into a confident one.
    """
    pred, gt = _pair(pred, gt)
    return float(np.sum((gradient_magnitude(pred, sigma) - gradient_magnitude(gt, sigma)) ** 2) / 1000.0)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of `mask` (ties: the first in raster order)."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return np.zeros_like(mask)
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (int(np.argmax(sizes)) + 1)


def conn(pred: np.ndarray, gt: np.ndarray, step: float = CONN_STEP, theta: float = CONN_THETA) -> float:
    """Connectivity error (Rhemann et al.; DIM's compute_connectivity_error), / 1000.

    For thresholds l = step, 2 step, ..., 1 take the largest 4-connected component of
    (pred >= l) & (gt >= l). A pixel's level L is the last threshold before it left that component (1 if
    it never does). With d = alpha - L, phi = 1 - d * [d >= theta]; Conn = sum |phi_pred - phi_gt|.
    """
    pred, gt = _pair(pred, gt)
    thresholds = np.round(np.arange(0.0, 1.0 + step / 2, step), 10)
    level = np.full(pred.shape, -1.0)
    for previous, threshold in zip(thresholds[:-1], thresholds[1:]):
        omega = _largest_component((pred >= threshold) & (gt >= threshold))
        level[(level == -1) & ~omega] = previous
    level[level == -1] = 1.0

    def phi(alpha: np.ndarray) -> np.ndarray:
        d = alpha - level
        return 1.0 - d * (d >= theta)

    return float(np.abs(phi(pred) - phi(gt)).sum() / 1000.0)


def dtssd(pred: np.ndarray, gt: np.ndarray) -> float:
    """Temporal coherence error of a (T, H, W) matte, x 1e2.

    dtSSD = 100 * mean over t = 2..T of sqrt(mean over pixels of ((a_t - a_{t-1}) - (g_t - g_{t-1}))^2),
    Erofeev et al.'s per-frame root of the squared error of temporal derivatives, normalised by the pixel
    count (as RVM / MatAnyone report it) so that it does not grow with resolution.
    """
    if pred.shape != gt.shape or pred.ndim != 3 or len(pred) < 2:
        raise ValueError(f"dtSSD needs two (T >= 2, H, W) mattes of one shape, got {pred.shape} and {gt.shape}")
    per_pair = []
    for t in range(1, len(pred)):
        (p0, g0), (p1, g1) = _pair(pred[t - 1], gt[t - 1]), _pair(pred[t], gt[t])
        per_pair.append(np.sqrt(np.mean(((p1 - p0) - (g1 - g0)) ** 2)))
    return float(np.mean(per_pair) * 1e2)


def matting_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """All five errors for one (T, H, W) matte: image metrics averaged over frames, plus dtSSD."""
    if pred.shape != gt.shape:
        raise ValueError(f"predicted alpha has shape {pred.shape} but the ground truth {gt.shape}")
    return {
        "sad": float(np.mean([sad(p, g) for p, g in zip(pred, gt)])),
        "mse": float(np.mean([mse(p, g) for p, g in zip(pred, gt)])),
        "grad": float(np.mean([grad(p, g) for p, g in zip(pred, gt)])),
        "conn": float(np.mean([conn(p, g) for p, g in zip(pred, gt)])),
        "dtssd": dtssd(pred, gt),
    }
