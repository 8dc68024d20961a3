"""`layert2v eval` end to end: input resolution, ground-truth matching, errors, and the written report."""

import argparse
import json

import numpy as np
import pytest

from layert2v.eval import command
from layert2v.eval.command import add_eval_arguments, run_eval
from layert2v.video import LayeredVideo

T, H, W = 5, 16, 16


def moving_square(k=1, offset=0, frames=T):
    """A grey background with k bright squares sliding right one pixel per frame; full = composite."""
    bg = np.full((frames, H, W, 3), 0.25, np.float32)
    fgs, alphas = [], []
    for i in range(k):
        alpha = np.zeros((frames, H, W), np.float32)
        for t in range(frames):
            alpha[t, 2 + 6 * i : 6 + 6 * i, 2 + t + offset : 6 + t + offset] = 1.0
        fgs.append(np.full((frames, H, W, 3), 0.9, np.float32))
        alphas.append(alpha)
    video = LayeredVideo(full=bg, background=bg, foregrounds=fgs, alphas=alphas, fps=8,
                         prompts={"full": "a square on grey", "background": "grey", "foregrounds": ["a square"] * k})
    video.full = video.composite()
    return video


def args(*paths, out, **kw):
    parser = argparse.ArgumentParser()
    add_eval_arguments(parser)
    argv = [str(p) for p in paths] + ["--out", str(out)]
    for key, value in kw.items():
        argv += [f"--{key}", str(value)]
    return parser.parse_args(argv)


def fake_saved(directory, video=None):
    """A directory that looks saved (manifest only); `video` is what the patched loader returns for it."""
    directory.mkdir(parents=True)
    (directory / "manifest.json").write_text(json.dumps({"format": "layert2v-layered-video"}))
    return directory


@pytest.fixture
def in_memory(monkeypatch):
    """Patch LayeredVideo.load to serve in-memory videos by directory name (no codecs involved)."""
    videos = {}

    def load(cls, path):
        return videos[path.parent.name, path.name]

    monkeypatch.setattr(command.LayeredVideo, "load", classmethod(load))
    return videos


# ------------------------------------------------------------------------------------------ inputs
def test_paths_that_are_not_saved_videos_are_rejected(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        command.resolve_videos([str(tmp_path / "missing")])
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match="is not a saved layered video"):
        command.resolve_videos([str(tmp_path / "plain")])
    with pytest.raises(FileNotFoundError, match="no saved layered video matches"):
        command.resolve_videos([str(tmp_path / "x*")])


def test_a_folder_or_a_glob_expands_to_the_saved_videos_in_it(tmp_path):
    a, b = fake_saved(tmp_path / "runs/a"), fake_saved(tmp_path / "runs/b")
    (tmp_path / "runs/notes.txt").write_text("not a video")
    assert command.resolve_videos([str(tmp_path / "runs")]) == [a, b]
    assert command.resolve_videos([str(tmp_path / "runs/*")]) == [a, b]
    with pytest.raises(ValueError, match="two inputs are named 'a'"):
        command.resolve_videos([str(a), str(fake_saved(tmp_path / "other/a"))])


def test_ground_truth_is_matched_by_name_then_by_order(tmp_path):
    a, b = fake_saved(tmp_path / "runs/a"), fake_saved(tmp_path / "runs/b")
    gt_a, gt_b = fake_saved(tmp_path / "gt/a"), fake_saved(tmp_path / "gt/b")
    assert command.match_ground_truth([b, a], tmp_path / "gt") == {b: gt_b, a: gt_a}
    x, y = fake_saved(tmp_path / "gt2/x"), fake_saved(tmp_path / "gt2/y")
    assert command.match_ground_truth([a, b], tmp_path / "gt2") == {a: x, b: y}
    fake_saved(tmp_path / "gt3/a")
    with pytest.raises(ValueError, match="no ground truth named 'b'"):
        command.match_ground_truth([a, b], tmp_path / "gt3")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no saved layered videos"):
        command.match_ground_truth([a], tmp_path / "empty")


def test_gt_with_another_layer_count_or_length_is_an_error(tmp_path, in_memory):
    fake_saved(tmp_path / "runs/v")
    fake_saved(tmp_path / "gt/v")
    in_memory["runs", "v"] = moving_square(k=1)
    in_memory["gt", "v"] = moving_square(k=2)
    with pytest.raises(ValueError, match="same layer count"):
        run_eval(args(tmp_path / "runs/v", out=tmp_path / "report", gt=tmp_path / "gt"))
    in_memory["gt", "v"] = moving_square(k=1, frames=T + 1)
    with pytest.raises(ValueError, match="resize/trim"):
        run_eval(args(tmp_path / "runs/v", out=tmp_path / "report", gt=tmp_path / "gt"))
    assert not (tmp_path / "report").exists()


