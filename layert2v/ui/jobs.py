"""One generation at a time: a queue of requests and the single worker thread that runs them.

The worker owns the pipeline (loaded once, at start-up, in the background) and reports each denoising step
through the pipeline's ``callback``.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..pipeline import LayerT2VPipeline
    from ..video import LayeredVideo


@dataclass
class GenerationRequest:
    prompt: str
    background: str
    foregrounds: list[str]
    seed: int
    steps: int
    guidance: float
    frames: int
    width: int
    height: int


@dataclass
class Job:
    id: str
    request: GenerationRequest
    state: str = "queued"  # queued -> loading -> denoising -> saving -> done | error
    step: int = 0
    error: str | None = None
    run: str | None = None  # library id of the saved result
    submitted: float = field(default_factory=time.time)


class GenerationQueue:
    """Runs generation requests one after the other in a worker thread."""

    def __init__(self, load: Callable[[], LayerT2VPipeline],
                 finish: Callable[[GenerationRequest, LayeredVideo], str]):
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

    def submit(self, request: GenerationRequest) -> Job:
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
                    "step": job.step, "steps": job.request.steps, "error": job.error, "run": job.run}

    def stop(self) -> None:
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

    def _work(self) -> None:
        try:
            self._pipe = self._load()
        except Exception as e:  # reported to every job, the server keeps serving opened directories
            self.load_error = f"the model did not load: {e}"
        finally:
            self.loaded.set()
        while (job_id := self._queue.get()) is not None:
            with self._lock:
                job = self._jobs[job_id]
            self._set(job, state="loading")
            try:
                pipe = self.pipeline()
                r = job.request
                self._set(job, state="denoising")
                video = pipe(r.prompt, r.background, r.foregrounds, num_frames=r.frames, height=r.height,
                             width=r.width, num_inference_steps=r.steps, guidance_scale=r.guidance, seed=r.seed,
                             progress=False, callback=lambda i, _latents, job=job: self._set(job, step=i + 1))
                self._set(job, state="saving")
                self._set(job, state="done", run=self._finish(r, video))
            except Exception as e:  # one bad request must not stop the worker
                traceback.print_exc()
                self._set(job, state="error", error=str(e) or type(e).__name__)


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
