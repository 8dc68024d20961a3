"""Scoring of the editing variants (eval/variants.py) by hand, and benchmarks/editing_quality.py at toy size."""

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from layert2v.eval import variants
from layert2v.video import LayeredVideo

ROOT = Path(__file__).resolve().parents[1]


def squares(xs_per_object, y=2, size=4, frames=None, h=16, w=16):
    """Objects of size x size pixels at (x_t, y) per frame; grey background, full = composite."""
    frames = frames or len(xs_per_object[0])
    bg = np.full((frames, h, w, 3), 0.25, np.float32)
    fgs, alphas = [], []
    for xs in xs_per_object:
        alpha = np.zeros((frames, h, w), np.float32)
        for t, x in enumerate(xs):
            if x is not None:
                alpha[t, y : y + size, x : x + size] = 1.0
        fgs.append(np.full((frames, h, w, 3), 0.9, np.float32))
        alphas.append(alpha)
    video = LayeredVideo(full=bg, background=bg, foregrounds=fgs, alphas=alphas, fps=8)
    video.full = video.composite()
    return video


# ----------------------------------------------------------------------------------------- given layers
def test_layer_array_follows_the_layout_names():
    video = squares([[0, 1], [5, 6]])
    assert variants.layer_array(video, "full") is video.full
    assert variants.layer_array(video, "background") is video.background
    assert variants.layer_array(video, "foreground_2") is video.foregrounds[1]
    assert variants.layer_array(video, "alpha_1") is video.alphas[0]
    with pytest.raises(ValueError, match="has 2 foreground"):
        variants.layer_array(video, "alpha_3")
    with pytest.raises(ValueError, match="not a segment name"):
        variants.layer_array(video, "fg1")


def test_identical_means_every_bit():
    video = squares([[0, 1, 2]])
    given = variants.true_layers(video, ["background", "foreground_1", "alpha_1"])
    assert variants.identical(video, given)
    nudged = dict(given)
    nudged["alpha_1"] = given["alpha_1"].copy()
    nudged["alpha_1"][0, 0, 0] = np.nextafter(np.float32(0), np.float32(1))  # one value, one ulp off
    assert not variants.identical(video, nudged)
    assert not variants.identical(video, {"background": given["background"][:2]})  # another shape
    with pytest.raises(ValueError, match="no given layers"):
        variants.identical(video, {})


# ---------------------------------------------------------------------------------------- decomposition
def test_decomposition_scores_by_hand():
    """A 4x4 square decomposed 2 px right of the truth, its background 0.1 too bright, on a 16x16 frame."""
    truth = squares([[2, 3, 4]])
    video = squares([[4, 5, 6]])
    video.background = video.background + 0.1
    video.full = truth.full.copy()  # the full segment is the input: only the layers' composite shows the error
    out = variants.decomposition_scores(video, truth)
    assert out["alpha_iou"] == pytest.approx(8 / 24)
    assert out["background_psnr"] == pytest.approx(20.0)
    mse = (232 * 0.1**2 + 8 * 0.65**2 + 8 * 0.55**2) / 256
    assert out["recomposite_psnr"] == pytest.approx(-10 * np.log10(mse), abs=1e-4)
    perfect = variants.decomposition_scores(truth, truth)
    assert perfect == {"alpha_iou": 1.0, "background_psnr": 100.0, "recomposite_psnr": 100.0}


def test_share():
    assert variants.share([True, False, True, True]) == 0.75
    assert variants.share([]) is None


# ------------------------------------------------------------------------------------------ trajectories
def test_paths_cross_when_two_boxes_overlap_in_some_frame():
    assert variants.paths_cross(squares([[0, 4, 8], [8, 4, 0]]).alphas)  # they meet in frame 1
    assert not variants.paths_cross(squares([[0, 1, 2], [10, 11, 12]]).alphas)
    assert not variants.paths_cross(squares([[0, 4, 8]]).alphas)  # one object crosses nothing


def test_key_frames_of_a_straight_path_request_the_true_boxes():
    video = squares([[0, 1, 2, 3, 4]])  # linear: interpolating between frames 0, 2, 4 gives the rest exactly
    traj = variants.keyframe_trajectories(video.alphas, every=2)
    assert [f for f, _ in traj.trajectories[0].keyframes] == [0, 2, 4]
    requested = variants.requested_boxes(traj, 5, 16, 16)
    assert requested == {1: [(float(x), 2.0, float(x + 4), 6.0) for x in range(5)]}
    scores = variants.trajectory_scores(video, requested)
    assert variants.pooled_trajectory(scores) == {"miou": 1.0, "hit_rate": 1.0, "objects": 1, "frames": 5}


