"""`layert2v ui` driven in a real Chromium through Playwright: the running app (uvicorn in a thread, on a free
127.0.0.1 port), the built-in model, saved toy clips with exact layers.

Skipped only when Playwright or a chromium executable is missing (.ci/run installs Debian's chromium).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import toy_clip
from PIL import Image

from layert2v.cli import BUILTIN_MODEL
from layert2v.video import LayeredVideo

playwright_api = pytest.importorskip("playwright.sync_api",
                                    reason="playwright is not installed (pip install -e .[dev])")
CHROMIUM = os.environ.get("LAYERT2V_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium executable (apt-get install chromium, or set "
                                                         "LAYERT2V_CHROMIUM)")
UPLOAD_LIMIT = 256 * 1024
PROMPT = "a red circle moving right over a blue striped background"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    import uvicorn

    from layert2v.ui import bind
    from layert2v.ui.server import create_app

    root = tmp_path_factory.mktemp("ui")
    toys = {}
    for name, seed, k in [("toggle", 1, 2), ("background", 2, 1), ("opened", 3, 3), ("bad", 4, 1), ("edit", 5, 2)]:
        toys[name] = toy_clip(seed, k, frames=5, size=32).save(root / f"toy_{name}")
    application = create_app(BUILTIN_MODEL, root / "runs", max_upload_bytes=UPLOAD_LIMIT)
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(application, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 120
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "the app did not start"
    yield SimpleNamespace(url=f"http://127.0.0.1:{sock.getsockname()[1]}", root=root, toys=toys, app=application)
    server.should_exit = True
    thread.join(15)


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture()
def page(browser, app):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    pg.goto(app.url)
    pg.wait_for_selector("body[data-ready]", timeout=180_000)  # the first /api/model imports torch
    yield pg
    context.close()


def open_directory(page, path: Path) -> None:
    page.click("#tabs button[data-tab=open]")
    page.fill("#open-path", str(path))
    page.click("#open-btn")
    page.wait_for_selector("#layer-views[data-run]")
    page.wait_for_function("() => document.querySelector('#composite').dataset.state === 'ready'")


def show_frame(page, frame: int) -> None:
    """Pause the shared player on one frame (the Layers panel's slider drives every view)."""
    page.evaluate("""(f) => { const s = document.querySelector('#frame'); s.value = f;
                     s.dispatchEvent(new Event('input')); }""", frame)


def canvas_pixels(page, selector: str) -> np.ndarray:
    """(H, W, 4) floats in [0, 1] of what a canvas shows now."""
    data = page.evaluate("""(sel) => { const c = document.querySelector(sel);
        return [c.width, c.height, Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)]; }""",
                         selector)
    w, h, flat = data
    return np.asarray(flat, np.float32).reshape(h, w, 4) / 255.0


def wait_composite(page) -> None:
    page.wait_for_function("() => document.querySelector('#composite').dataset.state === 'ready'")


def message(page) -> str:
    page.wait_for_selector("#message:not([hidden])")
    return page.inner_text("#message")


def test_generate_shows_every_layer_and_the_manifest(page, app):
    page.click("#tabs button[data-tab=generate]")
    page.fill("#prompt", PROMPT)
    page.fill("#steps", "2")
    page.fill("#frames", "3")
    page.click("#generate")
    page.wait_for_selector("#layer-views[data-run]", timeout=180_000)

    layers = page.eval_on_selector_all("#layer-views canvas", "cs => cs.map(c => c.dataset.layer)")
    assert layers == ["full", "background", "foreground_1", "alpha_1"]  # "a red circle" -> one foreground
    assert page.eval_on_selector("#progress", "p => p.value") == 1.0  # fed by the denoising loop's callback
    assert page.eval_on_selector("#progress", "p => p.dataset.seen").split(",")[-1] == "2"
    assert PROMPT in page.inner_text("#manifest")
    assert '"steps": 2' in page.inner_text("#manifest")

    show_frame(page, 0)
    run_id = page.get_attribute("#layer-views", "data-run")
    run_dir = Path(page.request.get(f"{app.url}/api/runs/{run_id}").json()["path"])
    saved = LayeredVideo.load(run_dir)
    assert saved.num_frames == 3 and saved.prompts["full"] == PROMPT
    shown = app.app.state.library.video(run_id)  # the generated arrays (the files add H.264's loss to them)
    full = canvas_pixels(page, "canvas[data-layer=full]")[..., :3]
    assert np.abs(full - shown.full[0]).max() < 0.01 and np.abs(full - saved.full[0]).mean() < 0.03
    alpha = canvas_pixels(page, "canvas[data-layer=alpha_1]")[..., 0]
    assert np.abs(alpha - shown.alphas[0][0]).max() < 0.01 and np.abs(alpha - saved.alphas[0][0]).mean() < 0.03
    assert alpha.max() > 0.5 and alpha.min() < 0.1  # the model made a foreground
    names = page.eval_on_selector_all("#downloads a", "as => as.map(a => a.textContent)")
    assert set(names) == {*saved_files(run_dir), "manifest.json"}
    assert not [p for p in (app.root / "runs").iterdir() if p.name.startswith(".")]  # no temporary leftovers
    page.screenshot(path=str(app.root / "layers.png"), full_page=True)


def saved_files(directory: Path) -> set[str]:
    import json

    return set(json.loads((directory / "manifest.json").read_text())["files"].values())


def test_toggling_a_foreground_changes_exactly_its_pixels(page, app):
    open_directory(page, app.toys["toggle"])
    video = LayeredVideo.load(app.toys["toggle"])
    page.click("#tabs button[data-tab=recomposite]")
    show_frame(page, 0)
    before = canvas_pixels(page, "#composite")[..., :3]
    assert np.abs(before - video.composite()[0]).max() < 0.01

    page.uncheck(".recomp-row[data-k='1'] .visible")
    wait_composite(page)
    after = canvas_pixels(page, "#composite")[..., :3]
    a1, a2 = video.alphas[0][0], video.alphas[1][0]
    expected = video.foregrounds[1][0] * a2[..., None] + video.background[0] * (1 - a2[..., None])
    assert np.abs(after - expected).max() < 0.01
    only_1 = (a1 > 0.9) & (a2 < 0.01)
    assert only_1.sum() > 20 and np.abs(after - before)[only_1].max() > 0.2  # foreground 1 is gone
    assert np.abs(after - before)[a1 < 0.01].max() < 0.01  # nothing else moved

    page.check(".recomp-row[data-k='1'] .visible")
    wait_composite(page)
    assert np.abs(canvas_pixels(page, "#composite")[..., :3] - before).max() < 0.01

    page.fill(".recomp-row[data-k='2'] .dx", "3")  # and an offset moves foreground 2 three pixels right
    wait_composite(page)
    moved = canvas_pixels(page, "#composite")[..., :3]
    shifted = np.zeros_like(a2)
    shifted[:, 3:] = a2[:, :-3]
    rows, cols = np.nonzero((shifted > 0.99) & (a1 < 0.01))
    assert len(rows) > 10
    assert np.abs(moved[rows, cols] - video.foregrounds[1][0][rows, cols - 3]).max() < 0.01


def test_uploaded_image_replaces_the_background(page, app, tmp_path):
    open_directory(page, app.toys["background"])
    video = LayeredVideo.load(app.toys["background"])
    image = tmp_path / "green.png"
    Image.new("RGB", (90, 40), (0, 200, 0)).save(image)  # another size and aspect: scaled to cover and cropped
    page.click("#tabs button[data-tab=recomposite]")
    show_frame(page, 0)
    page.set_input_files("#bg-file", str(image))
    page.wait_for_function("() => document.querySelector('#bg-status').textContent.includes('fitted')")
    wait_composite(page)
    shown = canvas_pixels(page, "#composite")[..., :3]
    a = video.alphas[0][0][..., None]
    green = np.broadcast_to(np.array([0, 200 / 255, 0], np.float32), shown.shape)
    assert np.abs(shown - (video.foregrounds[0][0] * a + green * (1 - a))).max() < 0.01
    assert np.abs(shown - video.composite()[0]).max() > 0.3  # not the original background

    page.click("#bg-reset")
    wait_composite(page)
    assert np.abs(canvas_pixels(page, "#composite")[..., :3] - video.composite()[0]).max() < 0.01


def test_open_a_saved_directory(page, app):
    directory = app.toys["opened"]
    open_directory(page, directory)
    video = LayeredVideo.load(directory)
    layers = page.eval_on_selector_all("#layer-views canvas", "cs => cs.map(c => c.dataset.layer)")
    assert layers == ["full", "background", *(f"foreground_{k}" for k in (1, 2, 3)), *(f"alpha_{k}" for k in (1, 2, 3))]
    assert directory.name in page.inner_text("#run-name")
    assert "toy scene 3" in page.inner_text("#manifest")
    show_frame(page, 2)
    fg = canvas_pixels(page, "canvas[data-layer=foreground_2]")
    a = video.alphas[1][2]
    assert np.abs(fg[..., 3] - a).max() < 0.01  # the foreground is drawn with its own alpha (over a checkerboard)
    solid = a > 0.99
    assert np.abs(fg[..., :3][solid] - video.foregrounds[1][2][solid]).max() < 0.01
    names = page.eval_on_selector_all("#downloads a", "as => as.map(a => a.textContent)")
    assert set(names) == {*saved_files(directory), "manifest.json"}
    href = page.get_attribute("#downloads a >> text=foreground_2.mov", "href")
    body = page.request.get(app.url + href).body()
    assert body == (directory / "foreground_2.mov").read_bytes()
    with page.expect_download() as download:
        page.click("#zip")
    assert download.value.suggested_filename == f"{directory.name}.zip"


def test_bad_input_shows_a_message_and_the_server_keeps_going(page, app, tmp_path):
    page.click("#tabs button[data-tab=generate]")
    page.fill("#prompt", "   ")
    page.click("#generate")
    assert "prompt is empty" in message(page)

    for _ in range(5):
        if page.is_enabled("#add-fg"):
            page.click("#add-fg")
    assert page.locator("#fg-rows input").count() == 3  # the built-in model's maximum
    assert "at most 3" in page.inner_text("#fg-limit")
    refused = page.evaluate("""async () => { const r = await fetch('/api/generate', {method: 'POST',
        headers: {'Content-Type': 'application/json'}, body: JSON.stringify({prompt: 'p', background: 'b',
        foregrounds: ['a', 'b', 'c', 'd']})}); return [r.status, (await r.json()).error]; }""")
    assert refused[0] == 400 and "at most 3" in refused[1]

    page.click("#tabs button[data-tab=open]")
    page.fill("#open-path", str(tmp_path / "nowhere"))
    page.click("#open-btn")
    assert "no such directory" in message(page)

    open_directory(page, app.toys["bad"])
    page.click("#tabs button[data-tab=recomposite]")
    text = tmp_path / "notes.png"  # named like an image, but is not one
    text.write_text("not an image")
    page.set_input_files("#bg-file", str(text))
    assert "neither an image nor a video" in message(page)
    huge = tmp_path / "huge.png"
    huge.write_bytes(b"\0" * (UPLOAD_LIMIT + 1))
    page.set_input_files("#bg-file", str(huge))
    page.wait_for_function("() => document.querySelector('#message').textContent.includes('limit')")
    assert "original background" in page.inner_text("#bg-status")

    assert page.request.get(f"{app.url}/api/model").ok  # still serving
    runs = app.root / "runs"
    assert not [p for p in runs.iterdir() if p.name.startswith(".")] if runs.exists() else True


class _HeldPipeline:
    """The app's pipeline, held at the start of each call until ``gate`` opens: the first generation is still
    running whatever the machine's load when the second arrives, so the test does not race the worker."""

    def __init__(self, pipe, gate: threading.Event):
        self._pipe, self._gate = pipe, gate

    def __getattr__(self, name):
        return getattr(self._pipe, name)

    def __call__(self, *args, **kwargs):
        assert self._gate.wait(180), "the test never opened the gate"
        return self._pipe(*args, **kwargs)


def test_a_second_generation_waits_in_the_queue(browser, app):
    jobs = app.app.state.jobs
    assert jobs.loaded.wait(180), "the model did not load"
    gate = threading.Event()
    real, jobs._pipe = jobs._pipe, _HeldPipeline(jobs._pipe, gate)
    try:
        pages = []
        for _ in range(2):
            context = browser.new_context()
            pg = context.new_page()
            pg.set_default_timeout(120_000)
            pg.goto(app.url)
            pg.wait_for_selector("body[data-ready]", timeout=180_000)  # the first /api/model imports torch
            pg.click("#tabs button[data-tab=generate]")
            pg.fill("#prompt", PROMPT)
            pg.fill("#steps", "3" if not pages else "1")  # small: the point is the order, not the video
            pg.fill("#frames", "3")
            pg.fill("#guidance", "1")  # no CFG: one forward per step
            pg.fill("#width", "32")
            pg.fill("#height", "32")
            pages.append(pg)
        first, second = pages
        first.click("#generate")
        first.wait_for_function("() => document.querySelector('#job-status').dataset.state === 'denoising'")
        second.click("#generate")
        second.wait_for_function("() => document.querySelector('#job-status').dataset.state === 'queued'")
        assert "1 generation(s) ahead" in second.inner_text("#job-status")
        gate.set()
        first.wait_for_selector("#layer-views[data-run]")
        second.wait_for_selector("#layer-views[data-run]")
        assert first.get_attribute("#layer-views", "data-run") != second.get_attribute("#layer-views", "data-run")
    finally:
        gate.set()
        jobs._pipe = real
    for pg in pages:
        pg.context.close()


# ------------------------------------------------------------------ trajectories
def drag(page, selector: str, start: tuple[float, float], end: tuple[float, float]) -> None:
    """Press, move in steps and release the mouse from one point to another, given as fractions of the element's
    box (outside [0, 1] is outside the element)."""
    box = page.locator(selector).bounding_box()
    x0, y0 = box["x"] + start[0] * box["width"], box["y"] + start[1] * box["height"]
    x1, y1 = box["x"] + end[0] * box["width"], box["y"] + end[1] * box["height"]
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=5)
    page.mouse.up()


