"""VBench dimension arithmetic on hand-made clips, with stand-in networks whose outputs we choose."""

import math

import numpy as np
import pytest

from layert2v.eval import vbench
from layert2v.eval.backbones import Backbones
from layert2v.eval.suite import pool_vbench


def clip_of(*values, size=(4, 4)):
    """A clip whose frame t is uniformly grey at values[t]."""
    return np.stack([np.full((*size, 3), v, np.float32) for v in values])


# ------------------------------------------------------------------------------------ stand-ins
class GivenFeatures:
    def __init__(self, features):
        self.features = np.asarray(features, float)

    def encode(self, frames):
        assert len(frames) == len(self.features)
        return self.features


class Average:
    """Interpolates by averaging: exact for linear motion."""

    def interpolate(self, a, b):
        return (a + b) / 2


class GivenFlow:
    """Uniform horizontal flow with the given magnitudes, one per call."""

    def __init__(self, magnitudes):
        self.magnitudes = list(magnitudes)
        self.calls = 0

    def flow(self, a, b):
        flow = np.zeros((*a.shape[:2], 2))
        flow[..., 0] = self.magnitudes[self.calls]
        self.calls += 1
        return flow


class GivenAesthetic:
    def score(self, frames):
        return np.array([5.0, 7.0])


class RecordingViClip:
    num_frames = 8

    def __init__(self):
        self.seen = None

    def encode_video(self, frames):
        self.seen = [int(round(v * 255)) for v in frames[:, 0, 0, 0]]
        return np.array([1.0, 0.0])

    def encode_text(self, text):
        return np.array([1.0, 1.0])


# ------------------------------------------------------------------------------------ flicker
def test_flicker_of_two_frames_with_a_known_step():
    # |0 - 0.2| * 255 = 51 everywhere -> (255 - 51) / 255 = 0.8
    clip = clip_of(0.0, 0.2)
    assert vbench.frame_difference(clip) == pytest.approx(51.0)
    assert vbench.temporal_flickering(clip) == pytest.approx(0.8)


def test_flicker_averages_adjacent_pairs():
    # pair differences 51 and 0 -> mean 25.5 -> (255 - 25.5) / 255 = 0.9
    assert vbench.temporal_flickering(clip_of(0.0, 0.2, 0.2)) == pytest.approx(0.9)


def test_flicker_reads_8bit_frames_like_a_decoded_video():
    # 0.001 * 255 = 0.255 rounds to 0: no difference survives 8-bit quantisation
    assert vbench.temporal_flickering(clip_of(0.0, 0.001)) == 1.0
    assert vbench.frame_difference(clip_of(0.5, 0.5, 0.5)) == 0.0


def test_flicker_needs_two_frames():
    with pytest.raises(ValueError, match="at least 2 frames"):
        vbench.temporal_flickering(clip_of(0.3))


# -------------------------------------------------------------------------------- consistency
def test_consistency_terms_by_hand():
    # frame 2: cos(f1, f2) = 0 and cos(f1, f2) = 0 -> 0
    # frame 3: cos(f1, f3) = 1/sqrt2 and cos(f2, f3) = 1/sqrt2 -> 1/sqrt2
    total, count = vbench.consistency(clip_of(0, 0, 0), GivenFeatures([[1, 0], [0, 1], [1, 1]]))
    assert count == 2
    assert total == pytest.approx(1 / math.sqrt(2))
    assert total / count == pytest.approx(0.5 / math.sqrt(2))


def test_consistency_clips_negative_cosines_at_zero():
    total, count = vbench.consistency_terms(np.array([[1.0, 0.0], [-1.0, 0.0]]))
    assert (total, count) == (0.0, 1)


def test_identical_features_are_perfectly_consistent():
    total, count = vbench.consistency_terms(np.array([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]]))
    assert total / count == pytest.approx(1.0)


def test_consistency_pools_by_frames_not_by_videos():
    # video A: 3 frames (2 pairs) scoring 0.5; video B: 5 frames (4 pairs) scoring 1.0 -> (1 + 4) / 6
    def video(frames, subject, flicker):
        scores = {dim: {"FG": [None], "BG": [None], "BL": [None]} for dim in vbench.DIMENSIONS}
        scores["subject_consistency"] = {"FG": [subject], "BG": [subject], "BL": [subject]}
        scores["temporal_flickering"] = {"FG": [flicker], "BG": [flicker], "BL": [flicker]}
        return {"num_frames": frames, "vbench": scores}

    pooled = pool_vbench([video(3, 0.5, 0.8), video(5, 1.0, 0.9)], {"aesthetic_quality": "no weights"})
    assert pooled["subject_consistency"]["FG"] == pytest.approx(5 / 6)
    assert pooled["temporal_flickering"]["BL"] == pytest.approx(0.85)  # plain mean over videos
    assert pooled["aesthetic_quality"] == {"skipped": "no weights"}
    assert pooled["text_alignment"] == {"skipped": "no prompts saved with the videos"}


# --------------------------------------------------------------------------- motion smoothness
def test_motion_smoothness_of_linear_motion_is_perfect():
    assert vbench.motion_smoothness(clip_of(0.0, 0.2, 0.4), Average()) == 1.0


