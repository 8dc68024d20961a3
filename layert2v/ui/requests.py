"""What the page sends, as pydantic models, and how each becomes a job once checked against the model.

A model checks the types and ranges of one request body; :func:`one_line` turns pydantic's report into the one
line the page shows (the field by its label on the page, what it should be, what came). The checks that need the
model or the source video (frame and size rules, the sequence length, the foreground limit, the layer to regenerate,
trajectories against the clip) run in each body's ``job`` method, before anything is queued; the page's number
fields are named as the page labels them, not as the CLI's flags.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from ..preflight import SEED_RANGE, SequenceTooLong, check_sequence_length
from ..prompts import derive_prompts
from ..trajectory import Trajectories
from ..video import LayeredVideo
from .jobs import DecomposeRequest, GenerationRequest, RegenerateRequest

MAX_STEPS = 500


def _blank_is_none(value: Any) -> Any:
    """The page sends an empty field as "": the model's default."""
    return None if value == "" else value


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


Text = Annotated[str, BeforeValidator(_text)]
Seed = Annotated[int | None, BeforeValidator(_blank_is_none), Field(ge=SEED_RANGE[0], le=SEED_RANGE[1])]
Steps = Annotated[int | None, BeforeValidator(_blank_is_none), Field(ge=1, le=MAX_STEPS)]
Guidance = Annotated[float | None, BeforeValidator(_blank_is_none), Field(ge=0, allow_inf_nan=False)]
Whole = Annotated[int | None, BeforeValidator(_blank_is_none)]
Rows = Annotated[list[str], BeforeValidator(lambda value: [] if value is None else value)]  # bottom layer first


# The page's number fields, by their labels, with what each takes (what pydantic's complaint about one becomes).
FORM_RULES = {
    "seed": f"Seed must be a whole number from {SEED_RANGE[0]} to {SEED_RANGE[1]}",
    "steps": f"Steps must be a whole number from 1 to {MAX_STEPS}",
    "guidance": "Guidance must be a number of 0 or more (1 turns guidance off)",
    "frames": "Frames must be a whole number",
    "width": "Width must be a whole number",
    "height": "Height must be a whole number",
}


def one_line(error: ValidationError | list[dict[str, Any]]) -> str:
    """pydantic's first complaint as one line: "Steps must be a whole number from 1 to 500 (got '0')" for the page's
    number fields, else "field: what pydantic says (got ...)"."""
    first = (error.errors() if isinstance(error, ValidationError) else error)[0]
    where = ".".join(str(part) for part in first["loc"] if part != "body")
    if first["type"] == "json_invalid":
        return "the request body must be JSON"
    if not where:
        return "the request body must be a JSON object"
    got = first.get("input")
    shown = f" (got {got!r})" if isinstance(got, (str, int, float)) and len(repr(got)) < 60 else ""
    if where in FORM_RULES:
        return f"{FORM_RULES[where]}{shown}"
    return f"{where}: {first['msg']}{shown}"


def ui_message(error: Exception) -> str:
    """The library's messages name CLI flags; in the page the fields have the same names without dashes."""
    return (str(error).replace("--frames", "frames").replace("--size", "size").replace("--steps", "steps")
            .replace("add a --fg", "add a foreground row").replace("--regenerate one of them", "choose one of them"))


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Sampling(Body):
    """Seed, steps and guidance: blank takes the model's default."""

    seed: Seed = None
    steps: Steps = None
    guidance: Guidance = None

    def sampling(self, model: dict[str, Any]) -> tuple[int, int, float]:
        return (self.seed or 0, model["steps"] if self.steps is None else self.steps,
                model["guidance"] if self.guidance is None else self.guidance)


class Shaped(Sampling):
    """Frames and size of a clip: blank takes the model's default; checked against the model's frame rule."""

    frames: Whole = None
    width: Whole = None
    height: Whole = None

    def shape(self, model: dict[str, Any], num_foregrounds: int) -> tuple[int, int, int]:
        """Frames, width and height, checked against the model's rules and sequence length in the page's words."""
        frames = model["frames"] if self.frames is None else self.frames
        width = model["width"] if self.width is None else self.width
        height = model["height"] if self.height is None else self.height
        temporal, spatial = model["temporal"], model["spatial"]
        if frames < 1 or (frames - 1) % temporal:
            examples = ", ".join(str(temporal * k + 1) for k in (1, 2, 4, 8))
            raise ValueError(f"Frames must be {temporal}k+1 for this model (e.g. {examples}), got {frames}")
        for label, value in (("Width", width), ("Height", height)):
            if value < 1 or value % spatial:
                raise ValueError(f"{label} must be a multiple of {spatial} for this model, got {value}")
        try:
            check_sequence_length(num_foregrounds, frames, height, width, *model["configs"])
        except SequenceTooLong as e:
            if e.axis == "size":
                raise ValueError(f"Width and Height must be at most {e.most} for this model (its sequence length), "
                                 f"got {width}x{height}") from None
            if e.most < 1:
                raise ValueError(f"{num_foregrounds} foreground layers are more than this model's sequence length "
                                 "takes; remove a foreground row") from None
            raise ValueError(f"Frames must be at most {e.most} with {num_foregrounds} foreground layer(s) for this "
                             f"model (its sequence length), got {frames}") from None
        return frames, width, height

    def foreground_prompts(self, foregrounds: list[str], model: dict[str, Any]) -> list[str]:
        """The foreground rows, bottom first; all blank: [] (derived from the full prompt, like the CLI without
        --fg)."""
        foregrounds = [f.strip() for f in foregrounds]
        if foregrounds and all(not f for f in foregrounds):
            return []
        for k, f in enumerate(foregrounds, 1):
            if not f:
                raise ValueError(f"foreground {k} is empty; describe it or remove its row")
        limit = model["max_foregrounds"]
        if len(foregrounds) > limit:
            raise ValueError(f"this model takes at most {limit} foreground layer(s), got {len(foregrounds)}; "
                             "remove a row")
        return foregrounds


