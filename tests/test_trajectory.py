"""Trajectories: key-frame interpolation, the file format and its errors, pixel and latent box masks."""

import json
from pathlib import Path

import numpy as np
import pytest

from layert2v.trajectory import (
    DEFAULT_STEPS,
    DEFAULT_STRENGTH,
    Trajectories,
    Trajectory,
    box_coverage,
    box_from_alpha,
    grid_mask,
    latent_frame_spans,
)

EXAMPLE = Path(__file__).parent.parent / "docs" / "examples" / "two_crossing.json"


def test_linear_interpolation_between_key_frames_and_held_outside():
    t = Trajectory(1, ((2, (0.0, 0.0, 0.2, 0.4)), (6, (0.4, 0.2, 0.6, 0.8))))
    boxes = t.boxes(9)
    assert boxes.shape == (9, 4)
    np.testing.assert_allclose(boxes[0], [0.0, 0.0, 0.2, 0.4])  # before the first key frame: held
    np.testing.assert_allclose(boxes[2], [0.0, 0.0, 0.2, 0.4])
    np.testing.assert_allclose(boxes[3], [0.1, 0.05, 0.3, 0.5])  # a quarter of the way
    np.testing.assert_allclose(boxes[4], [0.2, 0.1, 0.4, 0.6])  # half way
    np.testing.assert_allclose(boxes[8], [0.4, 0.2, 0.6, 0.8])  # after the last: held


def test_a_single_key_frame_is_a_still_box_and_a_mapping_is_accepted():
    t = Trajectory(2, {4: [0.1, 0.1, 0.3, 0.3]})
    np.testing.assert_allclose(t.boxes(5), np.tile([0.1, 0.1, 0.3, 0.3], (5, 1)))


def test_the_documented_example_loads_and_round_trips(tmp_path):
    traj = Trajectories.load(EXAMPLE)
    assert traj.foregrounds == [1, 2]
    assert (traj.strength, traj.steps) == (2.0, 10)
    traj.check(num_frames=9, num_foregrounds=2)
    boxes = traj.boxes(9)
    np.testing.assert_allclose(boxes[2][4], [0.40, 0.40, 0.62, 0.62])  # its middle key frame
    # the paths cross: the two boxes overlap somewhere in the clip
    overlap = [box_coverage(boxes[1][i:i + 1], 64, 64)[0] * box_coverage(boxes[2][i:i + 1], 64, 64)[0]
               for i in range(9)]
    assert max(o.sum() for o in overlap) > 0
    again = tmp_path / "again.json"
    again.write_text(json.dumps(traj.to_dict()))
    assert Trajectories.load(again) == traj


def test_guidance_settings_default_when_left_out():
    doc = json.loads(EXAMPLE.read_text())
    del doc["guidance"]
    traj = Trajectories.from_dict(doc)
    assert (traj.strength, traj.steps) == (DEFAULT_STRENGTH, DEFAULT_STEPS)


def _doc(**changes):
    doc = {"format": "layert2v-trajectories", "version": 1,
           "foregrounds": [{"foreground": 1, "keyframes": [{"frame": 0, "box": [0.1, 0.1, 0.3, 0.3]},
                                                            {"frame": 4, "box": [0.5, 0.5, 0.7, 0.7]}]}]}
    doc.update(changes)
    return doc


def _keys(*pairs):
    return [{"foreground": 1, "keyframes": [{"frame": f, "box": b} for f, b in pairs]}]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "format"),
        ({"objects": [{"boxes": [[0, 0, 4, 4]]}]}, "evaluation document"),
        (_doc(version=2), "unsupported version 2"),
        (_doc(extra=1), r"unknown key\(s\) \['extra'\]"),
        (_doc(foregrounds=[]), "non-empty list"),
        (_doc(foregrounds=_keys((0, [0.1, 0.1, 1.2, 0.3]))), r"leaves the frame.*\[0, 1\]"),
        (_doc(foregrounds=_keys((0, [-0.1, 0.1, 0.3, 0.3]))), "leaves the frame"),
        (_doc(foregrounds=_keys((0, [10, 20, 60, 80]))), "divide pixels by the size"),
        (_doc(foregrounds=_keys((0, [0.3, 0.1, 0.1, 0.3]))), "x0 < x1"),
        (_doc(foregrounds=_keys((0, [0.1, 0.3, 0.3, 0.3]))), "y0 < y1"),
        (_doc(foregrounds=_keys((0, [0.1, 0.1, 0.3]))), "four numbers"),
        (_doc(foregrounds=_keys((4, [0.1, 0.1, 0.3, 0.3]), (2, [0.1, 0.1, 0.3, 0.3]))), "increasing order"),
        (_doc(foregrounds=_keys((2, [0.1, 0.1, 0.3, 0.3]), (2, [0.1, 0.1, 0.3, 0.3]))), "increasing order"),
        (_doc(foregrounds=_keys((-1, [0.1, 0.1, 0.3, 0.3]))), "not a frame index"),
        (_doc(foregrounds=_keys((1.5, [0.1, 0.1, 0.3, 0.3]))), "not a frame index"),
        (_doc(foregrounds=[{"foreground": 0, "keyframes": []}]), "numbered 1, 2"),
        (_doc(foregrounds=[{"foreground": 1, "keyframes": []}]), "no key frames"),
        (_doc(foregrounds=[{"foreground": 1, "keyframes": [{"frame": 0}]}]), r'"frame": t, "box"'),
        (_doc(foregrounds=_keys((0, [0.1, 0.1, 0.3, 0.3])) * 2), "two trajectories"),
        (_doc(guidance={"strength": -1}), "strength must be a number >= 0"),
        (_doc(guidance={"steps": 2.5}), "steps must be a whole number"),
        (_doc(guidance={"scale": 1}), "unknown key"),
    ],
)
def test_bad_files_get_one_line_naming_the_fix(doc, message):
    with pytest.raises(ValueError, match=message) as err:
        Trajectories.from_dict(doc, "traj.json")
    assert "\n" not in str(err.value)
    if isinstance(doc, dict) and "format" in doc:
        assert str(err.value).startswith("traj.json: ")


