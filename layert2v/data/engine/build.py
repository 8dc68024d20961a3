"""`layert2v data build`: run every input clip through the five stages and write a folder dataset.

Steps, in order: load (decode, resample) -> captions -> segmentation -> matting -> removal -> check (weight-free
checks, judge) -> write. Each step takes and returns a :class:`Clip`; a step that raises :class:`Reject` (or any
error) marks the clip rejected and the later steps pass it through, so one bad clip never stops the others.

Output (see docs/DATA_ENGINE.md)::

    DATASET/
      metadata.jsonl         accepted samples (layert2v.data.folder format + source, source_frames, scores, ...)
      rejects.jsonl          {"source", "id", "reason", "scores"} per rejected clip
      <id>/                  one layered directory per accepted sample (LayeredVideo.save: atomic)
      .engine/run.json       what was built from what: a rerun must match it (then it resumes)
      .engine/records/<id>.json   the done marker of one clip, written after its sample directory

Every worker writes only its own clips' directories and records; the two .jsonl files are assembled from the
records by the driver at the end (temp + rename), so a killed run leaves no half-written sample and a rerun
redoes only the clips without a record.
"""

from __future__ import annotations

import inspect
import json
import logging
import pickle
import shutil
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ...formats import read_json_object
from ...io.codec import read_video
from ...output_dirs import remove_leftovers, write_text_atomic
from ...video import LayeredVideo
from ..fit import fit_frames
from ..folder import METADATA, make_record
from . import quality
from .clip import Clip, Reject, discover, probe_fps
from .config import STAGES, EngineConfig
from .stages import backend_class, build_backend, check_options

RUN_FORMAT = "layert2v-data-engine"
REJECTS = "rejects.jsonl"
STATE = ".engine"
STEPS = ("load", "captions", "segmentation", "matting", "removal", "check", "write")
MODEL_STEPS = {"captions", "segmentation", "matting", "removal", "check"}  # those that may hold a model


