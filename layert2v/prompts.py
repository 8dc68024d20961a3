"""Prompts: a full prompt split into layer prompts, and layer prompts joined into a full prompt.

One grammar for the CLI, the web app, editing and the world's captions::

    "<fg_1>, <fg_2> and <fg_3> over <background>"      (also "in front of", "against")

Foregrounds are listed in layer order, bottom first. :func:`parse_prompt` splits such a prompt,
:func:`full_prompt` writes one, and :func:`derive_prompts` fills in the layer prompts a caller left out.
"""

from __future__ import annotations

import re
from typing import Any

SEPARATORS: tuple[str, ...] = (" over ", " in front of ", " against ")
PLAIN_BACKGROUND = "a plain background"
_OBJECT_SPLIT = re.compile(r"\s*,\s*(?:and\s+)?|\s+and\s+")


def join_objects(captions: list[str]) -> str:
    """"x", "x and y", "x, y and z"."""
    return captions[0] if len(captions) == 1 else ", ".join(captions[:-1]) + " and " + captions[-1]


def full_prompt(background_prompt: str, foreground_prompts: list[str]) -> str:
    """The full prompt built from the layer prompts, in the form :func:`parse_prompt` splits: "fg_1, fg_2 and fg_3
    over bg"."""
    return f"{join_objects(list(foreground_prompts))} over {background_prompt}"


def parse_prompt(prompt: str) -> dict[str, Any]:
    """Split a full prompt into a background prompt and per-object foreground prompts.

    The rule (the inverse of :func:`full_prompt` and of the world's captions, and forgiving with anything else):

    1. Trim whitespace and a trailing full stop.
    2. Cut at the first background separator (" over ", " in front of ", " against "): the left part lists the
       objects, the right part is the background prompt. No separator: everything is objects, and the background
       is "a plain background" (also when the right part is empty).
    3. Split the objects part on commas and on " and "; empty pieces are dropped. The pieces are the foreground
       prompts, in layer order (first = foreground 1, the bottom layer). No piece: the whole objects part.

    Unknown words pass through untouched; only the separators are interpreted. Note that "a black and white cat"
    therefore splits into two objects: write colour pairs without " and " when that is not meant.

    Returns ``{"full": prompt, "background": str, "foregrounds": [str, ...]}``.
    """
    text = prompt.strip().rstrip(".").strip()
    lowered = text.lower()
    hits = [(lowered.find(sep), sep) for sep in SEPARATORS if sep in lowered]
    if hits:
        at, sep = min(hits)
        objects_part, background = text[:at].strip(), text[at + len(sep):].strip()
    else:
        objects_part, background = text, ""
    foregrounds = [p.strip() for p in _OBJECT_SPLIT.split(objects_part) if p.strip()]
    if not foregrounds:
        foregrounds = [objects_part or text or "an object"]
    return {"full": prompt, "background": background or PLAIN_BACKGROUND, "foregrounds": foregrounds}


def derive_prompts(prompt: str, background: str | None, foregrounds: list[str] | None) -> tuple[str, list[str]]:
    """(background, foregrounds): the ones given, the missing ones taken from the full prompt (:func:`parse_prompt`)."""
    if background and foregrounds:
        return background, foregrounds
    parsed = parse_prompt(prompt)
    return background or parsed["background"], foregrounds or parsed["foregrounds"]
