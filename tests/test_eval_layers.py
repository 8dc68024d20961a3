"""Layer metrics on tiny layered videos built by hand."""

import numpy as np
import pytest

from layert2v.eval import layers
from layert2v.video import LayeredVideo


def make(alphas, fg=None, bg=None, full=None):
    """A LayeredVideo from (K, T, H, W) alphas; colours default to grey, full to the composite."""
    alphas = [np.asarray(a, np.float32) for a in alphas]
    shape = (*alphas[0].shape, 3)
    fgs = [np.full(shape, 0.8, np.float32) if fg is None else np.asarray(fg, np.float32) for _ in alphas]
    bg = np.full(shape, 0.2, np.float32) if bg is None else np.asarray(bg, np.float32)
    video = LayeredVideo(full=np.zeros(shape, np.float32), background=bg, foregrounds=fgs, alphas=alphas)
    video.full = video.composite() if full is None else np.asarray(full, np.float32)
    return video


def test_psnr_by_hand():
    # MSE 0.01 -> -10 log10(0.01) = 20 dB; identical images hit the 100 dB cap
    assert layers.psnr(np.zeros((2, 2)), np.full((2, 2), 0.1)) == pytest.approx(20.0)
    assert layers.psnr(np.ones(3), np.ones(3)) == 100.0


def test_recomposite_psnr():
    video = make([np.ones((2, 2, 2)) * 0.5])
    assert layers.recomposite_psnr(video) == 100.0
    video.full = video.composite() + 0.1  # composite is 0.5 everywhere, so +0.1 stays inside [0, 1]
    assert layers.recomposite_psnr(video) == pytest.approx(20.0)


def test_fg_leakage_counts_background_pixels_in_the_foreground_colour():
    # one frame, four pixels; alpha covers pixels 0..2 with a pure red foreground (mean colour red).
    # background: red (distance 0, leaks), 0.95 red (distance 0.05, leaks), blue (distance sqrt 2), red
    # outside the matte (not counted) -> 2 / 3
    alpha = [[[[1.0, 1.0, 1.0, 0.0]]]]
    red = np.zeros((1, 1, 4, 3))
    red[..., 0] = 1.0
    bg = np.array([[[[1, 0, 0], [0.95, 0, 0], [0, 0, 1], [1, 0, 0]]]], np.float32)
    assert layers.fg_leakage(make(alpha, fg=red, bg=bg)) == pytest.approx(2 / 3)


def test_fg_leakage_is_undefined_without_any_foreground_pixel():
    assert layers.fg_leakage(make([np.zeros((2, 2, 2))])) is None


def test_alpha_binariness():
    # 0 and 0.04 are within 0.05 of 0, 0.96 within 0.05 of 1, 0.5 is neither -> 3 / 4
    assert layers.alpha_binariness(make([[[[0.0, 0.04, 0.5, 0.96]]]])) == pytest.approx(0.75)


def test_alpha_stability_by_hand():
    # one matte over 3 frames of 2 pixels: [0 0] -> [1 0] -> [1 0]: per-frame change 0.5 then 0
    moving = [[[0.0, 0.0]], [[1.0, 0.0]], [[1.0, 0.0]]]
    video = make([moving])
    assert layers.alpha_stability_curve(video).tolist() == pytest.approx([0.5, 0.0])
    assert layers.alpha_stability(video) == pytest.approx(0.25)
    # a second, still matte halves the average
    video = make([moving, np.zeros((3, 1, 2))])
    assert layers.alpha_stability_curve(video).tolist() == pytest.approx([0.25, 0.0])


def test_iou_by_hand():
    # pred {0, 1}, gt {1, 2} -> 1 / 3; both empty counts as agreement
    assert layers.iou(np.array([1.0, 1, 0, 0]), np.array([0.0, 1, 1, 0])) == pytest.approx(1 / 3)
    assert layers.iou(np.zeros(4), np.zeros(4)) == 1.0
    assert layers.iou(np.array([0.5]), np.array([0.5])) == 1.0  # 0.5 is not above the threshold: both empty


def test_gt_metrics_of_a_perfect_prediction():
    video = make([np.ones((2, 2, 2)) * 0.7])
    out = layers.gt_layer_metrics(video, video)
    assert out == {"psnr_full": 100.0, "psnr_background": 100.0, "psnr_recomposite": 100.0,
                   "psnr_foreground_1": 100.0, "psnr_alpha_1": 100.0, "iou_alpha_1": 1.0}


def test_recomposite_against_ground_truth_uses_the_layers_not_the_full_segment():
    # a decomposition whose full segment is the input exactly, but whose layers add up to 0.1 off it:
    # psnr_full is perfect, psnr_recomposite is 20 dB (MSE 0.01)
    truth = make([np.ones((2, 2, 2)) * 0.5])
    video = make([np.ones((2, 2, 2)) * 0.5], bg=np.full((2, 2, 2, 3), 0.4, np.float32))
    video.full = truth.full.copy()
    out = layers.gt_layer_metrics(video, truth)
    assert out["psnr_full"] == 100.0
    assert out["psnr_recomposite"] == pytest.approx(20.0)  # composite 0.5*0.8 + 0.5*0.4 = 0.6 vs 0.5
    assert out["psnr_background"] == pytest.approx(-10 * np.log10(0.04))  # 0.4 vs 0.2


def test_gt_must_match_in_shape_and_layer_count():
    video = make([np.zeros((2, 2, 2))])
    with pytest.raises(ValueError, match="resize/trim"):
        layers.check_matches(video, make([np.zeros((3, 2, 2))]), "v")
    with pytest.raises(ValueError, match="same layer count"):
        layers.check_matches(video, make([np.zeros((2, 2, 2))] * 2), "v")