def test_motion_smoothness_of_a_flash():
    # interpolating frames 0 and 2 gives 0; frame 1 is 0.2 * 255 = 51 -> (255 - 51) / 255
    assert vbench.motion_smoothness(clip_of(0.0, 0.2, 0.0), Average()) == pytest.approx(0.8)


def test_motion_smoothness_leaves_the_last_odd_frame_of_an_even_clip_unscored():
    # even frames 0 and 0.4 predict frame 1 exactly; frame 3 (a jump to 1.0) has no right neighbour
    assert vbench.motion_smoothness(clip_of(0.0, 0.2, 0.4, 1.0), Average()) == 1.0


# ------------------------------------------------------------------------------------ aesthetic
def test_aesthetic_quality_is_the_mean_laion_score_over_ten():
    assert vbench.aesthetic_quality(clip_of(0.1, 0.2), GivenAesthetic()) == pytest.approx(0.6)


# ------------------------------------------------------------------------------- dynamic degree
def test_peak_magnitude_averages_the_top_five_percent():
    flow = np.zeros((20, 20, 2))
    flow[:2, :, 0] = 3.0  # 40 pixels at 3; the top int(400 * 0.05) = 20 are all 3
    assert vbench.flow_peak_magnitude(flow) == pytest.approx(3.0)
    flow = np.zeros((20, 20, 2))
    flow[..., 1] = 1.0
    flow[0, :10, :] = [3.0, 4.0]  # 10 pixels of magnitude 5, the rest 1: top 20 = (10 * 5 + 10 * 1) / 20
    assert vbench.flow_peak_magnitude(flow) == pytest.approx(3.0)


def test_dynamic_thresholds_follow_vbench():
    assert vbench.dynamic_thresholds(256, 320, 16, fps=8) == (6.0, 4)
    assert vbench.dynamic_thresholds(128, 128, 16, fps=8) == (3.0, 4)
    assert vbench.dynamic_thresholds(256, 256, 8, fps=4) == (12.0, 2)  # slower than 8 fps: threshold x 8/4


def test_dynamic_frames_are_sampled_at_about_8_fps():
    assert vbench.dynamic_frame_indices(16, fps=16) == [0, 2, 4, 6, 8, 10, 12, 14]
    assert vbench.dynamic_frame_indices(5, fps=24) == [0, 3]
    assert vbench.dynamic_frame_indices(3, fps=4) == [0, 1, 2]


def test_is_dynamic_counts_pairs_above_threshold():
    assert vbench.is_dynamic([7, 7, 7, 5], threshold=6, count=3)
    assert not vbench.is_dynamic([7, 7, 5, 5], threshold=6, count=3)
    assert not vbench.is_dynamic([6, 6, 6], threshold=6, count=1)  # strictly above


def test_dynamic_degree_end_to_end_with_a_stand_in_flow():
    # 64 px short side at 8 fps: threshold 6 * 64 / 256 = 1.5; 8 frames -> 2 moving pairs needed
    clip = np.zeros((8, 64, 64, 3), np.float32)
    assert vbench.dynamic_degree(clip, 8, GivenFlow([2, 2, 0, 0, 0, 0, 0]))
    assert not vbench.dynamic_degree(clip, 8, GivenFlow([2, 0, 0, 0, 0, 0, 0]))
    # at 16 fps every second frame is used: 4 frames, 3 pairs, round(4 * 4 / 16) = 1 moving pair needed
    flow = GivenFlow([0, 0, 2])
    assert vbench.dynamic_degree(clip, 16, flow)
    assert flow.calls == 3


# ------------------------------------------------------------------------------- text alignment
def test_middle_frame_sampling_matches_vbench():
    assert vbench.middle_frame_indices(8, 16) == [0, 2, 4, 6, 8, 10, 12, 14]
    # edges of linspace(0, 20, 9) as ints: 0 2 5 7 10 12 15 17 20 -> middles of [a, b - 1]
    assert vbench.middle_frame_indices(8, 20) == [0, 3, 5, 8, 10, 13, 15, 18]
    assert vbench.middle_frame_indices(8, 5) == [0, 1, 2, 3, 4, 4, 4, 4]


def test_text_alignment_is_the_cosine_of_the_two_embeddings():
    encoder = RecordingViClip()
    clip = clip_of(*[t / 255 for t in range(20)])
    assert vbench.text_alignment(clip, "a cat", encoder) == pytest.approx(1 / math.sqrt(2))
    assert encoder.seen == [0, 3, 5, 8, 10, 13, 15, 18]


def test_protocols_accept_the_stand_ins():
    assert isinstance(GivenFeatures([[1.0]]), vbench.ImageFeatureExtractor)
    assert isinstance(Average(), vbench.FrameInterpolator)
    assert isinstance(GivenFlow([]), vbench.FlowEstimator)
    assert isinstance(GivenAesthetic(), vbench.AestheticScorer)
    assert isinstance(RecordingViClip(), vbench.VideoTextEncoder)
    assert Backbones().skipped == {}
