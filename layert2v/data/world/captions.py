"""The world's language: captions at three levels from templates with synonyms, and parsing them back.

Captions are built bottom-up so that the full caption *contains* the layer captions verbatim::

    foreground: "a red disc gliding to the right"
    background: "blue stripes scrolling left"
    full:       "<fg 1>, <fg 2> and <fg 3> over <background>"   (also "in front of", "against")

Foregrounds are listed in layer order, bottom first. Object captions never contain " and ", "," or a background
separator, which is what makes :func:`layert2v.prompts.parse_prompt` an exact inverse on the world's captions.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np

from ...prompts import SEPARATORS, join_objects
from .vocabulary import BACKGROUNDS, COLOURS, MOTIONS, SHAPES

if TYPE_CHECKING:
    from .specs import BackgroundSpec, ClipSpec, ObjectSpec

SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle",),
    "diamond": ("diamond", "rhombus"),
    "star": ("star",),
    "ring": ("ring", "hoop", "donut"),
    "cross": ("cross", "plus sign"),
}
MOTION_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("moving left", "moving to the left", "sliding left", "gliding to the left", "drifting left"),
    "right": ("moving right", "moving to the right", "sliding right", "gliding to the right", "drifting right"),
    "up": ("moving up", "rising", "floating upward", "drifting up", "sliding upward"),
    "down": ("moving down", "falling", "sinking", "dropping down", "sliding downward"),
    "up-left": ("moving up to the left", "drifting toward the top left", "gliding diagonally up-left"),
    "up-right": ("moving up to the right", "drifting toward the top right", "gliding diagonally up-right"),
    "down-left": ("moving down to the left", "drifting toward the bottom left", "gliding diagonally down-left"),
    "down-right": ("moving down to the right", "drifting toward the bottom right", "gliding diagonally down-right"),
    "circling": ("circling", "circling around", "going round in circles", "orbiting"),
    "growing": ("growing", "getting bigger", "expanding", "swelling up"),
    "shrinking": ("shrinking", "getting smaller", "contracting", "shrinking away"),
    "bouncing": ("bouncing", "hopping", "bouncing on the spot", "bouncing like a ball"),
}
BACKGROUND_TEMPLATES: dict[str, tuple[str, ...]] = {
    "sky": ("a {c} sky gradient", "a {c} gradient sky", "a smooth {c} gradient"),
    "stripes": ("a {c} striped background", "{c} stripes", "a background of {c} stripes", "{c} vertical stripes"),
    "checker": ("a {c} checkerboard", "a {c} checkered background", "{c} checks"),
    "horizon": ("a {c} horizon", "a {c} landscape under a pale sky", "{c} hills below a pale sky"),
    "waves": ("{c} waves", "a {c} wavy background", "a background of {c} waves"),
    "dots": ("{c} polka dots", "a {c} dotted background", "a background of {c} dots"),
    "noise": ("a {c} noise texture", "a {c} mottled background", "{c} noise"),
}
# Words that identify a background kind, checked in this order ("horizon ... pale sky" is a horizon, not a sky).
BACKGROUND_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("horizon", ("horizon", "landscape", "hills")),
    ("stripes", ("stripes", "striped")),
    ("checker", ("checkerboard", "checkered", "checks")),
    ("waves", ("waves", "wavy")),
    ("dots", ("dots", "dotted")),
    ("noise", ("noise", "mottled")),
    ("sky", ("sky", "gradient")),
)
PAN_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("scrolling left", "panning left", "sliding to the left"),
    "right": ("scrolling right", "panning right", "sliding to the right"),
}

assert set(SHAPE_WORDS) == set(SHAPES) and set(MOTION_PHRASES) == set(MOTIONS)
assert set(BACKGROUND_TEMPLATES) == set(BACKGROUNDS) == {k for k, _ in BACKGROUND_WORDS}


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _choose(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def object_caption(obj: ObjectSpec, rng: np.random.Generator) -> str:
    """E.g. "a red disc gliding to the right"."""
    return f"{_article(obj.colour)} {obj.colour} {_choose(rng, SHAPE_WORDS[obj.shape])} " \
           f"{_choose(rng, MOTION_PHRASES[obj.motion])}"


def background_caption(bg: BackgroundSpec, rng: np.random.Generator) -> str:
    """E.g. "a blue striped background", "blue stripes scrolling left"."""
    text = _choose(rng, BACKGROUND_TEMPLATES[bg.kind]).format(c=bg.colour)
    return f"{text} {_choose(rng, PAN_PHRASES[bg.pan])}" if bg.pan else text


def describe(spec: ClipSpec, seed: int | None = None) -> dict[str, Any]:
    """Prompts at three levels, ``{"full", "background", "foregrounds"}``; the wording is deterministic from
    ``seed`` (default: the spec's seed), and the attributes from the spec."""
    rng = np.random.default_rng([spec.seed if seed is None else seed, 0x636170])  # its own stream: "cap"
    foregrounds = [object_caption(o, rng) for o in spec.objects]
    background = background_caption(spec.background, rng)
    full = f"{join_objects(foregrounds)}{_choose(rng, SEPARATORS)}{background}"
    return {"full": full, "background": background, "foregrounds": foregrounds}


def _find_longest(text: str, phrases: dict[str, tuple[str, ...]]) -> tuple[str | None, str]:
    """The key of the longest phrase occurring in `text` as whole words, and the text without that phrase."""
    best, best_phrase = None, ""
    for key, options in phrases.items():
        for phrase in options:
            if len(phrase) > len(best_phrase) and re.search(rf"\b{re.escape(phrase)}\b", text):
                best, best_phrase = key, phrase
    rest = re.sub(rf"\b{re.escape(best_phrase)}\b", " ", text, count=1) if best_phrase else text
    return best, rest


def parse_object(caption: str) -> dict[str, str | None]:
    """Attributes named in an object caption: ``{"colour", "shape", "motion"}``, None where not recognised.
    The motion phrase is matched (and removed) first, so words inside it are not taken for a shape."""
    motion, rest = _find_longest(caption.lower(), MOTION_PHRASES)
    return {
        "colour": _find_longest(rest, {c: (c,) for c in COLOURS})[0],
        "shape": _find_longest(rest, SHAPE_WORDS)[0],
        "motion": motion,
    }


def parse_background(caption: str) -> dict[str, str | None]:
    """Attributes named in a background caption: ``{"kind", "colour", "pan"}``, None where not recognised."""
    pan, rest = _find_longest(caption.lower(), PAN_PHRASES)
    kind = next((k for k, words in BACKGROUND_WORDS if any(re.search(rf"\b{w}\b", rest) for w in words)), None)
    return {"kind": kind, "colour": _find_longest(rest, {c: (c,) for c in COLOURS})[0], "pan": pan}
