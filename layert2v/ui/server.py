"""The FastAPI app behind `layert2v ui`: a JSON API over the pipeline, the output directories and uploads, and
the static page in ``static/``. See docs/UI.md."""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from .jobs import DecomposeRequest, GenerationQueue, GenerationRequest, JobRequest, RegenerateRequest, output_root
from .library import Library, layer_frames, new_run_directory, parse_settings, recomposite, sprite_png
from .uploads import Uploads, decode_upload, fit_background

if TYPE_CHECKING:  # torch and diffusers load in the worker thread, after the page is up
    from ..pipeline import LayerT2VPipeline
    from ..trajectory import Trajectories

from ..video import LayeredVideo

STATIC = Path(__file__).parent / "static"
MAX_UPLOAD_BYTES = 64 * 1024 * 1024
MAX_STEPS = 500


def model_info(model: Path) -> dict[str, Any]:
    """What the page needs before any weights load: defaults, frame/size rules and the foreground limit."""
    from ..pipeline import PIPELINE_FILE, PipelineConfig, saved_video_multiples

    meta_file = model / PIPELINE_FILE
    if not meta_file.is_file():
        return {}
    config = PipelineConfig(**json.loads(meta_file.read_text())["config"])
    transformer = json.loads((model / "transformer" / "config.json").read_text())
    temporal, spatial = saved_video_multiples(model) or (4, 16)
    return {"max_foregrounds": transformer.get("max_foregrounds", 1), "frames": config.num_frames,
            "width": config.width, "height": config.height, "steps": config.num_inference_steps,
            "guidance": config.guidance_scale, "fps": config.fps, "temporal": temporal, "spatial": spatial,
            "model_id": config.model_id}


def pipeline_info(pipe: LayerT2VPipeline) -> dict[str, Any]:
    """:func:`model_info` of a loaded pipeline (a Wan2.1 directory has no layert2v.json to read it from)."""
    cfg = pipe.config
    temporal, spatial = pipe.video_multiples
    return {"max_foregrounds": pipe.max_foregrounds, "frames": cfg.num_frames, "width": cfg.width,
            "height": cfg.height, "steps": cfg.num_inference_steps, "guidance": cfg.guidance_scale, "fps": cfg.fps,
            "temporal": temporal, "spatial": spatial, "model_id": cfg.model_id}


def size_text(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 1024:.0f} KB"