def trajectories_for(doc: Any, frames: int, num_foregrounds: int) -> Trajectories:
    """The page's key frames, in the trajectory file's format (docs/TRAJECTORIES.md), checked against the clip."""
    traj = Trajectories.from_dict(doc, "trajectory")
    try:
        traj.check(frames, num_foregrounds)
    except ValueError as e:
        raise ValueError(f"trajectory: {e}") from None
    return traj


class TrajectoryBody(Body):
    """Drawn key frames to interpolate for a clip of ``frames`` frames and ``foregrounds`` prompts."""

    trajectories: Any = None
    frames: int
    foregrounds: int

    def checked(self) -> Trajectories:
        return trajectories_for(self.trajectories, self.frames, self.foregrounds)


class GenerateBody(Shaped):
    """A text-to-video generation; blank layer prompts are derived from the full prompt."""

    prompt: Text = ""
    background: Text = ""
    foregrounds: Rows = []
    trajectories: Any = None

    def job(self, model: dict[str, Any]) -> GenerationRequest:
        if not self.prompt:
            raise ValueError("the full prompt is empty; describe the video to generate")
        foregrounds = self.foreground_prompts(self.foregrounds, model)
        background = self.background
        if not background or not foregrounds:
            background, foregrounds = derive_prompts(self.prompt, background or None, foregrounds or None)
        limit = model["max_foregrounds"]
        if len(foregrounds) > limit:
            raise ValueError(f"the full prompt names {len(foregrounds)} objects but this model takes at most "
                             f"{limit}; fill in the foreground rows")
        seed, steps, guidance = self.sampling(model)
        frames, width, height = self.shape(model, len(foregrounds))
        trajectories = None
        if self.trajectories is not None:
            trajectories = trajectories_for(self.trajectories, frames, len(foregrounds))
        return GenerationRequest(self.prompt, background, foregrounds, seed, steps, guidance, frames, width, height,
                                 trajectories)


class DecomposeBody(Shaped):
    """The method, prompts and numbers of a decomposition (the upload is checked by the route). ``method`` blank:
    :func:`layert2v.editing.decompose_method`'s default for the app's model. The engine takes the clip at its own
    size and frames, prompts optional (the foreground rows say how many objects to find); the model fits it to the
    model's size and frames (fewer for a shorter clip) unless the request gives frames or a size."""

    method: Annotated[Literal["engine", "model"] | None, BeforeValidator(_blank_is_none)] = None
    prompt: Text = ""
    background: Text = ""
    foregrounds: Rows = []

    def job(self, model: dict[str, Any], filename: str, method: str, why: str) -> DecomposeRequest:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(filename).name).strip("._") or "upload.mp4"
        if method == "engine":
            settings = [name for name in ("seed", "steps", "guidance", "frames", "width", "height")
                        if getattr(self, name) is not None]
            if settings:
                raise ValueError(f"{settings[0]} is a setting of the model method; the engine takes the clip at its "
                                 "own size and frames: leave it blank, or choose the model method")
            foregrounds = [f.strip() for f in self.foregrounds]
            for k, f in enumerate(foregrounds, 1):
                if not f:
                    raise ValueError(f"foreground {k} is empty; describe it or remove its row")
            return DecomposeRequest(Path(stem), self.prompt or None, self.background, foregrounds, 0, 0, 0.0, None,
                                    None, None, method=method, why=why)
        if not self.background:
            raise ValueError("the background prompt is empty; describe what is behind the objects")
        foregrounds = self.foreground_prompts(self.foregrounds, model)
        if not foregrounds:
            raise ValueError("no foreground prompts; describe each object to split off, bottom layer first")
        seed, steps, guidance = self.sampling(model)
        frames = width = height = None  # the model's, or fewer frames for a shorter clip (editing.decompose)
        if any(v is not None for v in (self.frames, self.width, self.height)):
            frames, width, height = self.shape(model, len(foregrounds))
        return DecomposeRequest(Path(stem), self.prompt or None, self.background, foregrounds, seed, steps, guidance,
                                frames, width, height, method=method, why=why)


class RegenerateBody(Sampling):
    """One foreground of a saved result made again from a new prompt (boxes for that foreground only)."""

    layer: Text = ""
    prompt: Text = ""
    trajectories: Any = None

    def job(self, run_id: str, source: LayeredVideo, model: dict[str, Any]) -> RegenerateRequest:
        from ..editing import regeneration_plan

        k, _kept = regeneration_plan(source.num_foregrounds, self.layer)
        if not self.prompt:
            raise ValueError(f"the new prompt for {self.layer} is empty; describe what it should show")
        seed, steps, guidance = self.sampling(model)
        trajectories = None
        if self.trajectories is not None:
            trajectories = trajectories_for(self.trajectories, source.num_frames, source.num_foregrounds)
            others = [f for f in trajectories.foregrounds if f != k]
            if others:
                raise ValueError(f"trajectory: boxes for foreground(s) {others}, which are kept; only foreground {k}, "
                                 "the one regenerated, can be steered")
        return RegenerateRequest(run_id, source, self.layer, self.prompt, seed, steps, guidance, trajectories)


class OpenBody(Body):
    path: Text = ""


class CompositeBody(Body):
    """A recomposite: the foregrounds' settings (``library.parse_settings`` checks them against the video) and an
    optional background upload."""

    layers: Any = None
    background: Text = ""
