"""The world's vocabulary: colours, shapes, motions and background kinds, and the held-out split (combinations of
them that ``split="train"`` never shows)."""

from __future__ import annotations

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.89, 0.12, 0.12),
    "orange": (1.00, 0.55, 0.05),
    "yellow": (0.98, 0.90, 0.12),
    "green": (0.15, 0.70, 0.20),
    "cyan": (0.10, 0.85, 0.90),
    "blue": (0.12, 0.25, 0.90),
    "purple": (0.55, 0.18, 0.78),
    "pink": (1.00, 0.50, 0.78),
    "white": (0.96, 0.96, 0.96),
    "black": (0.06, 0.06, 0.06),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star", "ring", "cross")
MOTIONS: tuple[str, ...] = (
    "left", "right", "up", "down", "up-left", "up-right", "down-left", "down-right",
    "circling", "growing", "shrinking", "bouncing",
)
BACKGROUNDS: tuple[str, ...] = ("sky", "stripes", "checker", "horizon", "waves", "dots", "noise")
PANS: tuple[str | None, ...] = (None, "left", "right")  # direction the background texture moves
SPLITS: tuple[str, ...] = ("train", "heldout")

# Unit direction of each straight motion, (dx, dy) with y down.
DIRECTIONS: dict[str, tuple[int, int]] = {
    "left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1),
    "up-left": (-1, -1), "up-right": (1, -1), "down-left": (-1, 1), "down-right": (1, 1),
}

# One held-out colour per shape and one held-out colour per background kind: every attribute is still seen in
# training, only these combinations are not.
HELDOUT_OBJECTS: frozenset[tuple[str, str]] = frozenset({  # (colour, shape)
    ("red", "star"), ("green", "triangle"), ("blue", "ring"), ("yellow", "cross"),
    ("orange", "square"), ("purple", "diamond"), ("cyan", "circle"),
})
HELDOUT_BACKGROUNDS: frozenset[tuple[str, str]] = frozenset({  # (kind, colour)
    ("sky", "orange"), ("stripes", "pink"), ("checker", "blue"), ("horizon", "purple"),
    ("waves", "red"), ("dots", "green"), ("noise", "yellow"),
})
TRAIN_OBJECTS: tuple[tuple[str, str], ...] = tuple(
    (c, s) for c in COLOURS for s in SHAPES if (c, s) not in HELDOUT_OBJECTS
)
TRAIN_BACKGROUNDS: tuple[tuple[str, str], ...] = tuple(
    (k, c) for k in BACKGROUNDS for c in COLOURS if (k, c) not in HELDOUT_BACKGROUNDS
)
SPLIT_IDS = {"train": 0, "heldout": 1}
