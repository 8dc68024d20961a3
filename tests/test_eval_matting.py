"""Matting errors on tiny mattes whose answers are worked out by hand in the comments."""

import math

import numpy as np
import pytest

from layert2v.eval import matting


def test_sad_and_mse_of_a_uniform_error():
    # 16 pixels off by 0.5: SAD = 16 * 0.5 / 1000; MSE = 0.25 * 1e3
    pred, gt = np.full((4, 4), 0.5), np.zeros((4, 4))
    assert matting.sad(pred, gt) == pytest.approx(0.008)
    assert matting.mse(pred, gt) == pytest.approx(250.0)
    assert matting.sad(gt, gt) == matting.mse(gt, gt) == 0.0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        matting.sad(np.zeros((2, 2)), np.zeros((2, 3)))


def test_gradient_kernel_size_and_norm():
    # half-width ceil(1.4 * sqrt(-2 ln(sqrt(2 pi) * 1.4 * 0.01))) = ceil(1.4 * 2.589) = ceil(3.62) = 4
    kx = matting.gaussian_derivative_kernel(1.4)
    assert kx.shape == (9, 9)
    assert np.sum(kx**2) == pytest.approx(1.0)
    assert np.allclose(kx, -kx[:, ::-1])  # odd in x
    assert kx[4, 4] == 0.0


def test_grad_of_an_impulse_is_twice_its_squared_height():
    # Away from the border, an impulse of height h yields gx = h * kx and gy = h * ky (shifted copies), so
    # sum |grad|^2 = h^2 (|kx|^2 + |ky|^2) = 2 h^2 because the kernel has unit norm. Against a flat GT:
    # Grad = 2 h^2 / 1000.
    gt = np.zeros((11, 11))
    pred = gt.copy()
    pred[5, 5] = 1.0
    assert matting.grad(pred, gt) == pytest.approx(0.002)
    pred[5, 5] = 0.5
    assert matting.grad(pred, gt) == pytest.approx(0.0005)


def test_grad_ignores_a_flat_offset_that_sad_sees():
    pred, gt = np.full((6, 6), 0.3), np.full((6, 6), 0.7)
    assert matting.grad(pred, gt) == pytest.approx(0.0)
    assert matting.sad(pred, gt) == pytest.approx(36 * 0.4 / 1000)


def test_conn_of_a_disconnected_pixel():
    # pred [1 1 0 1], gt [1 1 1 1]. From threshold 0.1 on, the common mask [1 1 0 1] has largest component
    # {0, 1}, so pixels 2 and 3 get level 0; pixels 0 and 1 stay connected (level 1).
    # d_pred = [0 0 0 1] -> phi_pred = [1 1 1 0]; d_gt = [0 0 1 1] -> phi_gt = [1 1 0 0]; sum |diff| = 1
    pred, gt = np.array([[1.0, 1.0, 0.0, 1.0]]), np.ones((1, 4))
    assert matting.conn(pred, gt) == pytest.approx(0.001)


def test_conn_with_a_fractional_gap_below_theta():
    # pred [1 1 0.55 1], gt [1 1 1 1]. Up to 0.5 all four pixels are connected; at 0.6 pixel 2 drops out
    # and pixel 3 is cut off, so both get level 0.5. d_pred = [0 0 0.05 0.5] -> phi_pred = [1 1 1 0.5]
    # (0.05 < theta = 0.15 is forgiven); d_gt = [0 0 0.5 0.5] -> phi_gt = [1 1 0.5 0.5]; sum |diff| = 0.5
    pred, gt = np.array([[1.0, 1.0, 0.55, 1.0]]), np.ones((1, 4))
    assert matting.conn(pred, gt) == pytest.approx(0.0005)
    assert matting.conn(gt, gt) == 0.0


def test_dtssd_by_hand():
    # pred frames [0 0], [1 0], [1 0] vs a constant zero GT. Temporal derivatives: [1 0] then [0 0].
    # per pair sqrt(mean of squares): sqrt(0.5) and 0 -> mean sqrt(0.5) / 2 -> x 100
    pred = np.array([[[0.0, 0.0]], [[1.0, 0.0]], [[1.0, 0.0]]])
    assert matting.dtssd(pred, np.zeros_like(pred)) == pytest.approx(100 * math.sqrt(0.5) / 2)


def test_dtssd_ignores_a_constant_error_over_time():
    gt = np.random.default_rng(0).random((4, 3, 3))
    assert matting.dtssd(np.clip(gt + 0.3, 0, 2), gt) == pytest.approx(0.0)


def test_matting_metrics_average_image_metrics_over_frames():
    # frame 1 off by 0.5 on 4 pixels (SAD 0.002, MSE 250), frame 2 exact -> means 0.001 and 125
    pred = np.stack([np.full((2, 2), 0.5), np.zeros((2, 2))])
    out = matting.matting_metrics(pred, np.zeros_like(pred))
    assert out["sad"] == pytest.approx(0.001)
    assert out["mse"] == pytest.approx(125.0)
    assert set(out) == {"sad", "mse", "grad", "conn", "dtssd"}


def test_separable_filtering_equals_the_2d_kernel():
    from scipy import ndimage

    alpha = np.random.default_rng(0).random((12, 15))
    kx = matting.gaussian_derivative_kernel()
    direct = np.hypot(ndimage.correlate(alpha, kx, mode="nearest"), ndimage.correlate(alpha, kx.T, mode="nearest"))
    assert np.allclose(matting.gradient_magnitude(alpha), direct)
