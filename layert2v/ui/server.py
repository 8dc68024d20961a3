"""The FastAPI app behind `layert2v ui`: a JSON API over the pipeline, the output directories and uploads, and
the static page in ``static/``. See docs/UI.md.

:class:`App` holds what the app knows (the model, the runs directory, the library of output directories, the
uploads, the generation queue) and has one method per route; :data:`ROUTES` lists them in the order a page uses
them. Request bodies are the pydantic models of :mod:`~layert2v.ui.requests`; every refusal is a JSON
``{"error": one line}``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from ..video import LayeredVideo
from .jobs import GenerationQueue, JobRequest, output_root
from .library import Entry, Library, layer_frames, new_run_directory, parse_settings, recomposite, sprite_png
from .requests import (
    CompositeBody,
    DecomposeBody,
    GenerateBody,
    OpenBody,
    RegenerateBody,
    TrajectoryBody,
    one_line,
    ui_message,
)
from .uploads import Uploads, decode_upload, fit_background

if TYPE_CHECKING:  # torch and diffusers load in the worker thread, after the page is up
    from ..pipeline import LayerT2VPipeline

STATIC = Path(__file__).parent / "static"
MAX_UPLOAD_BYTES = 64 * 1024 * 1024


def model_info(model: Path) -> dict[str, Any]:
    """What the page needs before any weights load: defaults, frame/size rules and the foreground limit."""
    from ..formats import read_json_object
    from ..pipeline import PIPELINE_FILE, PipelineConfig, saved_video_multiples
    from ..preflight import model_configs

    meta_file = model / PIPELINE_FILE
    if not meta_file.is_file():
        return {}
    config = PipelineConfig(**read_json_object(meta_file)["config"])
    vae, transformer = model_configs(model)
    temporal, spatial = saved_video_multiples(model) or (4, 16)
    return {"max_foregrounds": transformer.get("max_foregrounds", 1), "frames": config.num_frames,
            "width": config.width, "height": config.height, "steps": config.num_inference_steps,
            "guidance": config.guidance_scale, "fps": config.fps, "temporal": temporal, "spatial": spatial,
            "model_id": config.model_id, "configs": (vae, transformer)}


def pipeline_info(pipe: LayerT2VPipeline) -> dict[str, Any]:
    """:func:`model_info` of a loaded pipeline (a Wan2.1 directory has no layert2v.json to read it from)."""
    cfg = pipe.config
    temporal, spatial = pipe.video_multiples
    return {"max_foregrounds": pipe.max_foregrounds, "frames": cfg.num_frames, "width": cfg.width,
            "height": cfg.height, "steps": cfg.num_inference_steps, "guidance": cfg.guidance_scale, "fps": cfg.fps,
            "temporal": temporal, "spatial": spatial, "model_id": cfg.model_id,
            "configs": (dict(pipe.vae.config), dict(pipe.transformer.config))}


def size_text(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 1024:.0f} KB"


def refused(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


class App:
    """The app's state and its routes: generation into ``out`` with the model at ``model``, plus the already saved
    ``open_dirs``."""

    def __init__(self, model: Path, out: Path, open_dirs: list[Path], max_upload_bytes: int,
                 layer_weights: Path | None = None, untrained_layers: bool = False):
        self.model, self.out, self.max_upload_bytes = model, output_root(out), max_upload_bytes
        self.layer_weights, self.untrained_layers = layer_weights, untrained_layers  # a Wan2.1 model's
        self.library, self.uploads = Library(), Uploads()
        for directory in open_dirs:
            self.library.add(Path(directory), "opened")
        self.jobs = GenerationQueue(self.load, self.finish)

    # ----------------------------------------------------------------------------- the worker's two ends
    def load(self) -> LayerT2VPipeline:
        from ..pipeline import LayerT2VPipeline

        return LayerT2VPipeline.from_pretrained(self.model, layer_weights=self.layer_weights,
                                                untrained_layers=self.untrained_layers)

    def finish(self, request: JobRequest, video: LayeredVideo | Path) -> str:
        if isinstance(video, Path):  # the engine streamed its layers into the run directory itself
            return self.library.add(video, "generated").id
        video.metadata["model_path"] = str(self.model)
        # atomic: a temporary sibling, then a rename. A regenerated result's kept layers were read from the
        # source directory (LayeredVideo.load records where): save copies their files byte for byte.
        path = video.save(new_run_directory(self.out, request.name))
        return self.library.add(path, "generated", video).id

    # ----------------------------------------------------------------------------------------- helpers
    def info(self) -> dict[str, Any]:
        found = model_info(self.model)
        if not found:  # a Wan2.1 directory: ask the loaded pipeline
            try:
                found = pipeline_info(self.jobs.pipeline())
            except RuntimeError as e:
                raise refused(503, str(e)) from None
        return found

    def entry(self, run_id: str) -> Entry:
        try:
            return self.library.get(run_id)
        except KeyError:
            raise refused(404, f"no output directory {run_id}") from None

    def submit(self, req: JobRequest) -> dict[str, Any]:
        if self.jobs.load_error:
            req.discard()
            raise refused(503, self.jobs.load_error)
        return self.jobs.status(self.jobs.submit(req).id)

    async def form(self, request: Request, max_fields: int, missing: str) -> tuple[UploadFile, dict[str, str]]:
        """The multipart form of an upload: its file and its text fields; refused early when its declared size is
        over the limit, and with ``missing`` when it has no file."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_upload_bytes + 64 * 1024:
            raise refused(413, f"the upload is {size_text(int(declared))}; the upload limit is "
                               f"{size_text(self.max_upload_bytes)}")
        try:
            form = await request.form(max_files=1, max_fields=max_fields)
        except Exception as e:  # a broken multipart body
            raise refused(400, f"could not read the upload: {e}") from None
        part = form.get("file")
        if part is None or isinstance(part, str):
            raise refused(400, missing)
        return part, {key: value for key, value in form.items() if isinstance(value, str)}

    async def read(self, part: UploadFile) -> bytes:
        data = await part.read(self.max_upload_bytes + 1)
        if len(data) > self.max_upload_bytes:
            raise refused(413, f"{part.filename} is over the upload limit of {size_text(self.max_upload_bytes)}")
        return data

    def composite_of(self, run_id: str, body: CompositeBody) -> tuple[LayeredVideo, Any]:
        self.entry(run_id)
        video = self.library.video(run_id)
        try:
            settings = parse_settings(body.layers, video.num_foregrounds, video.size)
        except ValueError as e:
            raise refused(400, str(e)) from None
        background = None
        if body.background:
            try:
                frames = self.uploads.get(body.background)
            except KeyError:
                raise refused(400, "that background upload is gone (the server keeps the last few); upload it "
                                   "again") from None
            background = fit_background(frames, video.num_frames, video.size[1], video.size[0])
        return video, recomposite(video, settings, background)

    # ------------------------------------------------------------------------------------------ routes
    def index(self) -> FileResponse:
        return FileResponse(STATIC / "index.html")

    def get_model(self) -> dict[str, Any]:
        from ..editing import decompose_method

        method, why = decompose_method(None, self.model)
        described = {k: v for k, v in self.info().items() if k != "configs"}  # the checks' business, not the page's
        return {**described, "path": str(self.model), "out": str(self.out), "ready": self.jobs.loaded.is_set(),
                "load_error": self.jobs.load_error, "max_upload_bytes": self.max_upload_bytes,
                "decompose_method": method, "decompose_why": why}

    def runs(self) -> list[dict[str, Any]]:
        return [{"id": e.id, "name": e.path.name, "origin": e.origin} for e in self.library.entries()]

    def run(self, run_id: str) -> dict[str, Any]:
        return self.entry(run_id).summary()

    def open_directory(self, body: OpenBody) -> dict[str, Any]:
        if not body.path:
            raise refused(400, "give the path of an output directory (one written by `layert2v generate`)")
        try:
            return self.library.add(Path(body.path), "opened").summary()
        except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
            raise refused(400, str(e)) from None

    def generate(self, body: GenerateBody) -> dict[str, Any]:
        try:
            req = body.job(self.info())
        except ValueError as e:
            raise refused(400, ui_message(e)) from None
        return self.submit(req)

    def trajectory(self, body: TrajectoryBody) -> dict[str, Any]:
        """Check drawn key frames against a clip of `frames` frames and `foregrounds` prompts, and give back the
        box of every frame (the key frames interpolated as generation will): the page draws the path from it."""
        try:
            traj = body.checked()
        except ValueError as e:
            raise refused(400, ui_message(e)) from None
        return {"boxes": {str(k): b.round(6).tolist() for k, b in traj.boxes(body.frames).items()}}

    async def decompose(self, request: Request) -> dict[str, Any]:
        part, fields = await self.form(request, 12, "no video in the request; choose the video to split into layers")
        data = await self.read(part)
        try:
            body = DecomposeBody.model_validate({**fields, "foregrounds": json.loads(fields.get("foregrounds") or
                                                                                    "[]")})
        except json.JSONDecodeError:
            raise refused(400, "foregrounds must be a JSON list of prompts") from None
        except ValidationError as e:
            raise refused(400, one_line(e)) from None
        from ..editing import decompose_method

        try:
            method, why = decompose_method(body.method, self.model)
            req = body.job(self.info(), part.filename or "upload.mp4", method, why)
        except ValueError as e:
            raise refused(400, ui_message(e)) from None
        folder = Path(tempfile.mkdtemp(prefix="layert2v-ui-decompose-"))  # the worker removes it after the run
        req.video, req.out = folder / req.video.name, self.out
        try:
            req.video.write_bytes(data)
            frames = await run_in_threadpool(_check_video, req.video)
            if req.method == "engine":  # the job counts frames
                req.steps = frames
        except BaseException as e:
            req.discard()
            if isinstance(e, ValueError):  # the temporary copy's path means nothing to the page
                raise refused(400, str(e).replace(str(req.video), req.video.name)) from None
            raise
        return self.submit(req)

    def regenerate(self, run_id: str, body: RegenerateBody) -> dict[str, Any]:
        path = self.entry(run_id).path
        try:  # read from its directory, so that saving the result copies the kept layers' files
            source = LayeredVideo.load(path)
        except (ValueError, FileNotFoundError, NotADirectoryError) as e:
            raise refused(400, str(e)) from None
        try:
            req = body.job(run_id, source, self.info())
        except ValueError as e:
            raise refused(400, ui_message(e)) from None
        return self.submit(req)

    def job(self, job_id: str) -> dict[str, Any]:
        try:
            return self.jobs.status(job_id)
        except KeyError:
            raise refused(404, f"no generation {job_id}") from None

    def file(self, run_id: str, name: str) -> FileResponse:
        path = self.entry(run_id).file(name)
        if path is None:
            raise refused(404, f"{name} is not a file of this output directory")
        return FileResponse(path, filename=name, content_disposition_type="inline")

    def zip_all(self, run_id: str) -> FileResponse:
        entry = self.entry(run_id)
        fd, tmp = tempfile.mkstemp(prefix="layert2v-ui-", suffix=".zip")  # outside the run: it stays as it was
        os.close(fd)
        try:
            self.library.write_zip(run_id, Path(tmp))
        except BaseException:
            os.unlink(tmp)
            raise
        return FileResponse(tmp, media_type="application/zip", filename=f"{entry.path.name}.zip",
                            background=BackgroundTask(os.unlink, tmp))

    def sprite(self, run_id: str, layer: str) -> Response:
        self.entry(run_id)
        try:
            frames = layer_frames(self.library.video(run_id), layer)
        except KeyError:
            raise refused(404, f"no layer {layer}") from None
        return Response(sprite_png(frames), media_type="image/png", headers={"Cache-Control": "no-store"})

    def composite_png(self, run_id: str, body: CompositeBody) -> Response:
        _video, frames = self.composite_of(run_id, body)
        return Response(sprite_png(frames), media_type="image/png", headers={"Cache-Control": "no-store"})

    def composite_mp4(self, run_id: str, body: CompositeBody) -> Response:
        from ..io.codec import write_video

        video, frames = self.composite_of(run_id, body)
        with tempfile.TemporaryDirectory(prefix="layert2v-ui-") as tmp:  # nothing is written into the run
            data = write_video(Path(tmp) / "composite.mp4", frames, video.fps, "libx264").read_bytes()
        return Response(data, media_type="video/mp4",
                        headers={"Content-Disposition": 'attachment; filename="composite.mp4"'})

    async def upload(self, request: Request) -> dict[str, Any]:
        part, _fields = await self.form(request, 4, "no file in the upload; choose an image or a video")
        data = await self.read(part)
        try:
            frames = await run_in_threadpool(decode_upload, data, part.filename or "the upload")
        except ValueError as e:
            raise refused(400, str(e)) from None
        n, h, w = frames.shape[:3]
        return {"id": self.uploads.add(part.filename or "upload", frames), "name": part.filename, "frames": n,
                "width": w, "height": h}