def test_key_frames_of_a_turning_path_request_the_interpolated_boxes():
    video = squares([[0, 4, 0]])  # out and back: with key frames 0 and 2 only, frame 1 is requested at x = 0
    traj = variants.keyframe_trajectories(video.alphas, every=2)
    requested = variants.requested_boxes(traj, 3, 16, 16)
    assert requested[1][1] == (0.0, 2.0, 4.0, 6.0)
    # scored against the request: frames 0 and 2 hit (IoU 1), frame 1 is 4 px off (IoU 0)
    pooled = variants.pooled_trajectory(variants.trajectory_scores(video, requested))
    assert pooled["hit_rate"] == pytest.approx(2 / 3)
    assert pooled["miou"] == pytest.approx(32 / 64)  # intersections 16 + 0 + 16 over unions 16 + 32 + 16
    every_frame = variants.keyframe_trajectories(video.alphas, every=1)
    assert variants.requested_boxes(every_frame, 3, 16, 16)[1][1] == (4.0, 2.0, 8.0, 6.0)


def test_key_frames_skip_frames_where_the_object_is_absent():
    video = squares([[None, 2, 4]])
    traj = variants.keyframe_trajectories(video.alphas, every=1)
    assert [f for f, _ in traj.trajectories[0].keyframes] == [1, 2]
    with pytest.raises(ValueError, match="absent from every key frame"):
        variants.keyframe_trajectories(squares([[None, None, None]]).alphas)
    with pytest.raises(ValueError, match="1 or more"):
        variants.keyframe_trajectories(video.alphas, every=0)


# ----------------------------------------------------------------------------------------------- table
def test_targets_and_rows():
    assert variants.Target(0.8).met(0.8) and not variants.Target(0.8).met(0.79)
    assert variants.Target().met(True) and not variants.Target().met(False)
    assert variants.Target(0.8).met(None) is None
    assert str(variants.Target(28.0, "dB")) == "≥ 28 dB" and str(variants.Target()) == "yes"
    rows = [variants.Row("decomposition", "alpha IoU", 0.8123, variants.Target(0.8), "4 clips"),
            variants.Row("bg→fg", "background bit-identical", False, variants.Target(), "0/4 clips"),
            variants.Row("trajectories", "mIoU without", 0.1, None, "4 clips"),
            variants.Row("trajectories", "mIoU with", None, variants.Target(0.7), "0 clips")]
    table = variants.format_table(rows).splitlines()
    assert table[0] == "| variant | metric | measured | target | met | samples |"
    assert table[2] == "| decomposition | alpha IoU | 0.81 | ≥ 0.8 | yes | 4 clips |"
    assert table[3] == "| bg→fg | background bit-identical | no | yes | no | 0/4 clips |"
    assert table[4] == "| trajectories | mIoU without | 0.10 | – | – | 4 clips |"
    assert table[5] == "| trajectories | mIoU with | – | ≥ 0.7 | – | 0 clips |"


# ---------------------------------------------------------------------------- the benchmark, toy size
def test_benchmark_runs_end_to_end_on_a_tiny_model(tmp_path, tiny_pipeline, capsys):
    spec = importlib.util.spec_from_file_location("editing_quality", ROOT / "benchmarks" / "editing_quality.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    # world prompts run to ~25 tokens; the fixture's window is 16
    tiny_pipeline.config = dataclasses.replace(tiny_pipeline.config, max_sequence_length=32)
    tiny_pipeline.save_pretrained(tmp_path / "model")
    assert bench.main(["--model", str(tmp_path / "model"), "--n", "1", "--steps", "2", "--out",
                       str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "tokens): seeds 0\n" in printed and "generation seed 0" in printed
    result = json.loads((tmp_path / "out/results.json").read_text())
    rows = {(r["variant"], r["metric"]): r for r in result["rows"]}
    assert len(rows) == 16
    for row in rows.values():
        assert row["met"] is None if row["target"] is None else row["met"] in (True, False)
        assert row["samples"]
    # the pipeline returns given layers as given, whatever the model (an untrained one here)
    assert rows["bg→fg", "background bit-identical"]["measured"] is True
    assert 0.0 <= rows["decomposition", "alpha IoU"]["measured"] <= 1.0
    assert rows["trajectories", "mIoU with trajectories"]["samples"].startswith("1 clips (1x1 obj")
    assert "| variant | metric | measured | target | met | samples |" in (tmp_path / "out/results.md").read_text()


def test_benchmark_refuses_bad_arguments_before_loading(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("editing_quality", ROOT / "benchmarks" / "editing_quality.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    with pytest.raises(SystemExit):
        bench.main(["--n", "0"])
    assert "--n, --steps and --key-every must be 1 or more" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="does not exist"):
        bench.main(["--model", str(tmp_path / "missing")])
