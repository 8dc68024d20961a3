"""Trajectory metrics (volumetric IoU, mIoU, hit-rate@0.5) on boxes whose overlaps are counted by hand."""

import pytest

from layert2v.eval import trajectory as tr


def test_box_iou_by_hand():
    # two 2x2 boxes overlapping in one pixel: 1 / (4 + 4 - 1)
    assert tr.box_iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)
    assert tr.box_iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0
    assert tr.box_iou((0, 0, 1, 1), None) == 0.0


def test_volumetric_iou_and_hits_by_hand():
    # frame 1: identical 2x2 boxes (inter 4, union 4); frame 2: one-pixel overlap (inter 1, union 7);
    # frame 3: nothing requested but a 1x1 box predicted (inter 0, union 1) -> vIoU = 5 / 12.
    # hit-rate@0.5 counts only frames with a requested box: IoU 1 (hit) and 1/7 (miss).
    requested = [(0, 0, 2, 2), (0, 0, 2, 2), None]
    predicted = [(0, 0, 2, 2), (1, 1, 3, 3), (0, 0, 1, 1)]
    score = tr.score_object(predicted, requested, foreground=1)
    assert score.viou == pytest.approx(5 / 12)
    assert (score.frames, score.hits) == (2, 1)


def test_miou_and_hit_rate_pool_objects_and_frames():
    first = tr.score_object([(0, 0, 2, 2), (1, 1, 3, 3), (0, 0, 1, 1)], [(0, 0, 2, 2), (0, 0, 2, 2), None], 1)
    second = tr.score_object([(0, 0, 1, 1)] * 3, [(0, 0, 1, 1)] * 3, 2)
    out = tr.summarise([first, second])
    assert out["miou"] == pytest.approx((5 / 12 + 1) / 2)
    assert out["hit_rate@0.5"] == pytest.approx((1 + 3) / (2 + 3))  # frame-weighted, not object-averaged
    assert (out["objects"], out["frames"]) == (2, 5)


def test_an_object_that_never_appears_anywhere_has_no_viou():
    assert tr.score_object([None, None], [None, None], 1).viou is None
    assert tr.summarise([]) == {"miou": None, "hit_rate@0.5": None, "objects": 0, "frames": 0}


def test_parse_trajectory_accepts_the_documented_format():
    doc = {"objects": [{"foreground": 2, "boxes": [[0, 0, 4, 4], None]}, {"foreground": 1, "boxes": [None, None]}]}
    tracks = tr.parse_trajectory(doc, num_frames=2, num_foregrounds=2, source="t")
    assert tracks == {2: [(0.0, 0.0, 4.0, 4.0), None], 1: [None, None]}
    # without "foreground", an object belongs to the layer at its position
    doc = {"objects": [{"boxes": [None, None]}, {"boxes": [None, [1, 1, 2, 2.5]]}]}
    tracks = tr.parse_trajectory(doc, num_frames=2, num_foregrounds=2, source="t")
    assert tracks == {1: [None, None], 2: [None, (1.0, 1.0, 2.0, 2.5)]}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "expected"),
        ({"objects": [{"boxes": [[0, 0, 1, 1]]}]}, "one box or null per frame"),
        ({"objects": [{"foreground": 3, "boxes": [None, None]}]}, "names foreground 3"),
        ({"objects": [{"boxes": [[0, 0, 1], None]}]}, r"expected \[x0, y0, x1, y1\]"),
        ({"objects": [{"boxes": [[2, 0, 1, 1], None]}]}, "x1 < x0"),
        ({"objects": [{"boxes": [None, None]}, {"foreground": 1, "boxes": [None, None]}]}, "appears twice"),
    ],
)
def test_parse_trajectory_rejects_bad_documents(doc, message):
    with pytest.raises(ValueError, match=message):
        tr.parse_trajectory(doc, num_frames=2, num_foregrounds=2, source="t")


def test_read_json_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tr.read_json(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        tr.read_json(tmp_path / "bad.json")
