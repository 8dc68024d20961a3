"""The engine's configuration: which backend runs each stage, with what options, and the quality bar.

A config is a YAML mapping (see configs/engine/*.yaml). Every stage is ``{backend: NAME, ...options}``; the
options are the keyword arguments of that backend's class. Anything not named keeps the defaults below, which
are the weight-free backends::

    max_foregrounds: 1
    captions:     {backend: sidecar}
    segmentation: {backend: clean_plate, threshold: 0.1}
    matting:      {backend: pymatting}
    removal:      {backend: temporal_plate}
    judge:        {backend: none}
    quality:      {key_interval: 10, min_judge_score: 7, min_recomposite_psnr: 30, ...}
    ray:          {num_cpus: null, object_store_memory: null, model_actors: 1, model_gpus: 0}
    composite:    {samples: 0, min_foregrounds: 1, scale: [0.3, 0.7], max_speed: 0.5, seed: 0}
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

STAGES = ("captions", "segmentation", "matting", "removal", "judge")
DEFAULT_BACKENDS = {"captions": "sidecar", "segmentation": "clean_plate", "matting": "pymatting",
                    "removal": "temporal_plate", "judge": "none"}


@dataclass(frozen=True)
class Quality:
    """The quality bar: the paper's judge rule and the weight-free checks that always run."""

    key_interval: int = 10  # Delta_key: frames between judged key frames
    min_judge_score: int = 7  # keep [N, N + Delta_key] when bg and fg scores of both ends are >= this
    min_recomposite_psnr: float = 30.0  # dB, foregrounds over the background against the input
    min_coverage: float = 0.005  # mean alpha area per foreground, as a share of the frame
    max_coverage: float = 0.9
    max_alpha_instability: float = 0.1  # mean |a_t - a_{t-1}| (eval.layers.alpha_stability)
    max_leakage: float = 0.5  # eval.layers.fg_leakage: background under the matte carrying the fg colour
    min_frames: int = 2


@dataclass(frozen=True)
class RayOptions:
    num_cpus: int | None = None  # local Ray only; None lets Ray count them
    object_store_memory: int | None = None  # bytes, local Ray only
    model_actors: int = 1  # actors per model stage (each loads the model once)
    model_gpus: float = 0.0  # GPUs per model actor


@dataclass(frozen=True)
class Composite:
    """`data composite` (LayerFlow's copy-paste synthesis): K in [min_foregrounds, max_foregrounds] per sample."""

    samples: int = 0  # 0: one per background video
    min_foregrounds: int = 1
    scale: tuple[float, float] = (0.3, 0.7)  # sprite height as a share of the frame height
    max_speed: float = 0.5  # largest displacement over the clip, as a share of the frame side (per axis)
    seed: int = 0


@dataclass(frozen=True)
class EngineConfig:
    max_foregrounds: int = 1
    stages: dict[str, dict[str, Any]] = field(default_factory=lambda: {s: {"backend": b} for s, b in
                                                                        DEFAULT_BACKENDS.items()})
    quality: Quality = Quality()
    ray: RayOptions = RayOptions()
    composite: Composite = Composite()
    size: tuple[int, int] | None = None  # (width, height) to resample to; None keeps the input's
    frames: int | None = None  # frames per sample (the first N after fps resampling); None keeps all
    fps: float | None = None  # resample to this frame rate; None keeps the input's

    def backend(self, stage: str) -> str:
        return self.stages[stage]["backend"]

    def options(self, stage: str) -> dict[str, Any]:
        return {k: v for k, v in self.stages[stage].items() if k != "backend"}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """A hash of everything that changes what a sample looks like: a resumed run must match it."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True, default=list).encode()).hexdigest()[:16]

    def with_resampling(self, size: tuple[int, int] | None, frames: int | None, fps: float | None) -> EngineConfig:
        """This config with the command line's --size/--frames/--fps applied where given."""
        return dataclasses.replace(self, size=size or self.size, frames=frames or self.frames, fps=fps or self.fps)


def _dataclass_from(cls: type, data: Any, where: str) -> Any:
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a mapping, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where}; allowed: {sorted(names)}")
    return cls(**data)


def parse_config(data: dict[str, Any] | None, where: str = "config") -> EngineConfig:
    """Validate a config mapping (backends are checked against the registry when the engine builds them)."""
    data = dict(data or {})
    allowed = {"max_foregrounds", "quality", "ray", "composite", "size", "frames", "fps", *STAGES}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where}; allowed: {sorted(allowed)}")
    k = data.get("max_foregrounds", 1)
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"max_foregrounds in {where} must be an integer >= 1, got {k!r}")
    stages = {}
    for stage in STAGES:
        entry = data.get(stage) or {}
        if isinstance(entry, str):
            entry = {"backend": entry}
        if not isinstance(entry, dict):
            raise ValueError(f"{stage} in {where} must be a mapping like {{backend: NAME, ...}}")
        stages[stage] = {"backend": DEFAULT_BACKENDS[stage], **entry}
    size = data.get("size")
    if size is not None:
        if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) and v > 0
                                                                           for v in size)):
            raise ValueError(f"size in {where} must be [WIDTH, HEIGHT], got {size!r}")
        size = (int(size[0]), int(size[1]))
    return EngineConfig(max_foregrounds=k, stages=stages, quality=_dataclass_from(Quality, data.get("quality"),
                                                                                  f"{where}: quality"),
                        ray=_dataclass_from(RayOptions, data.get("ray"), f"{where}: ray"),
                        composite=_composite(data.get("composite"), where),
                        size=size, frames=data.get("frames"), fps=data.get("fps"))


def _composite(data: Any, where: str) -> Composite:
    c = _dataclass_from(Composite, data, f"{where}: composite")
    lo, hi = (tuple(c.scale) + (None, None))[:2]
    if not (isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and 0 < lo <= hi <= 1):
        raise ValueError(f"composite.scale in {where} must be [low, high] with 0 < low <= high <= 1, got {c.scale!r}")
    if c.samples < 0 or c.min_foregrounds < 1 or c.max_speed < 0:
        raise ValueError(f"composite in {where} needs samples >= 0, min_foregrounds >= 1 and max_speed >= 0")
    return dataclasses.replace(c, scale=(float(lo), float(hi)))


def load_config(path: str | Path | None) -> EngineConfig:
    """Read an engine YAML file; None gives the all-weight-free defaults."""
    if path is None:
        return parse_config({})
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"engine config {path} not found; see configs/engine/ for examples")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from e
    if data is not None and not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of settings, got {type(data).__name__}")
    return parse_config(data, where=str(path))