def test_a_decomposition_is_scored_against_its_ground_truth_by_hand(tmp_path, in_memory):
    """A decomposition whose square sits 2 px right of the truth and whose background is 0.1 too bright.

    Per frame the 4x4 squares share 8 of 24 pixels (alpha IoU 1/3); 8 pixels are predicted only, 8 missed.
    The full segment is the input itself, so only the layers' composite shows the error.
    """
    fake_saved(tmp_path / "runs/v")
    fake_saved(tmp_path / "gt/v")
    truth, video = moving_square(), moving_square(offset=2)
    video.background = video.background + 0.1
    video.full = truth.full.copy()
    in_memory["runs", "v"], in_memory["gt", "v"] = video, truth
    requested = [[2 + t, 2, 6 + t, 6] for t in range(T)]  # the true square's boxes
    (tmp_path / "runs/v/trajectory.json").write_text(json.dumps({"objects": [{"boxes": requested}]}))
    assert run_eval(args(tmp_path / "runs/v", out=tmp_path / "report", gt=tmp_path / "gt")) == 0

    summary = json.loads((tmp_path / "report/report.json").read_text())["summary"]
    gt = summary["gt_layers"]
    assert gt["iou_alpha"] == pytest.approx(1 / 3)
    assert gt["psnr"]["BG"] == pytest.approx(20.0)
    assert gt["psnr"]["BL"] == 100.0
    # composite vs input: 232 pixels off by 0.1, 8 by 0.9 - 0.25, 8 by 0.9 - 0.35
    mse = (232 * 0.1**2 + 8 * 0.65**2 + 8 * 0.55**2) / (H * W)
    assert gt["recomposite_psnr"] == pytest.approx(-10 * np.log10(mse), abs=1e-4)
    assert summary["matting"]["sad"] == pytest.approx(16 / 1000)  # 16 wrong pixels per frame, fully wrong
    assert summary["matting"]["mse"] == pytest.approx(16 / (H * W) * 1e3)
    # boxes: 2 of 6 columns shared -> IoU 8 / 24 in every frame: below 0.5, so no frame is a hit
    assert summary["trajectory"]["miou"] == pytest.approx(1 / 3)
    assert summary["trajectory"]["hit_rate@0.5"] == 0.0
    md = (tmp_path / "report/report.md").read_text()
    assert "hit-rate@0.5" in md and "Recomposite PSNR against the ground truth's full video" in md


def test_mismatches_visible_in_the_manifests_fail_before_any_decoding(tmp_path, in_memory):
    # in_memory is empty: decoding anything would raise KeyError
    for name, frames, k in [("runs/v", 5, 1), ("gt/v", 5, 2)]:
        fake_saved(tmp_path / name)
        manifest = {"format": "layert2v-layered-video", "frames": frames, "size": [16, 16], "num_foregrounds": k}
        (tmp_path / name / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="same layer count"):
        run_eval(args(tmp_path / "runs/v", out=tmp_path / "report", gt=tmp_path / "gt"))
    (tmp_path / "runs/v/trajectory.json").write_text(json.dumps({"objects": [{"boxes": [None] * 4}]}))
    with pytest.raises(ValueError, match="one box or null per frame"):
        run_eval(args(tmp_path / "runs/v", out=tmp_path / "report"))


def test_report_is_not_written_over_an_unrelated_directory(tmp_path, in_memory):
    fake_saved(tmp_path / "runs/v")
    in_memory["runs", "v"] = moving_square()
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious/thesis.tex").write_text("...")
    with pytest.raises(FileExistsError, match=r"not what this command writes \(no report.json\)"):
        run_eval(args(tmp_path / "runs/v", out=tmp_path / "precious"))


def test_bad_trajectories_are_reported_before_any_metric_runs(tmp_path, in_memory):
    fake_saved(tmp_path / "runs/v")
    in_memory["runs", "v"] = moving_square()
    (tmp_path / "runs/v/trajectory.json").write_text(json.dumps({"objects": [{"boxes": [[0, 0, 1, 1]]}]}))
    with pytest.raises(ValueError, match="one box or null per frame"):
        run_eval(args(tmp_path / "runs/v", out=tmp_path / "report"))
    (tmp_path / "t.json").write_text(json.dumps({"other": {"objects": []}}))
    with pytest.raises(ValueError, match="names none of the videos"):
        run_eval(args(tmp_path / "runs/v", out=tmp_path / "report", trajectories=tmp_path / "t.json"))


