"""What determines a clip: the background and objects (:class:`ClipSpec`, drawn by :mod:`.sampling`), and
:func:`attributes`, what a caption says of a spec."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .vocabulary import HELDOUT_BACKGROUNDS, HELDOUT_OBJECTS


@dataclass
class ObjectSpec:
    """One foreground object: what it is (shape, colour, motion) and where it goes (``path``, see
    :func:`~.render.track`)."""

    shape: str
    colour: str
    motion: str
    path: dict[str, float] = field(default_factory=dict)


@dataclass
class BackgroundSpec:
    """The background: texture kind, colour, the direction its texture moves (None: static) and texture params."""

    kind: str
    colour: str
    pan: str | None = None
    params: dict[str, float] = field(default_factory=dict)


@dataclass
class ClipSpec:
    """Everything that determines a clip; objects are listed in layer order (first = foreground 1, bottom)."""

    seed: int
    split: str
    num_frames: int
    height: int
    width: int
    fps: int
    background: BackgroundSpec
    objects: list[ObjectSpec]
    prompts: dict[str, Any] = field(default_factory=dict)

    @property
    def heldout_combinations(self) -> list[tuple[str, str]]:
        """The held-out (colour, shape) and (kind, colour) combinations this clip contains."""
        found = [(o.colour, o.shape) for o in self.objects if (o.colour, o.shape) in HELDOUT_OBJECTS]
        bg = (self.background.kind, self.background.colour)
        return found + ([bg] if bg in HELDOUT_BACKGROUNDS else [])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClipSpec:
        d = dict(d)
        d["background"] = BackgroundSpec(**d["background"])
        d["objects"] = [ObjectSpec(**o) for o in d["objects"]]
        return cls(**d)


def attributes(spec: ClipSpec) -> dict[str, Any]:
    """The spec's attributes without path details: what a caption says and a reader can check."""
    bg = spec.background
    return {"background": {"kind": bg.kind, "colour": bg.colour, "pan": bg.pan},
            "objects": [{"colour": o.colour, "shape": o.shape, "motion": o.motion} for o in spec.objects]}