def set_trajectory_frame(page, frame: int) -> None:
    page.fill("#traj-frame", str(frame))
    page.dispatch_event("#traj-frame", "input")


def wait_trajectory(page, state: str) -> None:
    page.wait_for_function("(s) => document.querySelector('#traj-canvas').dataset.state === s", arg=state)


def new_run(page, before: str | None) -> str:
    """Wait until the Layers panel shows a run other than `before`; its id."""
    page.wait_for_function("(b) => { const v = document.querySelector('#layer-views');"
                           " return v.dataset.run && v.dataset.run !== b; }", arg=before or "", timeout=180_000)
    return page.get_attribute("#layer-views", "data-run")


def test_a_drawn_box_path_is_sent_stored_and_drawn_over_the_result(page, app):
    from layert2v.trajectory import Trajectories

    page.click("#tabs button[data-tab=generate]")
    page.fill("#prompt", PROMPT)
    page.fill("#steps", "2")
    page.fill("#frames", "3")
    page.fill("#guidance", "1")
    before = page.get_attribute("#layer-views", "data-run")
    page.click("#tabs button[data-tab=trajectories]")
    assert page.locator("#traj-fg option").count() == 3  # blank rows: up to the model's maximum
    page.select_option("#traj-fg", "1")
    set_trajectory_frame(page, 0)
    drag(page, "#traj-canvas", (0.10, 0.20), (0.40, 0.60))
    wait_trajectory(page, "ready")
    set_trajectory_frame(page, 2)
    drag(page, "#traj-canvas", (0.90, 0.70), (0.55, 0.30))  # dragged up-left: the same box as down-right
    wait_trajectory(page, "ready")

    doc = page.evaluate("trajDocument()")
    traj = Trajectories.from_dict(doc)
    (keys,) = [t.keyframes for t in traj.trajectories]
    assert [f for f, _ in keys] == [0, 2]
    step = 1 / 384 + 1e-4  # one canvas pixel
    assert np.allclose(keys[0][1], (0.10, 0.20, 0.40, 0.60), atol=step)
    assert np.allclose(keys[1][1], (0.55, 0.30, 0.90, 0.70), atol=step)
    shown = page.evaluate("traj.boxes")  # the path the page draws: layert2v.trajectory's interpolation
    assert np.allclose(shown["1"], traj.boxes(3)[1], atol=1e-6)
    assert np.allclose(shown["1"][1], np.add(keys[0][1], keys[1][1]) / 2, atol=1e-6)  # halfway at frame 1
    assert [li.split(":")[0] for li in page.locator("#traj-keys li").all_inner_texts()] == [
        "foreground 1, frame 0", "foreground 1, frame 2"]
    drawn = canvas_pixels(page, "#traj-canvas")[..., :3]  # the key frame box of frame 2 is outlined in red
    x0, y0, x1, _ = (np.array(keys[1][1]) * 384).astype(int)
    assert np.abs(drawn[int(keys[1][1][1] * 384), (x0 + x1) // 2] - [1, 64 / 255, 64 / 255]).max() < 0.02

    with page.expect_request("**/api/generate") as sent:
        page.click("#traj-generate")
    assert sent.value.post_data_json["trajectories"] == doc
    run_id = new_run(page, before)
    run = page.request.get(f"{app.url}/api/runs/{run_id}").json()
    run_dir = Path(run["path"])
    saved = LayeredVideo.load(run_dir)
    assert saved.metadata["trajectory"] == doc  # what the page sent is what the pipeline got
    requested = json.loads((run_dir / "trajectory.json").read_text())
    assert requested == traj.requested_document(3, 64, 64)
    assert {"trajectory.json", "trajectory.png"} <= set(run["files"])

    # the result shows the requested boxes: drawn over the playing video, frame by frame, and trajectory.png
    page.wait_for_function("() => document.querySelector('#traj-sheet').naturalWidth > 0")
    sheet = Image.open(run_dir / "trajectory.png")
    assert page.eval_on_selector("#traj-sheet", "i => [i.naturalWidth, i.naturalHeight]") == list(sheet.size)
    for frame in range(3):
        show_frame(page, frame)
        over = canvas_pixels(page, "canvas[data-layer=boxes]")[..., :3]
        plain = canvas_pixels(page, "canvas[data-layer=full]")[..., :3]
        b = np.rint(traj.boxes(3)[1][frame] * 64).astype(int)  # x0, y0, x1, y1 in pixels
        edge = np.zeros((64, 64), bool)
        edge[b[1], b[0]:b[2]] = edge[b[3] - 1, b[0]:b[2]] = True
        edge[b[1]:b[3], b[0]] = edge[b[1]:b[3], b[2] - 1] = True
        assert np.abs(over[edge] - [1, 64 / 255, 64 / 255]).max() < 0.01, frame  # foreground 1's colour
        assert np.abs(over[~edge] - plain[~edge]).max() < 0.01, frame  # and nothing else drawn


def test_a_bad_box_shows_its_message_and_is_not_generated(page, app):
    page.click("#tabs button[data-tab=generate]")
    page.fill("#prompt", PROMPT)
    page.fill("#frames", "3")
    page.click("#tabs button[data-tab=trajectories]")
    set_trajectory_frame(page, 1)
    drag(page, "#traj-canvas", (0.5, 0.5), (0.5, 0.5))  # a click: a box of zero size
    wait_trajectory(page, "error")
    assert "foreground 1 frame 1" in message(page) and "needs x0 < x1" in message(page)
    runs = sorted((app.root / "runs").iterdir()) if (app.root / "runs").exists() else []
    page.click("#traj-generate")  # refused by the server as well, before anything is queued
    page.wait_for_function("() => document.querySelector('#message').textContent.includes('needs x0 < x1')")
    assert (sorted((app.root / "runs").iterdir()) if (app.root / "runs").exists() else []) == runs

    page.click("#tabs button[data-tab=trajectories]")
    page.click("#traj-keys li[data-frame='1'] .remove-key")
    wait_trajectory(page, "empty")
    drag(page, "#traj-canvas", (0.6, 0.3), (1.3, 0.6))  # out past the right edge
    wait_trajectory(page, "error")
    assert "leaves the frame" in message(page)
    set_trajectory_frame(page, 7)  # a key frame past the clip's 3 frames
    page.click("#traj-clear")
    drag(page, "#traj-canvas", (0.2, 0.2), (0.4, 0.4))
    wait_trajectory(page, "error")
    assert "past the clip's last frame 2" in message(page)
    page.click("#traj-clear-all")
    wait_trajectory(page, "empty")
    assert page.evaluate("trajDocument()") is None


# ------------------------------------------------------------------ decompose and edit
def test_decompose_an_uploaded_video_into_layers(page, app, tmp_path):
    from layert2v.data.fit import fit_video
    from layert2v.io.codec import write_video

    clip = np.zeros((5, 40, 48, 3), np.float32)  # another size and aspect than the model's: fitted
    clip[..., 2] = 0.8
    for i in range(5):
        clip[i, 12:26, 4 + 6 * i:18 + 6 * i] = (1.0, 0.1, 0.1)
    upload = write_video(tmp_path / "square.mp4", clip, 8, "libx264")
    before = page.get_attribute("#layer-views", "data-run")
    page.click("#tabs button[data-tab=edit]")
    page.set_input_files("#dec-file", str(upload))
    page.select_option("#dec-method", "model")
    page.fill("#dec-background", "a blue background")
    page.fill("#dec-foregrounds", "a red square moving right\n\na small green ball\n")
    page.fill("#edit-steps", "1")
    page.fill("#edit-guidance", "1")
    page.click("#dec-go")
    run_id = new_run(page, before)
    assert page.get_attribute("#edit-status", "data-state") == "done"

    layers = page.eval_on_selector_all("#layer-views canvas", "cs => cs.map(c => c.dataset.layer)")
    assert layers == ["full", "background", "foreground_1", "foreground_2", "alpha_1", "alpha_2"]
    run = page.request.get(f"{app.url}/api/runs/{run_id}").json()
    assert run["manifest"]["prompts"]["foregrounds"] == ["a red square moving right", "a small green ball"]
    assert run["manifest"]["input"]["source"] == "square.mp4" and run["manifest"]["conditions"] == ["full"]
    assert run["manifest"]["method"] == "model" and run["manifest"]["method_reason"] == "asked for"
    assert "layert2v-ui-decompose" not in json.dumps(run["manifest"])  # no path of the removed temporary copy
    pipe = app.app.state.jobs.pipeline()
    fitted = fit_video(upload, 5, pipe.config.height, pipe.config.width, pipe.video_multiples, fps=pipe.config.fps)
    made = app.app.state.library.video(run_id)
    assert np.array_equal(made.full, fitted.frames)  # the uploaded video is the full layer, as pipe.decompose gives it
    show_frame(page, 4)
    shown = canvas_pixels(page, "canvas[data-layer=full]")[..., :3]
    assert np.abs(shown - fitted.frames[4]).max() < 0.01


def test_decompose_footage_with_the_engine_the_default_for_the_builtin_model(page, app, tmp_path):
    """Real footage (matplotlib's gift-box cut-out crossing its Grace Hopper photograph, 96x64, 24 frames): the panel
    offers the engine first for the built-in model and says why; without prompts the layers come back at the clip's
    own size and frame count, the progress counts frames, and the matte picks out the box."""
    from layert2v.data.engine.footage import Shot, shot_frames, write_shot
    from layert2v.eval.layers import iou
    from layert2v.io.codec import read_video

    shot = Shot(height=0.35, start=(0.2, 0.45), end=(0.8, 0.6))
    upload = write_shot(tmp_path / "gift.mp4", shot, (96, 64), 24)
    truth = shot_frames(shot, (96, 64), 24)
    before = page.get_attribute("#layer-views", "data-run")
    page.click("#tabs button[data-tab=edit]")
    assert page.input_value("#dec-method") == "engine"
    assert "built-in model" in page.inner_text("#dec-why")
    page.set_input_files("#dec-file", str(upload))
    page.fill("#dec-background", "")
    page.fill("#dec-foregrounds", "")
    page.fill("#dec-prompt", "")
    page.click("#dec-go")
    run_id = new_run(page, before)
    assert page.inner_text("#edit-status") == "done: frame 24 / 24"
    layers = page.eval_on_selector_all("#layer-views canvas", "cs => cs.map(c => c.dataset.layer)")
    assert layers == ["full", "background", "foreground_1", "alpha_1"]
    m = page.request.get(f"{app.url}/api/runs/{run_id}").json()["manifest"]
    assert (m["method"], m["frames"], m["size"], m["captions"]) == ("engine", 24, [96, 64], "no captions")
    assert m["given"]["full"]["from"] == "uploaded to layert2v ui: gift.mp4"
    made = app.app.state.library.video(run_id)
    assert np.abs(made.full - read_video(upload)).mean() < 0.02  # the upload itself, every frame, its own size
    assert iou(made.alphas[0], truth.alphas[0]) >= 0.8
    show_frame(page, 12)
    shown = canvas_pixels(page, "canvas[data-layer=alpha_1]")[..., 0]
    assert np.abs(shown - made.alphas[0][12]).max() < 0.01


def test_regenerate_one_foreground_keeps_the_other_layers_files(page, app):
    source = app.toys["edit"]
    original = {p.name: p.read_bytes() for p in source.iterdir()}
    open_directory(page, source)
    page.click("#tabs button[data-tab=edit]")
    assert "toy_edit" in page.inner_text("#regen-source")
    page.select_option("#regen-layer", "foreground_1")
    page.fill("#regen-prompt", "a green ball bouncing")
    page.fill("#edit-steps", "1")
    page.fill("#edit-guidance", "1")
    page.click("#regen-go")
    run_id = new_run(page, page.get_attribute("#layer-views", "data-run"))
    result = Path(page.request.get(f"{app.url}/api/runs/{run_id}").json()["path"])

    manifest = json.loads((result / "manifest.json").read_text())
    assert manifest["prompts"]["foregrounds"] == ["a green ball bouncing", "square 1"]
    assert manifest["regenerated"] == "foreground_1"
    kept = ["background.mp4", "foreground_2.mov", "foreground_2.webm", "alpha_2.mp4"]
    for name in kept:  # the kept layers' files, byte for byte
        assert (result / name).read_bytes() == original[name], name
    for name in ["foreground_1.mov", "alpha_1.mp4", "full.mp4"]:  # made again
        assert (result / name).read_bytes() != original[name], name
    source_video, again = LayeredVideo.load(source), LayeredVideo.load(result)
    assert np.array_equal(again.background, source_video.background)
    assert np.array_equal(again.foregrounds[1], source_video.foregrounds[1])
    assert np.array_equal(again.alphas[1], source_video.alphas[1])
    assert {p.name: p.read_bytes() for p in source.iterdir()} == original  # the source is left as it was
    layers = page.eval_on_selector_all("#layer-views canvas", "cs => cs.map(c => c.dataset.layer)")
    assert layers == ["full", "background", "foreground_1", "foreground_2", "alpha_1", "alpha_2"]


def test_regenerate_one_foreground_along_drawn_boxes(page, app):
    from layert2v.trajectory import Trajectories

    source = app.toys["edit"]
    open_directory(page, source)
    page.click("#tabs button[data-tab=trajectories]")
    page.select_option("#traj-fg", "2")
    for frame, start, end in [(0, (0.1, 0.1), (0.5, 0.5)), (4, (0.5, 0.5), (0.9, 0.9))]:
        set_trajectory_frame(page, frame)
        drag(page, "#traj-canvas", start, end)
        wait_trajectory(page, "ready")
    page.click("#tabs button[data-tab=edit]")
    page.select_option("#regen-layer", "foreground_1")
    page.check("#regen-boxes")
    page.fill("#regen-prompt", "a green ball bouncing")
    page.click("#regen-go")  # foreground 1 has no boxes: the page says so and sends nothing
    assert "draw boxes for foreground 1" in message(page)
    page.select_option("#regen-layer", "foreground_2")
    page.fill("#edit-steps", "1")
    page.fill("#edit-guidance", "1")
    with page.expect_request("**/regenerate") as sent:
        page.click("#regen-go")
    doc = sent.value.post_data_json["trajectories"]
    assert [f["foreground"] for f in doc["foregrounds"]] == [2]
    run_id = new_run(page, page.get_attribute("#layer-views", "data-run"))
    run = page.request.get(f"{app.url}/api/runs/{run_id}").json()
    result = Path(run["path"])
    assert LayeredVideo.load(result).metadata["trajectory"] == doc and "trajectory.png" in run["files"]
    assert np.allclose(run["trajectory_boxes"]["2"], Trajectories.from_dict(doc).boxes(5)[2], atol=1e-6)
    assert page.locator("canvas[data-layer=boxes]").count() == 1  # drawn over the result
    for name in ["background.mp4", "foreground_1.mov", "alpha_1.mp4"]:  # kept byte for byte
        assert (result / name).read_bytes() == (source / name).read_bytes(), name


# ---------------------------------------------------------------------------- what a new user hit (issue 29)
def test_form_numbers_are_refused_before_queueing_in_the_forms_words(page, app):
    jobs = app.app.state.jobs
    before = len(jobs._jobs)
    page.click("#tabs button[data-tab=generate]")
    page.fill("#prompt", PROMPT)
    page.fill("#seed", "-1")
    page.click("#generate")
    assert message(page) == "Seed must be a whole number from 0 to 9223372036854775807 (got '-1')"
    page.fill("#seed", "0")
    page.fill("#width", "99984")
    page.click("#generate")
    page.wait_for_function("() => document.querySelector('#message').textContent.startsWith('Width')")
    assert message(page) == "Width and Height must be at most 1024 for this model (its sequence length), got 99984x64"
    page.fill("#width", "64")
    page.fill("#frames", "33")
    page.click("#generate")
    page.wait_for_function("() => document.querySelector('#message').textContent.startsWith('Frames')")
    assert message(page) == ("Frames must be at most 31 with 1 foreground layer(s) for this model (its sequence "
                             "length), got 33")
    assert len(jobs._jobs) == before and page.inner_text("#job-status") == ""  # nothing was queued
    assert "--" not in page.inner_text("#message")  # no CLI flag in the page

    page.click("#tabs button[data-tab=open]")  # a message belongs to the panel that showed it
    assert page.is_hidden("#message")


def test_the_prompt_placeholder_reads_as_a_hint(page):
    box = page.locator("#prompt")
    assert box.input_value() == "" and box.get_attribute("placeholder").startswith("describe the video, e.g. ")
    style = page.evaluate("""() => { const s = getComputedStyle(document.querySelector('#prompt'), '::placeholder');
                                     return [s.fontStyle, s.color]; }""")
    assert style == ["italic", "rgb(154, 154, 154)"]


def test_a_tab_clicked_while_the_page_loads_stays_and_nothing_is_missing(browser, app):
    """With a saved result in the library the page shows it in Layers once loaded; a tab clicked before that
    (here, while the result's layers are held back) is not taken away. No request of the page fails (the
    favicon included)."""
    app.app.state.library.add(app.toys["opened"], "opened")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    failed, errors, held, released = [], [], [], []
    pg.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.route("**/sprite/**", lambda route: route.continue_() if released else held.append(route))
    try:
        pg.goto(app.url)
        pg.wait_for_function("() => document.querySelector('#tabs')")
        deadline = time.time() + 180
        while not held and time.time() < deadline:  # the first /api/model imports torch on a cold app
            pg.wait_for_timeout(100)
        assert held, "the page never asked for the layers"
        pg.click("#tabs button[data-tab=open]")
        released.append(True)
        for route in held:
            route.continue_()
        pg.wait_for_selector("body[data-ready]", timeout=180_000)
        pg.wait_for_timeout(600)
        assert pg.is_visible("#panel-open") and pg.is_hidden("#panel-layers")
        assert pg.get_attribute("#layer-views", "data-run")  # the result did load, behind the chosen tab
        assert failed == [] and errors == [], (failed, errors)  # no /favicon.ico 404: the page carries its icon
        assert pg.get_attribute("link[rel=icon]", "href").startswith("data:image/png;base64,")
    finally:
        context.close()
