"""Screenshots of every panel of `layert2v ui` for the docs, taken in Chromium through Playwright.

    python scripts/ui_screenshots.py [--out docs/images] [--chromium /usr/bin/chromium] [--steps 14]

Starts the app in this process with the built-in model, generates one two-layer video, opens it in each panel and
writes ui_generate.png, ui_layers.png (also ui.png), ui_recomposite.png and ui_open.png; then draws a box path for
each foreground (ui_trajectories.png), generates with it (ui_trajectories_result.png), splits the first video's
full.mp4 into layers and regenerates one of them (ui_edit.png, ui_edit_result.png).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from layert2v.cli import BUILTIN_MODEL

PROMPT = "a yellow star bouncing and a red circle moving right over a blue striped background"


def main() -> None:
    import uvicorn
    from playwright.sync_api import sync_playwright

    from layert2v.ui import bind
    from layert2v.ui.server import create_app

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/images")
    parser.add_argument("--chromium", default=shutil.which("chromium"))
    parser.add_argument("--steps", type=int, default=14)
    args = parser.parse_args()
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(BUILTIN_MODEL, Path(tmp) / "runs")
        sock = bind("127.0.0.1", 0)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
        while not server.started:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        sky = np.zeros((90, 160, 3), np.uint8)  # a replacement background: an orange-to-purple gradient
        sky[..., 0] = np.linspace(250, 90, 90)[:, None]
        sky[..., 1] = np.linspace(150, 40, 90)[:, None]
        sky[..., 2] = np.linspace(60, 160, 90)[:, None]
        Image.fromarray(sky).save(Path(tmp) / "sunset.png")

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1200, "height": 860})
            page.set_default_timeout(600_000)
            page.goto(url)
            page.wait_for_selector("body[data-ready]")
            page.fill("#prompt", PROMPT)
            page.fill("#steps", str(args.steps))
            page.fill("#seed", "3")
            page.click("#generate")
            page.wait_for_selector("#layer-views[data-run]")
            page.evaluate("() => { const s = document.querySelector('#frame'); s.value = 0;"
                          " s.dispatchEvent(new Event('input')); }")
            page.screenshot(path=str(out / "ui_layers.png"), full_page=True)
            shutil.copy(out / "ui_layers.png", out / "ui.png")
            page.click("#tabs button[data-tab=generate]")
            page.screenshot(path=str(out / "ui_generate.png"), full_page=True)
            page.click("#tabs button[data-tab=recomposite]")
            page.uncheck(".recomp-row[data-k='1'] .visible")
            page.fill(".recomp-row[data-k='2'] .dx", "-12")
            page.set_input_files("#bg-file", str(Path(tmp) / "sunset.png"))
            page.wait_for_function("() => document.querySelector('#bg-status').textContent.includes('fitted')")
            page.wait_for_function("() => document.querySelector('#composite').dataset.state === 'ready'")
            page.screenshot(path=str(out / "ui_recomposite.png"), full_page=True)
            page.click("#tabs button[data-tab=open]")
            page.fill("#open-path", "/path/to/out/red_circle")
            page.screenshot(path=str(out / "ui_open.png"))
            first = page.get_attribute("#layer-views", "data-run")
            first_dir = Path(page.request.get(f"{url}/api/runs/{first}").json()["path"])

            page.click("#tabs button[data-tab=trajectories]")
            last = int(page.input_value("#frames")) - 1
            for k, path in [(1, [(0, (0.05, 0.55), (0.35, 0.85)), (last, (0.65, 0.55), (0.95, 0.85))]),
                            (2, [(0, (0.65, 0.08), (0.92, 0.35)), (last // 2, (0.4, 0.35), (0.65, 0.6)),
                                 (last, (0.08, 0.1), (0.35, 0.37))])]:
                page.select_option("#traj-fg", str(k))
                for frame, start, end in path:
                    page.fill("#traj-frame", str(frame))
                    drag(page, "#traj-canvas", start, end)
                    page.wait_for_function("() => document.querySelector('#traj-canvas').dataset.state === 'ready'")
            page.fill("#traj-frame", str(last // 2))
            page.dispatch_event("#traj-frame", "input")
            page.screenshot(path=str(out / "ui_trajectories.png"), full_page=True)
            page.click("#traj-generate")
            wait_new_run(page, first)
            page.evaluate("() => { const s = document.querySelector('#frame'); s.value = 0;"
                          " s.dispatchEvent(new Event('input')); }")
            page.screenshot(path=str(out / "ui_trajectories_result.png"), full_page=True)

            page.click("#tabs button[data-tab=edit]")
            page.set_input_files("#dec-file", str(first_dir / "full.mp4"))
            page.fill("#dec-background", "a blue striped background")
            page.fill("#dec-foregrounds", "a yellow star bouncing\na red circle moving right")
            page.fill("#edit-steps", str(args.steps))
            before = page.get_attribute("#layer-views", "data-run")
            page.click("#dec-go")
            decomposed = wait_new_run(page, before)
            page.click("#tabs button[data-tab=edit]")
            page.select_option("#regen-layer", "foreground_2")
            page.fill("#regen-prompt", "a green square moving left")
            page.click("#regen-go")
            page.wait_for_function("() => document.querySelector('#edit-status').dataset.state === 'done'")
            wait_new_run(page, decomposed)
            page.click("#tabs button[data-tab=edit]")
            page.screenshot(path=str(out / "ui_edit.png"), full_page=True)
            page.click("#tabs button[data-tab=layers]")
            page.evaluate("() => { const s = document.querySelector('#frame'); s.value = 0;"
                          " s.dispatchEvent(new Event('input')); }")
            page.screenshot(path=str(out / "ui_edit_result.png"), full_page=True)
            browser.close()
        server.should_exit = True
    names = ("generate", "layers", "recomposite", "open", "trajectories", "trajectories_result", "edit", "edit_result")
    print(f"wrote {', '.join(f'ui_{n}.png' for n in names)} and ui.png to {out}")


def drag(page, selector: str, start: tuple[float, float], end: tuple[float, float]) -> None:
    """Drag the mouse between two points given as fractions of the element's box."""
    box = page.locator(selector).bounding_box()
    page.mouse.move(box["x"] + start[0] * box["width"], box["y"] + start[1] * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + end[0] * box["width"], box["y"] + end[1] * box["height"], steps=5)
    page.mouse.up()


def wait_new_run(page, before: str | None) -> str:
    page.wait_for_function("(b) => { const v = document.querySelector('#layer-views');"
                           " return v.dataset.run && v.dataset.run !== b; }", arg=before or "")
    return page.get_attribute("#layer-views", "data-run")


if __name__ == "__main__":
    main()
