"""One generation at a time: a queue of requests and the single worker thread that runs them.

A request is a text-to-video generation (optionally with trajectories), a decomposition of an uploaded video or
the regeneration of one foreground of a saved result; each knows how to run itself on the pipeline. The worker
owns the pipeline (loaded once, at start-up, in the background) and reports each denoising step through the
pipeline's ``callback_on_step_end``.
"""

from __future__ import annotations

import itertools
import queue
import shutil
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..pipeline import LayerT2VPipeline
    from ..trajectory import Trajectories
    from ..video import LayeredVideo

StepCallback = Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]  # diffusers' callback_on_step_end


@dataclass
class GenerationRequest:
    """A text-to-video generation, as `layert2v generate` makes it (with `--trajectory` when given)."""

    prompt: str
    background: str
    foregrounds: list[str]
    seed: int
    steps: int
    guidance: float
    frames: int
    width: int
    height: int
    trajectories: Trajectories | None = None

    @property
    def name(self) -> str:
        return self.prompt

    def run(self, pipe: LayerT2VPipeline, callback: StepCallback) -> LayeredVideo:
        return pipe(self.prompt, self.background, self.foregrounds, num_frames=self.frames, height=self.height,
                    width=self.width, num_inference_steps=self.steps, guidance_scale=self.guidance, seed=self.seed,
                    trajectories=self.trajectories, callback_on_step_end=callback)

    def discard(self) -> None:
        """Release what the request holds outside memory (nothing here)."""


@dataclass
class DecomposeRequest:
    """Split an uploaded video into layers: ``method`` "model" is ``editing.decompose`` with the app's pipeline,
    "engine" the data engine (``data.engine.decompose.decompose_video``), which streams the layers straight into a
    new run directory under ``out`` and reports frames where the model reports steps. ``video`` is a file in a
    temporary directory of its own, removed once the request has run or is dropped."""

    video: Path
    prompt: str | None
    background: str
    foregrounds: list[str]
    seed: int
    steps: int
    guidance: float
    frames: int | None  # None: as editing.decompose chooses (the model's, fewer frames for a shorter clip)
    width: int | None
    height: int | None
    method: str = "model"
    why: str = ""  # why this method (editing.decompose_method), for the manifest
    out: Path | None = None  # engine: where the run directory goes (the app's runs directory)

    @property
    def name(self) -> str:
        return f"decomposed {self.video.stem}"

    @property
    def unit(self) -> str:
        return "frame" if self.method == "engine" else "step"

    def run(self, pipe: LayerT2VPipeline, callback: StepCallback) -> LayeredVideo | Path:
        if self.method == "engine":
            return self.run_engine(callback)
        from ..editing import decompose

        video = decompose(pipe, self.video, self.background, self.foregrounds, prompt=self.prompt,
                          num_frames=self.frames, height=self.height, width=self.width,
                          num_inference_steps=self.steps, guidance_scale=self.guidance, seed=self.seed,
                          callback_on_step_end=callback)
        video.metadata["method"], video.metadata["method_reason"] = self.method, self.why
        self.uploaded(video.metadata)
        return video

    def run_engine(self, callback: StepCallback) -> Path:
        """The engine's layers written into a new run directory (the upload streamed, never whole in memory)."""
        from ..data.engine.config import parse_config
        from ..data.engine.decompose import decompose_video
        from .library import new_run_directory

        prompts = {key: value for key, value in (("full", self.prompt), ("background", self.background),
                                                 ("foregrounds", self.foregrounds)) if value}
        out = new_run_directory(self.out, self.name)
        metadata = {"method_reason": self.why, "given": {"full": {"from": self.uploaded_as, "layer": "full"}}}
        decompose_video(self.video, out, parse_config({}), prompts=prompts, object_names=self.foregrounds,
                        metadata=metadata, progress=False,
                        on_frames=lambda done, _total: callback(None, done - 1, None, {}))
        return out

    @property
    def uploaded_as(self) -> str:
        """Where the manifest says "full" came from: the upload, not its temporary copy (gone after this run)."""
        return f"uploaded to layert2v ui: {self.video.name}"

    def uploaded(self, metadata: dict[str, Any]) -> None:
        for given in metadata.get("given", {}).values():
            if given.get("from") == str(self.video):
                given["from"] = self.uploaded_as

    def discard(self) -> None:
        shutil.rmtree(self.video.parent, ignore_errors=True)


