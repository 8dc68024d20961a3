"""The procedural layered world: coloured shapes moving over textured backgrounds, with exact layer ground truth.

It is what the small built-in model trains on and what tests and tutorials use, because every layer is known
exactly: the clean background, each object's straight RGB and its own alpha matte (anti-aliased, never reduced by
occlusion), and the full video as their composite in layer order (foreground 1 lies on the background, K on top).

A clip is drawn in two steps so that evaluation can know the truth without pixels:

* :func:`sample_spec` turns ``(seed, split)`` into a :class:`ClipSpec` -- background kind/colour/pan, and per object
  its shape, colour, motion and path -- plus its captions (:mod:`.captions`);
* :func:`render` turns a spec into a :class:`~layert2v.video.LayeredVideo`, vectorised numpy, a few ms a clip.

Held-out split: the (colour, shape) pairs in :data:`HELDOUT_OBJECTS` and the (kind, colour) backgrounds in
:data:`HELDOUT_BACKGROUNDS` never appear with ``split="train"``. Every ``split="heldout"`` clip contains at least
one of them (other parts of a held-out clip use training combinations), so a model trained on the train split can be
tested on attribute combinations it never saw. :func:`heldout_prompts` lists such cases.

The package: :mod:`.vocabulary` (attributes and the held-out split; ``PANS``, ``SPLITS`` and the ``TRAIN_``
lists are imported from there), :mod:`.shapes` (signed distances), :mod:`.specs` (what determines a clip),
:mod:`.captions` (the world's language), :mod:`.sampling` (drawing one from a seed), :mod:`.render` (pixels)
and :mod:`.datasets`.

Coordinates: positions are fractions of the frame width (x) and height (y), sizes fractions of min(H, W); y
points down, so "up" means decreasing y.
"""

from .datasets import WorldDataset, write_dataset
from .render import background_field, background_tones, generate_clip, generate_clip_with_spec, render, track
from .sampling import heldout_prompts, sample_spec
from .shapes import SHAPE_BOUNDS, coverage, shape_sdf
from .specs import BackgroundSpec, ClipSpec, ObjectSpec, attributes
from .vocabulary import BACKGROUNDS, COLOURS, DIRECTIONS, HELDOUT_BACKGROUNDS, HELDOUT_OBJECTS, MOTIONS, SHAPES

__all__ = ["BACKGROUNDS", "COLOURS", "DIRECTIONS", "HELDOUT_BACKGROUNDS", "HELDOUT_OBJECTS", "MOTIONS", "SHAPES",
           "SHAPE_BOUNDS", "BackgroundSpec", "ClipSpec", "ObjectSpec", "WorldDataset", "attributes", "background_field",
           "background_tones", "coverage", "generate_clip", "generate_clip_with_spec", "heldout_prompts", "render",
           "sample_spec", "shape_sdf", "track", "write_dataset"]
