import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from frame_commitment import mean_jump, object_cells, off_line, settle_levels  # noqa: E402


def test_object_cells_find_the_cell_that_differs_from_the_empty_layer():
    empty = torch.randn(1, 4, 3, 5, 6)
    latents = empty.clone()
    for frame, (row, col) in enumerate([(0, 0), (2, 3), (4, 5)]):
        latents[0, :, frame, row, col] += 2.0
    assert object_cells(latents, empty).tolist() == [[0, 0], [2, 3], [4, 5]]


def test_mean_jump_is_the_mean_step_between_frames():
    assert mean_jump(np.array([[0, 0], [0, 1], [0, 2]])) == 1.0
    assert mean_jump(np.array([[0, 0], [3, 4], [3, 4]])) == 2.5


def test_off_line_is_zero_for_uniform_motion_and_grows_with_zigzag():
    assert off_line(np.array([[0, 0], [1, 2], [2, 4], [3, 6]])) < 1e-9
    assert off_line(np.array([[0, 0], [0, 4], [0, 0], [0, 4]])) > 1.5


def test_settle_levels_stop_at_the_last_departure():
    final = np.array([[5, 5], [1, 1]])
    history = [
        (0.9, np.array([[5, 5], [9, 9]])),  # frame 0 already there; frame 1 far
        (0.6, np.array([[0, 0], [1, 2]])),  # frame 0 leaves; frame 1 within one cell
        (0.3, np.array([[5, 6], [1, 1]])),
        (0.0, final),
    ]
    assert settle_levels(history).tolist() == [0.3, 0.6]