@dataclass
class RegenerateRequest:
    """Generate foreground ``layer`` of a saved result again with a new prompt, every other layer kept
    (``layert2v.editing.regenerate``). ``source`` is the result as loaded from its directory (so that saving
    copies the kept layers' files); ``source_id`` is its library id."""

    source_id: str
    source: LayeredVideo
    layer: str
    prompt: str
    seed: int
    steps: int
    guidance: float
    trajectories: Trajectories | None = None  # boxes for ``layer`` only

    @property
    def name(self) -> str:
        return f"{self.layer} {self.prompt}"

    def run(self, pipe: LayerT2VPipeline, callback: StepCallback) -> LayeredVideo:
        from ..editing import regenerate

        return regenerate(pipe, self.source, self.layer, self.prompt, trajectories=self.trajectories,
                          seed=self.seed, num_inference_steps=self.steps, guidance_scale=self.guidance,
                          callback_on_step_end=callback)

    def discard(self) -> None:
        """Release what the request holds outside memory (nothing here)."""


JobRequest = GenerationRequest | DecomposeRequest | RegenerateRequest


@dataclass
class Job:
    id: str
    request: JobRequest
    state: str = "queued"  # queued -> loading -> denoising -> saving -> done | error
    step: int = 0
    error: str | None = None
    run: str | None = None  # library id of the saved result
    submitted: float = field(default_factory=time.time)


class GenerationQueue:
    """Runs generation requests one after the other in a worker thread."""

    def __init__(self, load: Callable[[], LayerT2VPipeline],
                 finish: Callable[[JobRequest, LayeredVideo | Path], str]):
        self._load, self._finish = load, finish
        self._pipe: LayerT2VPipeline | None = None
        self.load_error: str | None = None
        self._jobs: dict[str, Job] = {}
        self._waiting: list[str] = []  # ids in submission order, the running one first
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.loaded = threading.Event()
        self._thread = threading.Thread(target=self._work, name="layert2v-ui-generation", daemon=True)

    def start(self) -> None:
        """Start the worker: it loads the pipeline, then takes requests in order."""
        self._thread.start()

    def submit(self, request: JobRequest) -> Job:
        with self._lock:
            job = Job(f"job{next(self._ids)}", request)
            self._jobs[job.id] = job
            self._waiting.append(job.id)
        self._queue.put(job.id)
        return job

    def status(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise KeyError(job_id)
            ahead = self._waiting.index(job_id) if job_id in self._waiting else 0
            return {"id": job.id, "state": job.state, "ahead": ahead if job.state == "queued" else 0,
                    "step": job.step, "steps": job.request.steps, "unit": getattr(job.request, "unit", "step"),
                    "error": job.error, "run": job.run}

    def stop(self) -> None:
        """Let the running request finish and drop the queued ones (their uploads' temporary copies with them)."""
        with self._lock:
            queued = [self._jobs[i] for i in self._waiting if self._jobs[i].state == "queued"]
            for job in queued:
                job.state, job.error = "error", "the app stopped before this request ran"
                self._waiting.remove(job.id)
        for job in queued:
            job.request.discard()
        self._queue.put(None)

    def pipeline(self) -> LayerT2VPipeline:
        """The loaded pipeline (waits for the start-up load); raises with the load's error when it failed."""
        self.loaded.wait()
        if self._pipe is None:
            raise RuntimeError(self.load_error or "the model did not load")
        return self._pipe

    def _set(self, job: Job, **changes: Any) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(job, key, value)
            if job.state in ("done", "error") and job.id in self._waiting:
                self._waiting.remove(job.id)

    def _step_counter(self, job: Job) -> StepCallback:
        def on_step_end(_pipe: Any, i: int, _t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            self._set(job, step=i + 1)
            return tensors

        return on_step_end

    def _work(self) -> None:
        try:
            self._pipe = self._load()
            self._pipe.set_progress_bar_config(disable=True)  # progress is the job's step, shown by the page
        except Exception as e:  # reported to every job, the server keeps serving opened directories
            self.load_error = f"the model did not load: {e}"
        finally:
            self.loaded.set()
        while (job_id := self._queue.get()) is not None:
            with self._lock:
                job = self._jobs[job_id]
                if job.state != "queued":  # dropped by stop()
                    continue
                job.state = "loading"
            try:
                pipe = self.pipeline()
                self._set(job, state="denoising")
                video = job.request.run(pipe, self._step_counter(job))
                self._set(job, state="saving")
                self._set(job, state="done", run=self._finish(job.request, video))
            except Exception as e:  # one bad request must not stop the worker
                traceback.print_exc()
                self._set(job, state="error", error=str(e) or type(e).__name__)
            finally:
                job.request.discard()


def output_root(path: str | Path) -> Path:
    """The directory generated runs go into: created when missing, refused when it is a file or read-only."""
    root = Path(path).expanduser().absolute()
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root} exists and is not a directory; pass --out with a directory for the runs")
    root.mkdir(parents=True, exist_ok=True)
    probe = root / f".write-test-{time.time_ns()}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError:
        raise PermissionError(f"cannot write into {root}; pass --out with a writable directory") from None
    return root
