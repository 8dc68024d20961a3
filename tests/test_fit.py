"""Frame windows and resize/centre-crop (layert2v.data.fit) as the data path, the engine and UI uploads use them, and
FolderDataset's option."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import toy_clip

from layert2v.data.fit import ClipShape, crop_box, fit_clip, frame_window, resize_frames, resize_layers
from layert2v.data.folder import FolderDataset, write_folder
from layert2v.video import LayeredVideo


def test_same_seed_and_draw_give_the_same_window_and_draws_move_it():
    shape = ClipShape(frames=9, height=16, width=16, seed=3)
    first = [shape.window(100, 24, draw) for draw in range(20)]
    assert first == [shape.window(100, 24, draw) for draw in range(20)]  # as a resumed run would read
    assert len({w[0] for w in first}) > 5
    for w in first:
        assert w == list(range(w[0], w[0] + 9)) and 0 <= w[0] and w[-1] < 100
    other_seed = [ClipShape(9, 16, 16, seed=4).window(100, 24, draw) for draw in range(20)]
    assert other_seed != first


def test_frame_rate_sets_the_step_and_short_clips_shrink_it_then_hold_the_last_frame():
    shape = ClipShape(frames=5, height=8, width=8, fps=16)
    window = shape.window(100, 32, 1)
    assert np.all(np.diff(window) == 2)  # 32 fps source at 16 fps: every other frame
    window = shape.window(100, 24, 1)
    assert set(np.diff(window)) <= {1, 2} and window[-1] - window[0] == 6  # step 1.5
    assert shape.window(7, 32, 5) == [0, 1, 3, 4, 6]  # step 2 does not fit in 7 frames: 1.5
    assert shape.window(3, 32, 5) == [0, 1, 2, 2, 2]  # too short: the last frame is held
    assert np.all(np.diff(shape.window(100, 8, 0)) == 1)  # a slower source is not stretched


def test_without_a_draw_the_window_starts_at_the_first_frame():
    """decompose and the UI's uploads: the first frames at the model's rate, or consecutive ones (fps None)."""
    assert frame_window(31, 24, 9, 8) == list(range(0, 25, 3))
    assert frame_window(31, 24, 21, 8) == [int(i * 1.5) for i in range(21)]  # step 3 runs past the end: 1.5
    assert frame_window(3, 1.0, 5) == [0, 1, 2, 2, 2] and frame_window(1, 1.0, 3) == [0, 0, 0]
    assert frame_window(10, 1.0, 4) == [0, 1, 2, 3]


def test_the_engine_takes_the_rate_exactly():
    """exact_rate: the frame nearest each tick (frames repeat above the source's rate); a short clip is refused."""
    assert frame_window(10, 30.0, None, 16.0, exact_rate=True) == [0, 2, 4, 6, 8]
    assert frame_window(10, 30.0, 5, 16.0) == [0, 1, 3, 5, 7]  # the window rule rounds down instead
    assert frame_window(3, 10.0, None, 20.0, exact_rate=True) == [0, 0, 1, 2, 2]
    assert frame_window(5, 10.0, 3, None, exact_rate=True) == [0, 1, 2]
    with pytest.raises(ValueError, match="has 5 frames at 10 fps, fewer than the 6 asked for"):
        frame_window(5, 10.0, 6, None, exact_rate=True)


def test_bad_shape_is_refused():
    with pytest.raises(ValueError, match="frames must be a positive integer"):
        ClipShape(frames=0, height=8, width=8)
    with pytest.raises(ValueError, match="fps must be positive"):
        ClipShape(frames=5, height=8, width=8, fps=0)


def test_centre_crop_keeps_the_middle_at_the_target_aspect():
    assert crop_box(40, 80, 16, 16) == (0, 20, 40, 40)
    assert crop_box(90, 40, 16, 32) == (35, 0, 20, 40)
    frames = np.zeros((2, 40, 80, 3), np.float32)
    frames[:, :, :20] = 1.0  # left and right quarters marked: cut away by a square crop
    frames[:, :, 60:] = 1.0
    frames[:, :, 20:60, 0] = np.linspace(0.2, 0.8, 40)  # a ramp across the kept middle
    out = resize_frames(frames, 16, 16)
    assert out.shape == (2, 16, 16, 3) and out.dtype == np.float32
    assert out[..., 1:].max() == 0.0
    assert 0.2 <= out[..., 0].min() and out[..., 0].max() <= 0.8 and np.all(np.diff(out[0, 0, :, 0]) > 0)
    alpha = resize_frames(np.ones((3, 30, 50), np.float32), 8, 12)
    assert alpha.shape == (3, 8, 12) and np.allclose(alpha, 1.0)
    stretched = resize_frames(frames, 16, 16, crop=False)  # the engine's --size: the whole frame, squeezed
    assert stretched.shape == (2, 16, 16, 3)
    assert stretched[:, :, :3, 1].min() > 0.99 and stretched[:, :, -3:, 1].min() > 0.99  # both quarters kept


def _edge_clip() -> LayeredVideo:
    """A red disc (soft edge) whose straight colour is green where its alpha is 0."""
    t, h, w = 2, 64, 96
    yy, xx = np.mgrid[0:h, 0:w]
    alpha = np.clip(20.0 - np.hypot(yy - 32, xx - 48), 0, 1).astype(np.float32)
    alpha = np.repeat(alpha[None], t, axis=0)
    fg = np.zeros((t, h, w, 3), np.float32)
    fg[..., 1] = 1.0
    fg[alpha > 0] = (1.0, 0.0, 0.0)
    bg = np.full((t, h, w, 3), 0.5, np.float32)
    full = fg * alpha[..., None] + bg * (1 - alpha[..., None])
    return LayeredVideo(full=full, background=bg, foregrounds=[fg], alphas=[alpha], fps=8)


def test_foregrounds_resize_premultiplied_with_their_alpha():
    video = _edge_clip()
    out = resize_layers(video, 16, 16)
    assert out.full.shape == (2, 16, 16, 3) and out.alphas[0].shape == (2, 16, 16)
    # the premultiplied foreground the VAE encodes is exactly the resized premultiplied original
    np.testing.assert_allclose(out.premultiplied(1), resize_frames(video.premultiplied(1), 16, 16), atol=1e-5)
    np.testing.assert_allclose(out.alphas[0], resize_frames(video.alphas[0], 16, 16), atol=1e-6)
    edge = (out.alphas[0] > 0) & (out.alphas[0] < 1)
    assert edge.any()
    assert out.foregrounds[0][edge][:, 1].max() < 1e-5  # no green from outside the matte at the soft edge
    naive = resize_frames(video.foregrounds[0], 16, 16)  # straight colour resized on its own would bleed green
    assert naive[edge][:, 1].max() > 0.05


def test_fit_clip_fits_frames_size_and_rate():
    video = toy_clip(0, num_foregrounds=2, frames=9, size=32)
    out = fit_clip(video, ClipShape(frames=5, height=16, width=24, fps=4), draw=2)
    assert (out.num_frames, out.size, out.num_foregrounds, out.fps) == (5, (24, 16), 2, 4)
    assert out.prompts == video.prompts
    same = fit_clip(video, ClipShape(frames=9, height=32, width=32), draw=7)
    np.testing.assert_array_equal(same.full, video.full)  # already the shape: untouched


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    write_folder(root, [toy_clip(1, frames=9, size=32), toy_clip(2, num_foregrounds=2, frames=9, size=32)])
    return root


def test_folder_dataset_default_is_unchanged_and_shape_fits_clips(folder):
    plain = FolderDataset(folder)
    stored = LayeredVideo.load(folder / "000000")
    np.testing.assert_array_equal(plain[0].full, stored.full)
    np.testing.assert_array_equal(plain[0].foregrounds[0], stored.foregrounds[0])
    shape = ClipShape(frames=5, height=16, width=16, seed=1)
    fitted = FolderDataset(folder, shape)
    np.testing.assert_array_equal(fitted[1].alphas[1], fit_clip(plain[1], shape, draw=1).alphas[1])
    clip = fitted(7, 2)  # the trainer's call: sample with K=2, window drawn from index 7
    assert (clip.num_frames, clip.size, clip.num_foregrounds) == (5, (16, 16), 2)
    again = FolderDataset(folder, shape)(7, 2)  # a fresh process (a resumed run) reads the same clip
    np.testing.assert_array_equal(clip.full, again.full)
    with pytest.raises(ValueError, match="no sample with 3 foreground"):
        fitted(0, 3)


def test_a_shape_equal_to_the_stored_clips_changes_nothing(folder):
    """So a trainer may always pass the stage's shape: clips already cut to it come through bit for bit."""
    plain, fitted = FolderDataset(folder), FolderDataset(folder, ClipShape(frames=9, height=32, width=32, seed=5))
    for i in range(len(plain)):
        a, b = plain[i], fitted(i, plain.num_foregrounds(i))
        for x, y in zip([a.full, a.background, *a.foregrounds, *a.alphas], [b.full, b.background, *b.foregrounds,
                                                                             *b.alphas]):
            np.testing.assert_array_equal(x, y)