def test_check_against_the_clip():
    traj = Trajectories.from_dict(_doc())
    traj.check(num_frames=5, num_foregrounds=1)
    with pytest.raises(ValueError, match=r"key frame 4 is past the clip's last frame 2; use frames 0..2"):
        traj.check(num_frames=3, num_foregrounds=1)
    two = Trajectories((Trajectory(2, {0: (0.1, 0.1, 0.3, 0.3)}),))
    with pytest.raises(ValueError, match="names foreground 2 but there are 1 foreground prompt"):
        two.check(num_frames=5, num_foregrounds=1)


def test_load_names_a_missing_or_broken_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Trajectories.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        Trajectories.load(tmp_path / "bad.json")


def test_box_coverage_counts_covered_area_per_cell():
    # a box over columns 0.25..0.625 of a 4-cell row: cell 1 fully, cell 2 half
    cov = box_coverage(np.array([[0.25, 0.0, 0.625, 0.5]]), rows=2, cols=4)
    np.testing.assert_allclose(cov[0], [[0, 1, 0.5, 0], [0, 0, 0, 0]])
    # at pixel resolution the covered area equals the box area
    px = box_coverage(np.array([[0.1, 0.2, 0.55, 0.9]]), rows=64, cols=48)
    assert px.sum() == pytest.approx(0.45 * 48 * 0.7 * 64, rel=1e-5)


def test_latent_masks_pool_the_causal_frame_groups_and_the_spatial_factor():
    assert latent_frame_spans(9, 2) == [range(0, 1), range(1, 3), range(3, 5), range(5, 7), range(7, 9)]
    with pytest.raises(ValueError, match="2k\\+1"):
        latent_frame_spans(8, 2)
    # the box jumps from the left half (frames 0, 1) to the right half (frames 2, 3, 4)
    boxes = np.array([[0, 0, 0.5, 1]] * 2 + [[0.5, 0, 1, 1]] * 3, dtype=np.float64)
    m = grid_mask(boxes, height=32, width=32, temporal=2, spatial=16)  # 2x2 cells, 3 latent frames
    assert m.shape == (3, 2, 2)
    np.testing.assert_allclose(m[0], [[1, 0], [1, 0]])  # frame 0 alone
    np.testing.assert_allclose(m[1], [[0.5, 0.5], [0.5, 0.5]])  # frames 1 (left) and 2 (right)
    np.testing.assert_allclose(m[2], [[0, 1], [0, 1]])  # frames 3, 4
    # the grid mask is the pixel mask averaged over cells and frames
    px = box_coverage(boxes, 32, 32)
    np.testing.assert_allclose(m[1], px[1:3].mean(0).reshape(2, 16, 2, 16).mean((1, 3)), atol=1e-6)
    with pytest.raises(ValueError, match="multiple of the grid factor 16"):
        grid_mask(boxes, height=40, width=32, temporal=2, spatial=16)


def test_grid_masks_follow_the_models_factors(tiny_pipeline):
    from layert2v.preflight import compression

    traj = Trajectories.load(EXAMPLE)
    temporal, spatial = compression(tiny_pipeline.vae.config)
    latent = traj.grid_masks(9, 32, 32, temporal, spatial)
    tokens = traj.grid_masks(9, 32, 32, *tiny_pipeline.video_multiples)
    frames = (9 - 1) // temporal + 1
    assert latent[1].shape == (frames, 32 // spatial, 32 // spatial)
    patch = tiny_pipeline.transformer.config.patch_size[1]
    assert tokens[1].shape == (frames, 32 // (spatial * patch), 32 // (spatial * patch))


def test_requested_document_is_what_eval_reads():
    from layert2v.eval.trajectory import parse_trajectory

    traj = Trajectories.load(EXAMPLE)
    doc = traj.requested_document(9, 64, 48)
    tracks = parse_trajectory(doc, num_frames=9, num_foregrounds=2, source="t")
    assert tracks[1][0] == pytest.approx((0.05 * 48, 0.40 * 64, 0.30 * 48, 0.65 * 64))


def test_box_from_alpha_is_tight_and_exclusive():
    alpha = np.zeros((6, 8))
    alpha[1:3, 2:5] = 1.0  # rows 1..2, columns 2..4
    assert box_from_alpha(alpha) == (2.0, 1.0, 5.0, 3.0)
    assert box_from_alpha(np.full((4, 4), 0.5)) is None  # strictly above 0.5