def _error(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


def _ui_message(e: Exception) -> str:
    """The library's messages name CLI flags; in the page the fields have the same names without dashes."""
    return (str(e).replace("--frames", "frames").replace("--size", "size").replace("--steps", "steps")
            .replace("add a --fg", "add a foreground row").replace("--regenerate one of them", "choose one of them"))


def create_app(model: Path, out: Path, open_dirs: list[Path] = (), max_upload_bytes: int = MAX_UPLOAD_BYTES,
               derive: Callable | None = None, allowed_hosts: list[str] | None = None) -> FastAPI:
    """The app: generation into `out` with the model at `model`, plus the already saved `open_dirs`.

    `derive(prompt, bg, fgs) -> (bg, fgs)` fills in blank layer prompts (the CLI's rule by default).
    `allowed_hosts`: the Host headers answered (None: any), so that a web page elsewhere cannot reach a local app
    through a DNS name that points at 127.0.0.1.
    """
    if derive is None:
        from ..cli import derive_prompts as derive
    out = output_root(out)
    library = Library()
    uploads = Uploads()
    for directory in open_dirs:
        library.add(Path(directory), "opened")

    def load() -> LayerT2VPipeline:
        from ..pipeline import LayerT2VPipeline

        return LayerT2VPipeline.from_pretrained(model)

    def finish(request: JobRequest, video: LayeredVideo) -> str:
        video.metadata["model_path"] = str(model)
        # atomic: a temporary sibling, then a rename. A regenerated result's kept layers were read from the
        # source directory (LayeredVideo.load records where): save copies their files byte for byte.
        path = video.save(new_run_directory(out, request.name))
        return library.add(path, "generated", video).id

    jobs = GenerationQueue(load, finish)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        jobs.start()  # loads the model in the background: the page is up before the weights are
        yield
        jobs.stop()

    app = FastAPI(title="layert2v", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.library, app.state.jobs, app.state.out = library, jobs, out
    if allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)

    @app.exception_handler(StarletteHTTPException)
    async def _message(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    def info() -> dict[str, Any]:
        found = model_info(model)
        if not found:  # a Wan2.1 directory: ask the loaded pipeline
            try:
                found = pipeline_info(jobs.pipeline())
            except RuntimeError as e:
                raise _error(503, str(e)) from None
        return found

    @app.get("/")
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/api/model")
    def get_model() -> dict[str, Any]:
        return {**info(), "path": str(model), "out": str(out), "ready": jobs.loaded.is_set(),
                "load_error": jobs.load_error, "max_upload_bytes": max_upload_bytes}

    @app.get("/api/runs")
    def runs() -> list[dict[str, Any]]:
        return [{"id": e.id, "name": e.path.name, "origin": e.origin} for e in library.entries()]

    @app.post("/api/generate")
    async def generate(request: Request) -> dict[str, Any]:
        body = await _json(request)
        m = info()
        try:
            req = _generation_request(body, m, derive)
        except ValueError as e:
            raise _error(400, _ui_message(e)) from None
        return submit(req)

    def submit(req: JobRequest) -> dict[str, Any]:
        if jobs.load_error:
            req.discard()
            raise _error(503, jobs.load_error)
        return jobs.status(jobs.submit(req).id)

    @app.post("/api/trajectory")
    async def trajectory(request: Request) -> dict[str, Any]:
        """Check drawn key frames against a clip of `frames` frames and `foregrounds` prompts, and give back the
        box of every frame (the key frames interpolated as generation will): the page draws the path from it."""
        body = await _json(request)
        try:
            frames = _whole(body.get("frames"), "frames")
            traj = _trajectories(body.get("trajectories"), frames, _whole(body.get("foregrounds"), "foregrounds"))
        except ValueError as e:
            raise _error(400, _ui_message(e)) from None
        return {"boxes": {str(k): b.round(6).tolist() for k, b in traj.boxes(frames).items()}}

    @app.post("/api/decompose")
    async def decompose(request: Request) -> dict[str, Any]:
        form = await _form(request, max_upload_bytes, max_fields=12)
        part = form.get("file")
        if part is None or isinstance(part, str):
            raise _error(400, "no video in the request; choose the video to split into layers")
        data = await _read_upload(part, max_upload_bytes)
        fields = {key: value for key, value in form.items() if isinstance(value, str)}
        try:
            body = {**fields, "foregrounds": json.loads(fields.get("foregrounds") or "[]")}
        except ValueError:
            raise _error(400, "foregrounds must be a JSON list of prompts") from None
        try:
            req = _decompose_request(body, info(), part.filename or "upload.mp4")
        except ValueError as e:
            raise _error(400, _ui_message(e)) from None
        folder = Path(tempfile.mkdtemp(prefix="layert2v-ui-decompose-"))  # the worker removes it after the run
        req.video = folder / req.video.name
        try:
            req.video.write_bytes(data)
            await run_in_threadpool(_check_video, req.video)
        except BaseException as e:
            req.discard()
            if isinstance(e, ValueError):  # the temporary copy's path means nothing to the page
                raise _error(400, str(e).replace(str(req.video), req.video.name)) from None
            raise
        return submit(req)

    @app.post("/api/runs/{run_id}/regenerate")
    async def regenerate(run_id: str, request: Request) -> dict[str, Any]:
        body = await _json(request)
        path = entry(run_id).path
        try:  # read from its directory, so that saving the result copies the kept layers' files
            source = await run_in_threadpool(LayeredVideo.load, path)
        except (ValueError, FileNotFoundError, NotADirectoryError) as e:
            raise _error(400, str(e)) from None
        try:
            req = _regenerate_request(run_id, source, body, info())
        except ValueError as e:
            raise _error(400, _ui_message(e)) from None
        return submit(req)

    @app.get("/api/jobs/{job_id}")
    def job(job_id: str) -> dict[str, Any]:
        try:
            return jobs.status(job_id)
        except KeyError:
            raise _error(404, f"no generation {job_id}") from None

    @app.post("/api/open")
    async def open_directory(request: Request) -> dict[str, Any]:
        body = await _json(request)
        path = str(body.get("path", "")).strip()
        if not path:
            raise _error(400, "give the path of an output directory (one written by `layert2v generate`)")
        try:
            return (await run_in_threadpool(library.add, Path(path), "opened")).summary()
        except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
            raise _error(400, str(e)) from None

    def entry(run_id: str):
        try:
            return library.get(run_id)
        except KeyError:
            raise _error(404, f"no output directory {run_id}") from None

    @app.get("/api/runs/{run_id}")
    def run(run_id: str) -> dict[str, Any]:
        return entry(run_id).summary()

    @app.get("/api/runs/{run_id}/files/{name}")
    def file(run_id: str, name: str) -> FileResponse:
        path = entry(run_id).file(name)
        if path is None:
            raise _error(404, f"{name} is not a file of this output directory")
        return FileResponse(path, filename=name, content_disposition_type="inline")

    @app.get("/api/runs/{run_id}/zip")
    def zip_all(run_id: str) -> FileResponse:
        e = entry(run_id)
        fd, tmp = tempfile.mkstemp(prefix="layert2v-ui-", suffix=".zip")  # outside the run: it stays as it was
        os.close(fd)
        try:
            library.write_zip(run_id, Path(tmp))
        except BaseException:
            os.unlink(tmp)
            raise
        return FileResponse(tmp, media_type="application/zip", filename=f"{e.path.name}.zip",
                            background=BackgroundTask(os.unlink, tmp))

    @app.get("/api/runs/{run_id}/sprite/{layer}.png")
    def sprite(run_id: str, layer: str) -> Response:
        entry(run_id)
        try:
            frames = layer_frames(library.video(run_id), layer)
        except KeyError:
            raise _error(404, f"no layer {layer}") from None
        return Response(sprite_png(frames), media_type="image/png", headers={"Cache-Control": "no-store"})

    def composite_of(run_id: str, body: dict[str, Any]):
        entry(run_id)
        video = library.video(run_id)
        try:
            settings = parse_settings(body.get("layers"), video.num_foregrounds, video.size)
        except ValueError as e:
            raise _error(400, str(e)) from None
        background = None
        if body.get("background"):
            try:
                frames = uploads.get(str(body["background"]))
            except KeyError:
                raise _error(400, "that background upload is gone (the server keeps the last few); upload it "
                                  "again") from None
            background = fit_background(frames, video.num_frames, video.size[1], video.size[0])
        return video, recomposite(video, settings, background)

    @app.post("/api/runs/{run_id}/composite.png")
    async def composite(run_id: str, request: Request) -> Response:
        _video, frames = await run_in_threadpool(composite_of, run_id, await _json(request))
        png = await run_in_threadpool(sprite_png, frames)
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.post("/api/runs/{run_id}/composite.mp4")
    async def export(run_id: str, request: Request) -> Response:
        video, frames = await run_in_threadpool(composite_of, run_id, await _json(request))

        def encode() -> bytes:
            from ..io.codec import write_video

            with tempfile.TemporaryDirectory(prefix="layert2v-ui-") as tmp:  # nothing is written into the run
                return write_video(Path(tmp) / "composite.mp4", frames, video.fps, "libx264").read_bytes()

        data = await run_in_threadpool(encode)
        return Response(data, media_type="video/mp4",
                        headers={"Content-Disposition": 'attachment; filename="composite.mp4"'})

    @app.post("/api/uploads")
    async def upload(request: Request) -> dict[str, Any]:
        form = await _form(request, max_upload_bytes, max_fields=4)
        part = form.get("file")
        if part is None or isinstance(part, str):
            raise _error(400, "no file in the upload; choose an image or a video")
        data = await _read_upload(part, max_upload_bytes)
        try:
            frames = await run_in_threadpool(decode_upload, data, part.filename or "the upload")
        except ValueError as e:
            raise _error(400, str(e)) from None
        n, h, w = frames.shape[:3]
        return {"id": uploads.add(part.filename or "upload", frames), "name": part.filename, "frames": n,
                "width": w, "height": h}

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


async def _form(request: Request, max_upload_bytes: int, max_fields: int):
    """The multipart form of an upload; refused early when its declared size is over the limit."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_upload_bytes + 64 * 1024:
        raise _error(413, f"the upload is {size_text(int(declared))}; the upload limit is "
                          f"{size_text(max_upload_bytes)}")
    try:
        return await request.form(max_files=1, max_fields=max_fields)
    except Exception as e:  # a broken multipart body
        raise _error(400, f"could not read the upload: {e}") from None


async def _read_upload(part, max_upload_bytes: int) -> bytes:
    data = await part.read(max_upload_bytes + 1)
    if len(data) > max_upload_bytes:
        raise _error(413, f"{part.filename} is over the upload limit of {size_text(max_upload_bytes)}")
    return data


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise _error(400, "the request body must be JSON") from None
    if not isinstance(body, dict):
        raise _error(400, "the request body must be a JSON object")
    return body


def _whole(raw: Any, key: str) -> int:
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be a whole number, got {raw!r}") from None
    if float(raw) != value:
        raise ValueError(f"{key} must be a whole number, got {raw!r}")
    return value


def _number(body: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    raw = body.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be a number, got {raw!r}") from None
    if kind is int and float(raw) != value:
        raise ValueError(f"{key} must be a whole number, got {raw!r}")
    return value


def _sampling(body: dict[str, Any], model: dict[str, Any]) -> tuple[int, int, float]:
    """seed, steps and guidance of a request (the model's defaults where blank), checked."""
    seed = _number(body, "seed", int, 0)
    steps = _number(body, "steps", int, model["steps"])
    guidance = _number(body, "guidance", float, model["guidance"])
    if not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be between 1 and {MAX_STEPS}, got {steps}")
    if guidance < 0:
        raise ValueError(f"guidance must be 0 or more, got {guidance}")
    return seed, steps, guidance


def _shape(body: dict[str, Any], model: dict[str, Any]) -> tuple[int, int, int]:
    """frames, width and height of a request (the model's defaults where blank), checked against the model."""
    from ..pipeline import check_video_shape

    frames = _number(body, "frames", int, model["frames"])
    width = _number(body, "width", int, model["width"])
    height = _number(body, "height", int, model["height"])
    check_video_shape(frames, height, width, model["temporal"], model["spatial"])
    return frames, width, height


def _foreground_prompts(body: dict[str, Any], model: dict[str, Any]) -> list[str]:
    raw = body.get("foregrounds") or []
    if not isinstance(raw, list):
        raise ValueError("foregrounds must be a list of prompts, bottom layer first")
    foregrounds = [str(f).strip() for f in raw]
    if foregrounds and all(not f for f in foregrounds):
        return []  # all blank: derived from the full prompt, like a CLI call without --fg
    for k, f in enumerate(foregrounds, 1):
        if not f:
            raise ValueError(f"foreground {k} is empty; describe it or remove its row")
    limit = model["max_foregrounds"]
    if len(foregrounds) > limit:
        raise ValueError(f"this model takes at most {limit} foreground layer(s), got {len(foregrounds)}; "
                         "remove a row")
    return foregrounds


def _trajectories(doc: Any, frames: int, num_foregrounds: int) -> Trajectories:
    """The page's key frames, in the trajectory file's format (docs/TRAJECTORIES.md), checked against the clip."""
    from ..trajectory import Trajectories

    traj = Trajectories.from_dict(doc, "trajectory")
    try:
        traj.check(frames, num_foregrounds)
    except ValueError as e:
        raise ValueError(f"trajectory: {e}") from None
    return traj


def _generation_request(body: dict[str, Any], model: dict[str, Any], derive) -> GenerationRequest:
    """Check a request from the page, in the CLI's words, before it enters the queue."""
    prompt = str(body.get("prompt") or "").strip()
    if not prompt:
        raise ValueError("the full prompt is empty; describe the video to generate")
    background = str(body.get("background") or "").strip()
    foregrounds = _foreground_prompts(body, model)
    limit = model["max_foregrounds"]
    if not background or not foregrounds:
        background, foregrounds = derive(prompt, background or None, foregrounds or None)
    if len(foregrounds) > limit:
        raise ValueError(f"the full prompt names {len(foregrounds)} objects but this model takes at most {limit}; "
                         "fill in the foreground rows")
    seed, steps, guidance = _sampling(body, model)
    frames, width, height = _shape(body, model)
    trajectories = None
    if body.get("trajectories") is not None:
        trajectories = _trajectories(body["trajectories"], frames, len(foregrounds))
    return GenerationRequest(prompt, background, foregrounds, seed, steps, guidance, frames, width, height,
                             trajectories)


def _decompose_request(body: dict[str, Any], model: dict[str, Any], filename: str) -> DecomposeRequest:
    """Check the prompts and numbers of a decomposition (the upload itself is checked by the caller). The video is
    fitted to the model's size and frames (fewer for a shorter clip) unless the request gives frames or a size."""
    background = str(body.get("background") or "").strip()
    if not background:
        raise ValueError("the background prompt is empty; describe what is behind the objects")
    foregrounds = _foreground_prompts(body, model)
    if not foregrounds:
        raise ValueError("no foreground prompts; describe each object to split off, bottom layer first")
    prompt = str(body.get("prompt") or "").strip() or None
    seed, steps, guidance = _sampling(body, model)
    frames = width = height = None  # the model's, or fewer frames for a shorter clip (pipe.decompose decides)
    if any(body.get(key) not in (None, "") for key in ("frames", "width", "height")):
        frames, width, height = _shape(body, model)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(filename).name).strip("._") or "upload.mp4"
    return DecomposeRequest(Path(stem), prompt, background, foregrounds, seed, steps, guidance, frames, width,
                            height)


def _check_video(path: Path) -> None:
    """A file `pipe.decompose` can take: a video (layert2v.data.fit.probe) of more than one frame."""
    from ..data.fit import probe

    if probe(path)[0] < 2:
        raise ValueError(f"{path.name} is a still image; decompose takes a video (MP4, WebM or MOV)")


def _regenerate_request(run_id: str, source: LayeredVideo, body: dict[str, Any],
                        model: dict[str, Any]) -> RegenerateRequest:
    """Check which foreground of `source` to generate again (layert2v.editing's rule) and its new prompt."""
    from ..editing import regeneration_plan

    layer = str(body.get("layer") or "")
    k, _kept = regeneration_plan(source.num_foregrounds, layer)
    prompt = str(body.get("prompt") or "").strip()
    if not prompt:
        raise ValueError(f"the new prompt for {layer} is empty; describe what it should show")
    seed, steps, guidance = _sampling(body, model)
    trajectories = None
    if body.get("trajectories") is not None:
        trajectories = _trajectories(body["trajectories"], source.num_frames, source.num_foregrounds)
        others = [f for f in trajectories.foregrounds if f != k]
        if others:
            raise ValueError(f"trajectory: boxes for foreground(s) {others}, which are kept; only foreground {k}, "
                             "the one regenerated, can be steered")
    return RegenerateRequest(run_id, source, layer, prompt, seed, steps, guidance, trajectories)