# --------------------------------------------------------------------------------------------- steps
class Engine:
    """The steps of one process (a Ray worker, or the driver in local mode). Backends are built on first use."""

    def __init__(self, config: EngineConfig, out: str | Path):
        self.config = config
        self.out = Path(out)
        self._backends: dict[str, Any] = {}

    def backend(self, stage: str) -> Any:
        if stage not in self._backends:
            name, options = self.config.backend(stage), self.config.options(stage)
            if "max_foregrounds" in inspect.signature(backend_class(stage, name).__init__).parameters:
                options.setdefault("max_foregrounds", self.config.max_foregrounds)  # e.g. how many subjects to ask for
            self._backends[stage] = build_backend(stage, name, options)
        return self._backends[stage]

    def load_all(self, stages: Iterable[str] = STAGES) -> None:
        """Build the backends now, so that weights that fail to load stop the run once, before any clip."""
        for stage in stages:
            try:
                self.backend(stage)
            except (ValueError, FileNotFoundError):
                raise
            except Exception as e:
                raise ValueError(f"{stage} backend {self.config.backend(stage)!r} failed to load: "
                                 f"{type(e).__name__}: {e}") from e

    def run(self, step: str, clip: Clip) -> Clip:
        """Apply one step; rejections and errors are recorded on the clip, never raised."""
        if clip.rejected is not None:
            return clip
        start = time.perf_counter()
        try:
            getattr(self, f"step_{step}")(clip)
        except Reject as r:
            clip.reject(f"{step}: {r.reason}", r.scores)
        except Exception as e:  # a bug or a backend failure on this clip: record it, keep the run going
            last = traceback.extract_tb(e.__traceback__)[-1]
            clip.reject(f"{step}: {type(e).__name__}: {e} ({Path(last.filename).name}:{last.lineno})")
        clip.timings[step] = time.perf_counter() - start
        return clip

    def step_load(self, clip: Clip) -> None:
        cfg = self.config
        fps = probe_fps(clip.path)
        limit = None  # decode only as far as --frames needs
        if cfg.frames:
            limit = round((cfg.frames - 1) * fps / cfg.fps) + 1 if cfg.fps else cfg.frames
        try:
            frames = read_video(clip.path, limit)
        except (ValueError, OSError) as e:
            raise Reject(f"cannot decode {clip.source}: {e}") from e
        except Exception as e:  # av.FFmpegError and friends
            raise Reject(f"cannot decode {clip.source}: {type(e).__name__}: {e}") from e
        try:
            frames, indices, fps = fit_frames(frames, fps, cfg.size, cfg.frames, cfg.fps)
        except ValueError as e:  # too short
            raise Reject(str(e)) from None
        t, h, w, _ = frames.shape
        if t < cfg.quality.min_frames:
            raise Reject(f"has {t} frame(s); a sample needs at least {cfg.quality.min_frames}")
        if h % 2 or w % 2:
            raise Reject(f"is {w}x{h}; samples need even width and height (pass --size)")
        clip.frames, clip.source_frames, clip.fps = frames, indices, fps

    def step_captions(self, clip: Clip) -> None:
        if clip.prompts is None:
            clip.prompts = self.backend("captions").caption(clip.frames, clip.object_names)
            clip.backends["captions"] = self.config.backend("captions")
        else:
            clip.backends["captions"] = "sidecar"
        k = len(clip.prompts["foregrounds"])
        if k > self.config.max_foregrounds:
            raise Reject(f"has {k} foregrounds; the config allows max_foregrounds: {self.config.max_foregrounds}")
        if clip.object_names and len(clip.object_names) != k:
            raise Reject(f"the .txt sidecar names {len(clip.object_names)} object(s) but the captions have {k} "
                         "foreground(s); give one name per foreground")

    def step_segmentation(self, clip: Clip) -> None:
        clip.masks = self.segment(clip.frames, clip.object_names or list(clip.prompts["foregrounds"]))
        clip.backends["segmentation"] = self.config.backend("segmentation")

    def step_matting(self, clip: Clip) -> None:
        clip.alphas, clip.foregrounds = self.matte(clip.frames, clip.masks)
        clip.backends["matting"] = self.config.backend("matting")

    def step_removal(self, clip: Clip) -> None:
        clip.background = self.remove(clip.frames, clip.masks, clip.prompts["background"])
        if (holes := self.plate_holes()) is not None:
            clip.scores["plate_holes"] = holes
        clip.backends["removal"] = self.config.backend("removal")

    # the stages on frames: a whole clip (the steps above) or one window of a streamed one (engine.decompose)
    def segment(self, frames: np.ndarray, names: list[str]) -> list[np.ndarray]:
        """One bool mask (T, H, W) per object name (at least one: the weight-free segmenter needs no names)."""
        masks = self.backend("segmentation").segment(frames, names)
        if len(masks) != max(1, len(names)):
            raise Reject(f"the segmenter returned {len(masks)} mask(s) for {len(names)} object(s)")
        return [np.asarray(m, bool) for m in masks]

    def matte(self, frames: np.ndarray, masks: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        alphas, foregrounds = self.backend("matting").matte(frames, masks)
        return [np.asarray(a, np.float32) for a in alphas], [np.asarray(f, np.float32) for f in foregrounds]

    def remove(self, frames: np.ndarray, masks: list[np.ndarray], caption: str) -> np.ndarray:
        return np.asarray(self.backend("removal").remove(frames, masks, caption), np.float32)

    def plate_holes(self) -> float | None:
        """The removal backend's share of pixels never uncovered (temporal_plate), when it reports one."""
        return getattr(self.backend("removal"), "last_holes", None)

    def step_check(self, clip: Clip) -> None:
        q = self.config.quality
        video = to_video(clip)
        clip.scores.update(quality.weight_free_scores(video))
        failures = quality.weight_free_failures(clip.scores, q)
        if failures:
            raise Reject("; ".join(failures))
        if self.config.backend("judge") == "none":
            return
        keys = quality.key_frames(video.num_frames, q.key_interval)
        judged = self.backend("judge").score({t: quality.panel(video, t) for t in keys}, clip.prompts["full"])
        clip.backends["judge"] = self.config.backend("judge")
        clip.scores["judge"] = {str(t): list(judged[t]) for t in keys if t in judged}
        span = quality.qualified_span(judged, keys, q.min_judge_score)
        if span is None or span[1] - span[0] + 1 < q.min_frames:
            raise Reject(f"no key-frame interval scores >= {q.min_judge_score} on background and foreground")
        if span != (0, video.num_frames - 1):  # keep the qualified frames only, like the paper
            first, last = span
            clip.frames = clip.frames[first:last + 1]
            clip.background = clip.background[first:last + 1]
            clip.alphas = [a[first:last + 1] for a in clip.alphas]
            clip.foregrounds = [f[first:last + 1] for f in clip.foregrounds]
            clip.masks = [m[first:last + 1] for m in clip.masks]
            clip.source_frames = clip.source_frames[first:last + 1]

    def step_write(self, clip: Clip) -> None:
        video = to_video(clip)
        video.save(self.out / clip.id, overwrite=True)  # replaces only a saved sample left by a killed run
        clip.record = make_record(video, clip.id, clip.id, fps=video.fps, **video.metadata)
        clip.frames = clip.background = None
        clip.masks, clip.alphas, clip.foregrounds = [], [], []


def to_video(clip: Clip) -> LayeredVideo:
    fps: float | int = int(clip.fps) if float(clip.fps).is_integer() else round(clip.fps, 3)
    meta = {"source": clip.source, "source_frames": clip.source_frames, "scores": clip.scores,
            "backends": clip.backends}
    return LayeredVideo(full=clip.frames, background=clip.background, foregrounds=clip.foregrounds,
                        alphas=clip.alphas, fps=fps, prompts=clip.prompts, metadata=meta)


def record_of(clip: Clip) -> dict[str, Any]:
    """What the clip's done marker holds: its metadata line, or its reject line."""
    if clip.rejected is not None:
        return {"rejected": {"source": clip.source, "id": clip.id, "reason": clip.rejected, "scores": clip.scores,
                             "backends": clip.backends}}
    return {"accepted": clip.record}


# --------------------------------------------------------------------------------------- output dir
def _json(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class Output:
    """The dataset directory: refuses foreign content, resumes its own run, writes done markers atomically."""

    def __init__(self, directory: str | Path):
        self.root = Path(directory).expanduser()
        self.records = self.root / STATE / "records"

    def open(self, inputs: list[Path], config: EngineConfig) -> bool:
        """Create or resume the output; True when resuming. Raises with the fix when the directory is foreign."""
        roots = [p.expanduser().resolve() for p in inputs]
        run = {"format": RUN_FORMAT, "input": " ".join(str(r) for r in roots), "config": config.fingerprint()}
        marker = self.root / STATE / "run.json"
        if self.root.exists() and not self.root.is_dir():
            raise FileExistsError(f"--out {self.root} exists and is not a directory; choose another --out")
        if self.root.is_dir() and any(self.root.iterdir()):
            if not marker.is_file():
                raise FileExistsError(f"--out {self.root} exists with other content; choose a new or empty "
                                      "directory")
            previous = read_json_object(marker, f"it is damaged: delete {self.root} or choose another --out")
            if previous.get("input") != run["input"] or previous.get("config") != run["config"]:
                raise FileExistsError(f"--out {self.root} holds a build of {previous.get('input')} with another "
                                      "config; rerun with the same inputs and config to resume, or choose another "
                                      "--out")
            remove_leftovers(self.root)  # temporary directories and files of a killed run
            return True
        for root in roots:
            if self.root.resolve().is_relative_to(root):
                raise ValueError(f"--out {self.root} lies inside the input {root}; choose a directory outside it")
        self.records.mkdir(parents=True, exist_ok=True)
        write_text_atomic(marker, json.dumps({**run, "settings": config.to_dict()}, indent=2, default=list) + "\n")
        return False

    def done(self, clip_id: str) -> dict[str, Any] | None:
        path = self.records / f"{clip_id}.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def mark(self, clip_id: str, record: dict[str, Any]) -> None:
        write_text_atomic(self.records / f"{clip_id}.json", json.dumps(record, default=_json) + "\n")

    def finish(self, clip_ids: list[str]) -> tuple[list[dict], list[dict]]:
        """Assemble metadata.jsonl and rejects.jsonl from the records of `clip_ids`, in input order."""
        accepted, rejected = [], []
        for cid in clip_ids:
            rec = self.done(cid)
            if rec is None:
                continue
            (accepted if "accepted" in rec else rejected).append(rec.get("accepted") or rec["rejected"])
        write_text_atomic(self.root / REJECTS, "".join(json.dumps(r, default=_json) + "\n" for r in rejected))
        write_text_atomic(self.root / METADATA, "".join(json.dumps(r, default=_json) + "\n" for r in accepted))
        return accepted, rejected


def finish_clip(engine: Engine, output: Output, clip: Clip) -> dict[str, Any]:
    """Write the clip (when accepted) and its done marker; return the marker."""
    if clip.rejected is None:
        engine.run("write", clip)
        if clip.rejected is not None:  # the write itself failed: no sample directory, a reject record
            shutil.rmtree(output.root / clip.id, ignore_errors=True)
    record = record_of(clip)
    output.mark(clip.id, record)
    return record


# ------------------------------------------------------------------------------------------ running
@dataclass
class Summary:
    accepted: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    skipped: int = 0  # clips a previous run had finished
    backends: dict[str, str] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)  # summed over the clips of this run
    processed: int = 0


def validate(config: EngineConfig) -> dict[str, str]:
    """Check every backend name and its options before any clip is read; return stage -> backend."""
    for stage in STAGES:
        check_options(stage, config.backend(stage), config.options(stage))
    return {stage: config.backend(stage) for stage in STAGES}


def _local(clips: list[Clip], engine: Engine, output: Output) -> Iterator[tuple[Clip, dict]]:
    for clip in clips:
        for step in STEPS[:-1]:
            engine.run(step, clip)
        yield clip, finish_clip(engine, output, clip)


def _ray_step(batch: dict[str, np.ndarray], step: str, config: EngineConfig, out: str) -> dict[str, np.ndarray]:
    engine = Engine(config, out)
    return {"clip": np.array([pickle.dumps(engine.run(step, pickle.loads(c))) for c in batch["clip"]], object)}


class _RayModelStep:
    """A model stage as a Ray actor: the backend (and its weights) loads once per actor."""

    def __init__(self, step: str, config: EngineConfig, out: str):
        self.step, self.engine = step, Engine(config, out)
        self.engine.load_all([_stage_of(step, config)[0]])

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"clip": np.array([pickle.dumps(self.engine.run(self.step, pickle.loads(c))) for c in batch["clip"]],
                                 object)}


