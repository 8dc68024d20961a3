"""Layered editing (issue 16, section 4): given layers come out bit-identical through the pipeline, through save and
load, and through the CLI's decompose / generate --keep / edit; bad input ends in one line before any model loads.

The built-in model at 5 frames of 32x32, one step, no CFG: a few seconds per call on 2 cores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import toy_clip

from layert2v import editing
from layert2v.cli import BUILTIN_MODEL
from layert2v.video import LayeredVideo

FAST = {"num_frames": 5, "height": 32, "width": 32, "num_inference_steps": 1, "guidance_scale": 1.0,
        "progress": False}
FAST_CLI = ["--frames", "5", "--size", "32x32", "--steps", "1", "--guidance", "1"]
BG, FG1, FG2 = "a blue striped background", "a red circle moving right", "a green square moving up"


@pytest.fixture(scope="module")
def builtin():
    from layert2v.pipeline import LayerT2VPipeline

    return LayerT2VPipeline.from_pretrained(BUILTIN_MODEL)


@pytest.fixture(scope="module")
def scene():
    """Two-foreground layers that no model made (exact squares over a gradient)."""
    return toy_clip(3, num_foregrounds=2, frames=5, size=32)


def moving_disc_video(path: Path, frames: int = 31, width: int = 95, height: int = 77, codec: str = "libx264",
                      fps: int = 24) -> Path:
    """A clip no world generator made: a yellow disc crossing a red-blue gradient, odd size and length (4:4:4, so
    odd sides are allowed)."""
    import av

    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p"
        for i in range(frames):
            img = np.zeros((height, width, 3), np.uint8)
            img[..., 0] = (xx * 255 / width).astype(np.uint8)
            img[..., 2] = 120
            cx = 10 + i * (width - 20) / frames
            img[(xx - cx) ** 2 + (yy - height / 2) ** 2 < 100] = (250, 240, 30)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def layer_arrays(video: LayeredVideo) -> dict[str, np.ndarray]:
    out = {"full": video.full, "background": video.background}
    for k in range(1, video.num_foregrounds + 1):
        out[f"foreground_{k}"] = video.foregrounds[k - 1]
        out[f"alpha_{k}"] = video.alphas[k - 1]
    return out


# ------------------------------------------------------------------------------------------ the pipeline API
@pytest.mark.parametrize("given", [
    ["background"],                                   # bg -> fg
    ["foreground_1", "alpha_1"],                      # fg -> bg
    ["full"],                                         # decomposition
    ["background", "foreground_2", "alpha_2"],        # regenerate foreground 1 of two
    ["background", "foreground_1", "alpha_1"],        # regenerate foreground 2 of two
])
def test_given_layers_come_out_bit_identical_for_every_variant(builtin, scene, given):
    conditions = {name: layer_arrays(scene)[name] for name in given}
    video = builtin("a scene", BG, [FG1, FG2], conditions=conditions, seed=1, **FAST)
    out = layer_arrays(video)
    for name in given:
        assert out[name].dtype == np.float32 and np.array_equal(out[name], conditions[name]), name
    assert video.metadata["conditions"] == sorted(given)
    made = [n for n in out if n not in given]
    assert all(not np.array_equal(out[n], layer_arrays(scene)[n]) for n in made)  # the rest is generated


def test_conditions_are_checked_before_anything_is_encoded(builtin, scene, monkeypatch):
    calls = []
    monkeypatch.setattr(builtin.text_encoder, "encode", lambda prompts: calls.append(prompts))
    bad = [({"background": scene.background[:3]}, "expected \\(5, 32, 32, 3\\)"),
           ({"background": scene.background * 2}, "outside \\[0, 1\\]"),
           ({"background": (scene.background * 255).astype(np.uint8)}, "uint8 / 255"),
           ({"foreground_1": scene.foregrounds[0]}, "needs its alpha"),
           ({"sky": scene.background}, "unknown condition")]
    for conditions, message in bad:
        with pytest.raises(ValueError, match=message):
            builtin("a", BG, [FG1, FG2], conditions=conditions, **FAST)
    assert calls == []


def test_given_layers_brings_a_foregrounds_alpha_and_refuses_unknown_names(scene):
    given = editing.given_layers(scene, ["background", "foreground_2"])
    assert sorted(given) == ["alpha_2", "background", "foreground_2"]
    assert given["alpha_2"] is scene.alphas[1]
    for name, message in [("foreground_3", "no foreground_3 with 2"), ("alpha_1", "keep foreground_1"),
                          ("sky", "unknown layer 'sky'")]:
        with pytest.raises(ValueError, match=message):
            editing.given_layers(scene, [name])


def test_decompose_from_frames_keeps_the_video_and_builds_the_prompt(builtin, scene):
    video = builtin.decompose(scene.full, BG, [FG1, FG2], seed=2, num_inference_steps=1, guidance_scale=1.0,
                              progress=False)
    assert np.array_equal(video.full, scene.full) and video.num_foregrounds == 2
    assert video.prompts["full"] == f"{FG1} and {FG2} over {BG}"
    assert video.metadata["conditions"] == ["full"] and video.metadata["given"]["full"]["from"] == "in memory"
    with pytest.raises(ValueError, match="num_frames=9 but the video has 5"):
        builtin.decompose(scene.full, BG, [FG1], num_frames=9, progress=False)


def test_regenerate_keeps_every_other_layer_and_remakes_one(builtin, scene):
    video = editing.regenerate(builtin, scene, "foreground_2", "a yellow disc bouncing", seed=4,
                               num_inference_steps=1, guidance_scale=1.0, progress=False)
    for name in ("background", "foreground_1", "alpha_1"):
        assert np.array_equal(layer_arrays(video)[name], layer_arrays(scene)[name]), name
    assert not np.array_equal(video.alphas[1], scene.alphas[1])
    assert video.prompts["foregrounds"] == [scene.prompts["foregrounds"][0], "a yellow disc bouncing"]
    assert video.metadata["regenerated"] == "foreground_2"
    assert sorted(video.metadata["given"]) == ["alpha_1", "background", "foreground_1"]
    for layer, message in [("foreground_3", "foregrounds are foreground_1, foreground_2"),
                           ("background", "cannot regenerate 'background'"), ("alpha_2", "regenerate foreground_2")]:
        with pytest.raises(ValueError, match=message):
            editing.regenerate(builtin, scene, layer, "x", progress=False)


# ------------------------------------------------------------------------------------------------ video in
@pytest.mark.parametrize("codec, suffix", [("libx264", "mp4"), ("libvpx-vp9", "webm"), ("libx264", "mov")])
def test_read_video_fits_any_size_and_length_and_says_how(tmp_path, codec, suffix):
    path = moving_disc_video(tmp_path / f"disc.{suffix}", codec=codec)
    fitted = editing.read_video(path, 9, 48, 64, (2, 16), fps=8)
    assert fitted.frames.shape == (9, 48, 64, 3) and fitted.frames.dtype == np.float32
    assert 0 <= fitted.frames.min() and fitted.frames.max() <= 1
    m = fitted.mapping
    assert m["source"] == f"disc.{suffix}" and m["source_size"] == [95, 77] and m["source_frames"] == 31
    assert m["source_fps"] == 24 and m["frame_step"] == 3 and m["frame_indices"] == list(range(0, 25, 3))
    assert (m["start_frame"], m["end_frame"]) == (0, 24)
    # 64x48 is 4:3, wider than 95x77: every column, the centred 71 rows (95 * 3/4)
    assert m["crop_box"] == {"left": 0, "top": 3, "width": 95, "height": 71} and m["scale"] == pytest.approx(48 / 71)
    # the disc moves right: its (yellow = red and green high) centre of mass advances frame by frame
    yellow = (fitted.frames[..., 1] > 0.7)
    xs = [np.nonzero(f)[1].mean() for f in yellow]
    assert all(b > a for a, b in zip(xs, xs[1:]))
    # a longer window than the clip spreads over the whole clip; a clip shorter than asked is refused
    assert editing.read_video(path, 21, 32, 32, (2, 16), fps=8).mapping["end_frame"] == 30
    with pytest.raises(ValueError, match="has 31 frame\\(s\\), fewer than the 33 asked for; pass --frames 31"):
        editing.read_video(path, 33, 32, 32, (2, 16))
    with pytest.raises(ValueError, match="--frames must be 2k\\+1"):
        editing.read_video(path, 8, 32, 32, (2, 16))


def test_a_file_that_is_not_a_video_is_refused_in_one_line(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video " * 50)
    with pytest.raises(ValueError, match="cannot decode junk.mp4 as a video .*give an mp4, mov or webm"):
        editing.read_video(junk, 5, 32, 32, (2, 16))
    good = moving_disc_video(tmp_path / "cut.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(good[: len(good) // 3])  # truncated mid-stream
    with pytest.raises(ValueError, match="cut.mp4"):
        editing.read_video(tmp_path / "cut.mp4", 21, 32, 32, (2, 16))


# ---------------------------------------------------------------------------------------- save and load
def test_kept_layers_stay_bit_identical_through_save_and_load(builtin, scene, tmp_path):
    """Saving encodes (H.264, ProRes): re-encoding decoded pixels would drift. A layer loaded from a directory and
    kept is copied file for file, so the new directory decodes to exactly the pixels of the old one."""
    source = LayeredVideo.load(scene.save(tmp_path / "source"))
    edited = editing.regenerate(builtin, source, "foreground_2", "a yellow disc bouncing", seed=5,
                                num_inference_steps=1, guidance_scale=1.0, progress=False)
    out = edited.save(tmp_path / "edited")
    again = LayeredVideo.load(out)
    for name in ("background", "foreground_1", "alpha_1"):
        assert np.array_equal(layer_arrays(again)[name], layer_arrays(source)[name]), name
    for file in ("background.mp4", "foreground_1.mov", "foreground_1.webm", "alpha_1.mp4"):
        assert (out / file).read_bytes() == (tmp_path / "source" / file).read_bytes(), file
    for file in ("foreground_2.mov", "full.mp4"):
        assert (out / file).read_bytes() != (tmp_path / "source" / file).read_bytes(), file
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["given"]["background"] == {"from": str((tmp_path / "source").absolute()), "layer": "background"}
    assert manifest["regenerated"] == "foreground_2" and manifest["conditions"] == ["alpha_1", "background",
                                                                                    "foreground_1"]
    # a layer changed after loading is encoded, not copied
    source.background = np.ascontiguousarray(source.background[:, :, ::-1])
    moved = source.save(tmp_path / "moved")
    assert (moved / "background.mp4").read_bytes() != (tmp_path / "source" / "background.mp4").read_bytes()
    assert (moved / "foreground_1.mov").read_bytes() == (tmp_path / "source" / "foreground_1.mov").read_bytes()
