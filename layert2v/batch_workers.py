"""The workers of ``generate --prompts`` (:mod:`layert2v.batch`): each loads the model once and makes clips until
none are left, in this process or as Ray actors.

Why Ray and not ``accelerate launch``: Ray is already the data engine's engine and joins a cluster with
``--address``; its actors keep a model loaded and take the next line when they finish one, so a slow clip never holds
up a fixed share of the others; a worker that dies costs its one line; and the driver, which alone writes the index,
sees every result as it comes. accelerate's launcher starts one process per GPU with a fixed share of the work each,
made for training in lockstep.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

CPU_THREADS = 1  # threads per CPU worker: fixed, so files do not depend on how many workers there are
SETTINGS_KEY = "batch_settings"  # the manifest field that records a clip's settings, compared by a rerun
RAY_WAIT_AFTER_KILL_S = 60  # how long a stopped run waits for killed workers to be gone before cleaning up


@dataclass(frozen=True)
class Clip:
    """One checked line: everything a worker needs to make it, with nothing left to read from disk."""

    line: int
    directory: str  # under DIR
    # what decides the output, as it reads back from a manifest (stored there, compared by a rerun): prompt,
    # background, foregrounds, seed, frames and size (None: the model's), steps, trajectory (the file's content)
    settings: dict


class Worker:
    """The model on one device and the clips it makes; a Ray actor or a plain object in this process."""

    def __init__(self, args: argparse.Namespace, model: Path, load: Callable, sampling: Callable):
        import torch

        if args.device == "cpu":
            torch.set_num_threads(CPU_THREADS)
        self.args, self.model, self.sampling = args, model, sampling
        self.pipe, self.dtype = load(args, model)

    def ready(self) -> bool:
        return True

    def make(self, clip: Clip, out: str) -> dict:
        """Generate and save one clip; any error is returned as the line's failure, not raised."""
        from .trajectory import Trajectories

        start = time.perf_counter()
        try:
            s = clip.settings
            width, height = s["size"] or (None, None)
            trajectories = Trajectories.from_dict(s["trajectory"]) if s["trajectory"] else None
            kwargs = self.sampling(argparse.Namespace(**{**vars(self.args), "seed": s["seed"], "steps": s["steps"]}))
            self.pipe.clear_prompt_cache()  # a clip's embeddings never depend on the clips before it
            video = self.pipe(s["prompt"], s["background"], list(s["foregrounds"]), num_frames=s["frames"],
                              height=height, width=width, trajectories=trajectories, progress=False, **kwargs)
            del video.metadata["timings"]  # the directory stays the same each run (the index has the seconds)
            video.metadata.update({"model_path": str(self.model), "dtype": self.dtype, SETTINGS_KEY: clip.settings})
            video.save(Path(out) / clip.directory, overwrite=True)  # replaces only a saved clip of other settings
        except Exception as e:  # this line fails; the others go on
            return {"line": clip.line, "failed": f"{type(e).__name__}: {' '.join(str(e).split())}"}
        return {"line": clip.line, "seconds": round(time.perf_counter() - start, 3)}


def in_process(clips: list[Clip], args: argparse.Namespace, model: Path, out: Path, load: Callable,
               sampling: Callable) -> Iterator[dict]:
    """One worker in this process (torch's thread count is put back afterwards)."""
    import torch

    threads = torch.get_num_threads()
    try:
        worker = Worker(args, model, load, sampling)
        for clip in clips:
            yield worker.make(clip, str(out))
    finally:
        torch.set_num_threads(threads)


def require_ray() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ValueError("more than one worker, or --address, runs on Ray, which is not installed: pip install "
                         "'layert2v[engine]', or use one worker") from None


def start_ray(address: str | None, workers: int, gpus: bool) -> bool:
    """Join the cluster at `address`, or start a local Ray with room for the workers, unless Ray is up already in
    this process; True when this call started or joined it. Refuses a cluster without room for the workers."""
    import ray

    started = not ray.is_initialized()
    if started:
        options = {"log_to_driver": False, "logging_level": logging.WARNING}
        try:
            if address:
                ray.init(address=address, **options)
            else:  # the object store only carries clip settings and results
                ray.init(num_cpus=workers * CPU_THREADS, object_store_memory=128 * 2**20, include_dashboard=False,
                         **options)
        except Exception as e:  # Ray raises bare Exceptions (e.g. a node that timed out starting)
            where = f"the Ray cluster at {address}" if address else "a local Ray"
            raise ValueError(f"could not start {where} ({str(e).splitlines()[0]}); check the address, or rerun") \
                from e
    have = ray.cluster_resources().get("GPU" if gpus else "CPU", 0)
    need = workers if gpus else workers * CPU_THREADS
    if have < need:
        if started:
            ray.shutdown()
        kind = "GPU(s)" if gpus else "CPU(s)"
        raise ValueError(f"--workers {workers} needs {need} {kind}; the Ray cluster has {have:g}: pass --workers "
                         f"{int(have) // (1 if gpus else CPU_THREADS) or 1} or add machines")
    return started


def on_ray(clips: list[Clip], args: argparse.Namespace, model: Path, out: Path, workers: int, load: Callable,
           sampling: Callable) -> Iterator[dict]:
    """Ray actors, one model each (and one GPU each with --device cuda), each given the next line when it finishes
    one. Stopped early (Ctrl-C), the actors are killed and the run waits until they are gone."""
    import ray

    gpus = args.device.startswith("cuda")
    started = start_ray(args.address, workers, gpus)
    remote = ray.remote(num_cpus=1 if gpus else CPU_THREADS, num_gpus=1 if gpus else 0)(Worker)
    actors = [remote.remote(args, model, load, sampling) for _ in range(min(workers, len(clips)))]
    pending: dict = {}  # object ref -> (actor, clip)
    try:
        try:
            ray.get([a.ready.remote() for a in actors])
        except ray.exceptions.RayActorError as e:
            raise ValueError(f"a worker could not load the model: {_cause(e)}") from None
        queue, idle = deque(clips), list(actors)
        while queue or pending:
            while idle and queue:
                actor, clip = idle.pop(), queue.popleft()
                pending[actor.make.remote(clip, str(out))] = actor, clip
            [ref], _ = ray.wait(list(pending), num_returns=1)
            actor, clip = pending.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayActorError as e:  # the worker process died (e.g. out of memory): a fresh one
                result = {"line": clip.line, "failed": f"the worker died: {_cause(e)}"}
                actors.remove(actor)
                actor = remote.remote(args, model, load, sampling)
                actors.append(actor)
            idle.append(actor)
            yield result
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)
        if pending:  # their clips are left as hidden temporary directories, removed by the caller once all are gone
            ray.wait(list(pending), num_returns=len(pending), timeout=RAY_WAIT_AFTER_KILL_S)
        if started:  # a local Ray we started stops; a cluster joined with --address runs on
            ray.shutdown()


def _cause(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(error).__name__