def _ray_finish(batch: dict[str, np.ndarray], config: EngineConfig, out: str) -> dict[str, np.ndarray]:
    engine, output = Engine(config, out), Output(out)
    clips = [pickle.loads(c) for c in batch["clip"]]
    records = [json.dumps(finish_clip(engine, output, c), default=_json) for c in clips]
    timings = [json.dumps(c.timings) for c in clips]
    return {"id": np.array([c.id for c in clips]), "record": np.array(records), "timings": np.array(timings)}


def start_ray(config: EngineConfig, address: str | None) -> bool:
    """Join the cluster at `address`, or start a local Ray, unless one is up; True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(num_cpus=config.ray.num_cpus, object_store_memory=config.ray.object_store_memory,
                     include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    except Exception as e:  # Ray raises bare Exceptions (e.g. a node that timed out starting)
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise ValueError(f"could not start {where} ({str(e).splitlines()[0]}); rerun to resume, or use --local") \
            from e
    return True


def _ray(clips: list[Clip], engine: Engine, output: Output, address: str | None) -> Iterator[tuple[Clip, dict]]:
    import ray
    import ray.data

    cfg = engine.config
    started = start_ray(cfg, address)
    for handler in logging.getLogger("ray.data").handlers:  # one progress bar, ours: Ray's notes go to its log file
        if not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.WARNING)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # one bar, ours
    ctx.execution_options.preserve_order = False
    by_id = {c.id: c for c in clips}
    # clips travel pickled (a bytes column Arrow stores as is); one block per clip so that clips spread out
    ds = ray.data.from_items([{"clip": pickle.dumps(c)} for c in clips], override_num_blocks=max(1, len(clips)))
    out = str(output.root)
    for step in STEPS[:-1]:
        uses_model = step in MODEL_STEPS and getattr(backend_class(*_stage_of(step, cfg)), "uses_model", False)
        if uses_model:
            ds = ds.map_batches(_RayModelStep, fn_constructor_args=(step, cfg, out), batch_size=1,
                                concurrency=cfg.ray.model_actors, num_gpus=cfg.ray.model_gpus or None)
        else:
            ds = ds.map_batches(_ray_step, fn_kwargs={"step": step, "config": cfg, "out": out}, batch_size=1)
    ds = ds.map_batches(_ray_finish, fn_kwargs={"config": cfg, "out": out}, batch_size=1)
    try:
        for row in ds.iter_rows():
            clip = by_id[str(row["id"])]
            clip.timings = json.loads(str(row["timings"]))
            yield clip, json.loads(str(row["record"]))
    finally:
        if started:  # disconnect; a local Ray we started stops, a cluster joined with --address runs on
            ray.shutdown()


def _stage_of(step: str, cfg: EngineConfig) -> tuple[str, str]:
    stage = "judge" if step == "check" else step
    return stage, cfg.backend(stage)


def build(input_root: str | Path, out: str | Path, config: EngineConfig, *, executor: str = "ray",
          address: str | None = None, progress: bool = True,
          on_clip: Callable[[Clip, dict], None] | None = None) -> Summary:
    """Build a dataset from the videos under `input_root` into `out` (see the module docstring).

    `executor` is ``"ray"`` (a local Ray, or the cluster at `address`) or ``"local"`` (this process, in order).
    Raises ValueError/FileNotFoundError/FileExistsError with the fix for bad input, before any clip is decoded.
    """
    if executor not in ("ray", "local"):
        raise ValueError(f"executor must be 'ray' or 'local', got {executor!r}")
    input_root = Path(input_root).expanduser()
    backends = validate(config)
    found = discover(input_root)  # raises when INPUT has no videos
    output = Output(out)
    output.open([input_root], config)
    summary = Summary(backends=backends)
    engine = Engine(config, output.root)
    ids, todo = [], []
    for item in found:
        clip, reject = item if isinstance(item, tuple) else (item, None)
        ids.append(clip.id)
        if output.done(clip.id) is not None:
            summary.skipped += 1
        elif reject is not None:
            clip.reject(f"input: {reject.reason}", reject.scores)
            finish_clip(engine, output, clip)
        else:
            todo.append(clip)
    if executor == "local" and todo:
        engine.load_all()
    run: Iterable[tuple[Clip, dict]] = (iter(()) if not todo else _local(todo, engine, output)
                                        if executor == "local" else _ray(todo, engine, output, address))
    bar = tqdm(total=len(todo), unit="clip", disable=not progress, desc="data build")
    counts = {"ok": 0, "rejected": 0}
    for clip, record in run:
        counts["ok" if "accepted" in record else "rejected"] += 1
        summary.processed += 1
        for step, seconds in clip.timings.items():
            summary.stage_seconds[step] = summary.stage_seconds.get(step, 0.0) + seconds
        bar.set_postfix(counts)
        bar.update()
        if on_clip is not None:
            on_clip(clip, record)
    bar.close()
    summary.accepted, summary.rejected = output.finish(ids)
    return summary


def summary_text(summary: Summary, out: Path) -> str:
    """The closing lines the CLI prints: counts, backends used, per-stage throughput."""
    lines = [f"wrote {len(summary.accepted)} sample(s) to {out} ({len(summary.rejected)} rejected, see "
             f"{out / REJECTS}; {summary.skipped} already done by an earlier run)",
             "backends: " + ", ".join(f"{s}={b}" for s, b in summary.backends.items())]
    if summary.processed:
        rates = [f"{step} {summary.processed / s:.2f} clip/s" for step, s in summary.stage_seconds.items() if s > 0]
        lines.append("per-stage throughput (one worker): " + ", ".join(rates))
    return "\n".join(lines)