# (method, path, App method): plain `def` routes run in the server's thread pool, `async def` ones read uploads
ROUTES = (
    ("GET", "/", "index"),
    ("GET", "/api/model", "get_model"),
    ("GET", "/api/runs", "runs"),
    ("GET", "/api/runs/{run_id}", "run"),
    ("POST", "/api/open", "open_directory"),
    ("POST", "/api/generate", "generate"),
    ("POST", "/api/trajectory", "trajectory"),
    ("POST", "/api/decompose", "decompose"),
    ("POST", "/api/runs/{run_id}/regenerate", "regenerate"),
    ("GET", "/api/jobs/{job_id}", "job"),
    ("GET", "/api/runs/{run_id}/files/{name}", "file"),
    ("GET", "/api/runs/{run_id}/zip", "zip_all"),
    ("GET", "/api/runs/{run_id}/sprite/{layer}.png", "sprite"),
    ("POST", "/api/runs/{run_id}/composite.png", "composite_png"),
    ("POST", "/api/runs/{run_id}/composite.mp4", "composite_mp4"),
    ("POST", "/api/uploads", "upload"),
)


def create_app(model: Path, out: Path, open_dirs: list[Path] = (), max_upload_bytes: int = MAX_UPLOAD_BYTES,
               allowed_hosts: list[str] | None = None, layer_weights: Path | None = None,
               untrained_layers: bool = False) -> FastAPI:
    """The app over an :class:`App`. `allowed_hosts`: the Host headers answered (None: any), so that a web page
    elsewhere cannot reach a local app through a DNS name that points at 127.0.0.1. `layer_weights` and
    `untrained_layers`: a Wan2.1 model's, as for :meth:`LayerT2VPipeline.from_pretrained`."""
    state = App(model, out, list(open_dirs), max_upload_bytes, layer_weights, untrained_layers)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        state.jobs.start()  # loads the model in the background: the page is up before the weights are
        yield
        state.jobs.stop()

    app = FastAPI(title="layert2v", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.library, app.state.jobs, app.state.out = state.library, state.jobs, state.out
    if allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)
    app.add_exception_handler(StarletteHTTPException, _as_error)
    app.add_exception_handler(RequestValidationError, _as_error)
    for method, path, name in ROUTES:
        app.add_api_route(path, getattr(state, name), methods=[method])
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


async def _as_error(_request: Request, exc: Exception) -> JSONResponse:
    """Every refusal as {"error": one line}: a bad request body (pydantic's report) is a 400."""
    if isinstance(exc, RequestValidationError):
        return JSONResponse({"error": one_line(list(exc.errors()))}, status_code=400)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code)


def _check_video(path: Path) -> int:
    """A file decompose can take: a video (layert2v.data.fit.probe) of more than one frame; its frame count."""
    from ..data.fit import probe

    frames = probe(path)[0]
    if frames < 2:
        raise ValueError(f"{path.name} is a still image; decompose takes a video (MP4, WebM or MOV)")
    return frames