def test_report_contents_without_codecs(tmp_path, in_memory):
    fake_saved(tmp_path / "runs/still")
    fake_saved(tmp_path / "runs/moving")
    still = moving_square()
    still.full = np.repeat(still.full[:1], T, axis=0)  # a still full video: flickers perfectly, moves not at all
    in_memory["runs", "still"], in_memory["runs", "moving"] = still, moving_square()
    boxes = [[2 + t, 2, 6 + t, 6] for t in range(T)]
    (tmp_path / "runs/moving/trajectory.json").write_text(json.dumps({"objects": [{"boxes": boxes}]}))
    assert run_eval(args(tmp_path / "runs", out=tmp_path / "report")) == 0

    report = json.loads((tmp_path / "report/report.json").read_text())
    assert report["videos"] == ["moving", "still"]
    vb = report["summary"]["vbench"]
    assert vb["dynamic_degree"] == {"skipped": "no --weights directory given (needs RAFT)"}
    per_video = {v["name"]: v for v in report["per_video"]}
    assert per_video["still"]["vbench"]["temporal_flickering"]["BL"] == [1.0]
    assert per_video["still"]["vbench"]["frame_difference"]["BL"] == [0.0]
    assert per_video["moving"]["vbench"]["frame_difference"]["BL"][0] > 0
    assert per_video["moving"]["layers"]["recomposite_psnr"] == 100.0
    assert per_video["still"]["layers"]["recomposite_psnr"] < 40
    assert report["summary"]["layers"]["alpha_binariness"] == 1.0
    assert report["summary"]["trajectory"] == {"miou": 1.0, "hit_rate@0.5": 1.0, "objects": 1, "frames": T, "videos": 1}
    assert report["summary"]["matting"] == {"skipped": "no --gt directory given"}
    md = (tmp_path / "report/report.md").read_text()
    assert "| Dimension | FG | BG | BL |" in md
    assert "Dynamic Degree: skipped — no --weights directory given (needs RAFT)" in md


# ------------------------------------------------------------------------- through the real files
def test_end_to_end_through_saved_files(tmp_path):
    pytest.importorskip("av")
    runs, gt = tmp_path / "runs", tmp_path / "gt"
    for name, offset in [("first", 0), ("second", 2)]:
        moving_square(offset=offset).save(runs / name)
        moving_square(offset=offset).save(gt / name)
    boxes = [[2 + t, 2, 6 + t, 6] for t in range(T)]
    (runs / "first/trajectory.json").write_text(json.dumps({"objects": [{"foreground": 1, "boxes": boxes}]}))

    out = tmp_path / "reports/ours"
    assert run_eval(args(str(runs / "*"), out=out, gt=gt)) == 0
    assert sorted(p.name for p in out.iterdir()) == ["alpha_stability.png", "report.json", "report.md", "scores.png"]
    assert [p.name for p in out.parent.iterdir()] == ["ours"]  # no temp directory left behind

    report = json.loads((out / "report.json").read_text())
    assert report["format"] == "layert2v-eval-report"
    summary = report["summary"]
    assert summary["gt_layers"]["iou_alpha"] == pytest.approx(1.0)
    assert summary["gt_layers"]["psnr"]["BG"] == 100.0  # identical encodes of identical frames
    assert summary["matting"]["mattes"] == 2
    assert summary["matting"]["sad"] < 0.01
    assert summary["trajectory"]["miou"] == pytest.approx(1.0)
    assert summary["trajectory"]["hit_rate@0.5"] == 1.0
    assert 0.9 < summary["vbench"]["temporal_flickering"]["BL"] <= 1.0
    assert summary["layers"]["recomposite_psnr"] > 30
    assert "skipped" in summary["vbench"]["subject_consistency"]
    md = (out / "report.md").read_text()
    assert "## Against ground truth" in md and "![scores.png](scores.png)" in md

    # a second run replaces the report in place
    assert run_eval(args(runs / "first", out=out)) == 0
    assert json.loads((out / "report.json").read_text())["videos"] == ["first"]
    assert [p.name for p in out.parent.iterdir()] == ["ours"]


def test_a_pipeline_decomposition_with_trajectories_is_scored_from_its_directory(tmp_path, tiny_pipeline):
    """The real path: a decomposition generated with trajectories, saved, then `eval --gt` on its directory."""
    pytest.importorskip("av")
    from helpers import toy_clip

    from layert2v.eval.variants import keyframe_trajectories

    truth = toy_clip(3, num_foregrounds=1, frames=5, size=32)
    truth.save(tmp_path / "gt/clip")
    video = tiny_pipeline("toy", "a gradient", ["a square"], conditions={"full": truth.full},
                          trajectories=keyframe_trajectories(truth.alphas, every=2), progress=False)
    video.save(tmp_path / "runs/clip")
    assert run_eval(args(tmp_path / "runs/clip", out=tmp_path / "report", gt=tmp_path / "gt")) == 0
    summary = json.loads((tmp_path / "report/report.json").read_text())["summary"]
    assert 0.0 <= summary["gt_layers"]["iou_alpha"] <= 1.0
    assert summary["gt_layers"]["recomposite_psnr"] > 0 and summary["matting"]["mattes"] == 1
    assert summary["trajectory"]["objects"] == 1 and summary["trajectory"]["frames"] == 5
    assert 0.0 <= summary["trajectory"]["hit_rate@0.5"] <= 1.0
