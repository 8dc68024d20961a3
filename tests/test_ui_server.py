"""`layert2v ui` without a browser: which files it serves, its checks, its recompositing and its CLI errors.

The app runs in uvicorn on a free 127.0.0.1 port with its lifespan off, so the model never loads here.
"""

from __future__ import annotations

import http.client
import io
import json
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import toy_clip
from PIL import Image

from layert2v.cli import BUILTIN_MODEL, main
from layert2v.video import LayeredVideo

pytest.importorskip("fastapi", reason="the ui needs fastapi (pip install -e .)")
SECRET = "do-not-serve-this"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import uvicorn

    from layert2v.ui import bind
    from layert2v.ui.server import create_app

    root = tmp_path_factory.mktemp("ui_server")
    (root / "outside.txt").write_text(SECRET)
    toy = toy_clip(7, 2, frames=3, size=32).save(root / "toy")
    (toy / "secret.txt").write_text(SECRET)  # in the directory, but not a file of the layered video
    linked = toy_clip(8, 1, frames=3, size=32).save(root / "linked")
    (linked / "preview.png").unlink()
    (linked / "preview.png").symlink_to(root / "outside.txt")  # listed name, pointing outside
    app = create_app(BUILTIN_MODEL, root / "runs", [toy, linked], max_upload_bytes=4096,
                     allowed_hosts=["127.0.0.1", "localhost"])
    sock = bind("127.0.0.1", 0)
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.05)
    ids = {e.path.name: e.id for e in app.state.library.entries()}
    yield {"port": sock.getsockname()[1], "root": root, "toy": toy, "ids": ids}
    srv.should_exit = True
    thread.join(10)


def request(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """A raw request: the path goes out exactly as written (no client-side normalisation of '..')."""
    conn = http.client.HTTPConnection("127.0.0.1", server["port"], timeout=180)  # a loaded machine: imports
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


def test_files_come_only_from_the_known_directories(server):
    run = server["ids"]["toy"]
    status, data = request(server, "GET", f"/api/runs/{run}/files/manifest.json")
    assert status == 200 and json.loads(data)["num_foregrounds"] == 2
    status, data = request(server, "GET", f"/api/runs/{run}/files/foreground_1.mov")
    assert status == 200 and data == (server["toy"] / "foreground_1.mov").read_bytes()
    refused = [
        f"/api/runs/{run}/files/secret.txt",  # present, but not listed in the manifest
        f"/api/runs/{run}/files/../../outside.txt",
        f"/api/runs/{run}/files/..%2F..%2Foutside.txt",
        f"/api/runs/{run}/files/%2e%2e%2foutside.txt",
        f"/api/runs/{run}/files/..%5Coutside.txt",
        f"/api/runs/{run}/files/%2Fetc%2Fpasswd",
        f"/api/runs/{run}/../../outside.txt",
        f"/api/runs/..%2F..%2F{server['root'].name}/files/outside.txt",
        "/api/runs/not-a-run/files/manifest.json",
        f"/api/runs/{server['ids']['linked']}/files/preview.png",  # a listed name that links outside
        "/static/../ui/server.py",
        "/static/%2e%2e/server.py",
        "/static/..%2F..%2Fcli.py",
    ]
    for path in refused:
        status, data = request(server, "GET", path)
        assert status == 404, path
        assert SECRET.encode() not in data and b"import" not in data, path

    status, data = request(server, "GET", f"/api/runs/{run}/zip")
    names = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
    listed = set(json.loads((server["toy"] / "manifest.json").read_text())["files"].values())
    assert status == 200 and names == {f"toy/{n}" for n in listed | {"manifest.json"}}


def test_only_local_host_names_are_answered(server):
    """A page elsewhere cannot reach the app through a DNS name that resolves to 127.0.0.1 (DNS rebinding)."""
    run = server["ids"]["toy"]
    assert request(server, "GET", f"/api/runs/{run}/files/manifest.json", headers={"Host": "localhost"})[0] == 200
    status, _ = request(server, "GET", f"/api/runs/{run}/files/manifest.json", headers={"Host": "evil.example"})
    assert status == 400


def test_open_refuses_what_is_not_a_layered_video(server):
    for path, words in [(str(server["root"]), "not a saved layered video"), ("/no/such/dir", "no such directory"),
                        (str(server["root"] / "outside.txt"), "not a directory"), ("", "give the path")]:
        status, data = request(server, "POST", "/api/open", json.dumps({"path": path}).encode(),
                               {"Content-Type": "application/json"})
        assert status == 400 and words in json.loads(data)["error"], path


def upload(server, name: str, payload: bytes):
    boundary = "----layert2vtest"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + payload + f"\r\n--{boundary}--\r\n".encode()
    status, data = request(server, "POST", "/api/uploads", body,
                           {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    return status, json.loads(data)


def test_uploads_are_checked(server):
    buf = io.BytesIO()
    Image.new("RGB", (20, 10), (10, 200, 30)).save(buf, format="PNG")
    status, data = upload(server, "small.png", buf.getvalue())
    assert status == 200 and (data["width"], data["height"], data["frames"]) == (20, 10, 1)
    status, data = upload(server, "clip.mp4", b"RIFF" + bytes(300))
    assert status == 400 and "neither an image nor a video" in data["error"]
    status, data = upload(server, "big.png", bytes(5000))  # the fixture's limit is 4 KB
    assert status == 413 and "limit" in data["error"]


def test_generation_requests_are_checked_before_they_queue(server):
    def generate(body):
        status, data = request(server, "POST", "/api/generate", json.dumps(body).encode(),
                               {"Content-Type": "application/json"})
        return status, json.loads(data).get("error", "")

    assert generate({"prompt": ""}) == (400, "the full prompt is empty; describe the video to generate")
    assert generate(["a list"]) == (400, "the request body must be a JSON object")
    status, data = request(server, "POST", "/api/generate", b"{not json", {"Content-Type": "application/json"})
    assert (status, json.loads(data)["error"]) == (400, "the request body must be JSON")
    status, error = generate({"prompt": "p", "background": "b", "foregrounds": ["a", ""]})
    assert status == 400 and "foreground 2 is empty" in error
    status, error = generate({"prompt": "p", "background": "b", "foregrounds": ["a", "b", "c", "d"]})
    assert status == 400 and "at most 3" in error
    status, error = generate({"prompt": "a red circle over a blue sky", "frames": 4})
    assert status == 400 and error.startswith("Frames must be 2k+1")
    status, error = generate({"prompt": "a red circle over a blue sky", "width": 40})
    assert status == 400 and error == "Width must be a multiple of 16 for this model, got 40"
    status, error = generate({"prompt": "a red circle over a blue sky", "steps": "many"})
    assert (status, error) == (400, "Steps must be a whole number from 1 to 500 (got 'many')")  # the form's words
    status, error = generate({"prompt": "a red circle over a blue sky", "seed": "-1"})
    assert (status, error) == (400, "Seed must be a whole number from 0 to 9223372036854775807 (got '-1')")
    status, error = generate({"prompt": "a red circle over a blue sky", "guidance": "nan"})
    assert (status, error) == (400, "Guidance must be a number of 0 or more (1 turns guidance off) (got 'nan')")
    status, error = generate({"prompt": "a red circle over a blue sky", "width": 99984})  # past the RoPE table
    assert (status, error) == (400, "Width and Height must be at most 1024 for this model (its sequence length), "
                                    "got 99984x64")
    status, error = generate({"prompt": "p", "background": "b", "foregrounds": ["a", "b", "c"], "frames": 17})
    assert (status, error) == (400, "Frames must be at most 15 with 3 foreground layer(s) for this model (its "
                                    "sequence length), got 17")
    assert not (server["root"] / "runs").exists() or not any((server["root"] / "runs").iterdir())


def test_recomposite_settings_are_checked(server):
    run = server["ids"]["toy"]

    def composite(layers):
        return request(server, "POST", f"/api/runs/{run}/composite.png", json.dumps({"layers": layers}).encode(),
                       {"Content-Type": "application/json"})

    assert composite([{"k": 2}, {"k": 1}])[0] == 200
    for bad in ([{"k": 1}], [{"k": 1}, {"k": 1}], [{"k": 1}, {"k": 3}], [{"k": 1, "opacity": 2}, {"k": 2}],
                [{"k": 1, "dx": 999}, {"k": 2}], "all"):
        status, data = composite(bad)
        assert status == 400 and json.loads(data)["error"], bad
    status, data = request(server, "POST", f"/api/runs/{run}/composite.mp4",
                           json.dumps({"layers": [{"k": 1}, {"k": 2, "visible": False}]}).encode(),
                           {"Content-Type": "application/json"})
    assert status == 200 and data[4:8] == b"ftyp"
    assert sorted(p.name for p in server["toy"].iterdir()) == sorted(
        [*json.loads((server["toy"] / "manifest.json").read_text())["files"].values(), "manifest.json", "secret.txt"])


def test_recomposite_is_the_layered_composite():
    from layert2v.ui.library import LayerSetting, recomposite, shift

    video = toy_clip(5, 2, frames=3, size=32)
    both = [LayerSetting(1), LayerSetting(2)]
    np.testing.assert_allclose(recomposite(video, both), video.composite(), atol=1e-6)
    swapped = recomposite(video, [LayerSetting(2), LayerSetting(1)])
    reordered = LayeredVideo(video.full, video.background, video.foregrounds[::-1], video.alphas[::-1])
    np.testing.assert_allclose(swapped, reordered.composite(), atol=1e-6)
    np.testing.assert_allclose(recomposite(video, [LayerSetting(1, visible=False), LayerSetting(2, visible=False)]),
                               video.background)
    half = recomposite(video, [LayerSetting(1, opacity=0.5), LayerSetting(2, visible=False)])
    a = video.alphas[0][..., None] * 0.5
    np.testing.assert_allclose(half, video.foregrounds[0] * a + video.background * (1 - a), atol=1e-6)
    x = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    assert shift(x, 1, 0)[0].tolist() == [[0, 0, 1, 2], [0, 4, 5, 6], [0, 8, 9, 10]]
    assert shift(x, -1, 1)[0].tolist() == [[0, 0, 0, 0], [1, 2, 3, 0], [5, 6, 7, 0]]


def test_fit_background_covers_and_centres():
    from layert2v.ui.uploads import fit_background

    image = np.zeros((40, 90, 3), np.uint8)
    image[:, :45] = (255, 0, 0)
    image[:, 45:] = (0, 0, 255)
    fitted = fit_background(image[None], 4, 32, 32)  # 90x40 -> 72x32, 20 columns cut on each side
    assert fitted.shape == (4, 32, 32, 3)
    assert np.allclose(fitted[:, :, :14], [1, 0, 0], atol=0.02) and np.allclose(fitted[:, :, 18:], [0, 0, 1],
                                                                                   atol=0.02)
    clip = np.stack([np.full((8, 8, 3), 10 * i, np.uint8) for i in range(3)])
    held = fit_background(clip, 5, 16, 16)  # a short video holds its last frame
    assert [round(float(f.mean()) * 255) for f in held] == [0, 10, 20, 20, 20]


def test_cli_ui_refuses_bad_setups(tmp_path, capsys):
    import socket

    assert main(["ui", "--model", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["ui", "--open", str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        assert main(["ui", "--port", str(taken.getsockname()[1]), "--out", str(tmp_path / "runs")]) == 2
        assert "pass another --port" in capsys.readouterr().err
    finally:
        taken.close()


def test_started_app_says_where_it_listens(tmp_path):
    """The real command in a subprocess: it prints its address and serves the page there."""
    import os
    import subprocess
    import sys

    from layert2v.ui import bind

    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    sock.close()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "layert2v.cli", "ui", "--port", str(port), "--out",
                             str(tmp_path / "runs")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    try:
        first = proc.stdout.readline()
        assert first.startswith(f"layert2v ui: listening on http://127.0.0.1:{port}/"), first
        assert "only this machine" in proc.stdout.readline()
        status, page = request({"port": port}, "GET", "/")
        assert status == 200 and b"<title>layert2v</title>" in page
    finally:
        proc.terminate()
        proc.wait(20)
    static = Path(__file__).parents[1] / "layert2v" / "ui" / "static"
    for file in static.iterdir():  # everything the page needs comes from this server: nothing from a CDN
        assert "://" not in file.read_text() and '"//' not in file.read_text(), file


def post_json(server, path: str, body) -> tuple[int, dict]:
    status, data = request(server, "POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    return status, json.loads(data)


def test_drawn_trajectories_are_interpolated_and_checked_by_the_library(server):
    from layert2v.trajectory import Trajectories

    doc = json.loads((Path(__file__).parents[1] / "docs" / "examples" / "two_crossing.json").read_text())
    status, data = post_json(server, "/api/trajectory", {"trajectories": doc, "frames": 9, "foregrounds": 2})
    assert status == 200
    expected = Trajectories.from_dict(doc).boxes(9)
    assert sorted(data["boxes"]) == ["1", "2"]
    for k in (1, 2):
        np.testing.assert_allclose(data["boxes"][str(k)], expected[k], atol=1e-6)

    def refused(trajectories, frames=9, foregrounds=2):
        status, data = post_json(server, "/api/trajectory", {"trajectories": trajectories, "frames": frames,
                                                             "foregrounds": foregrounds})
        assert status == 400
        return data["error"]

    def with_box(box, frame=0):
        return {"format": "layert2v-trajectories", "version": 1,
                "foregrounds": [{"foreground": 1, "keyframes": [{"frame": frame, "box": box}]}]}

    assert "needs x0 < x1" in refused(with_box([0.5, 0.2, 0.5, 0.4]))
    assert "leaves the frame" in refused(with_box([0.5, 0.2, 1.2, 0.4]))
    assert "past the clip's last frame 8" in refused(with_box([0.1, 0.1, 0.2, 0.2], frame=9))
    assert "there are 1 foreground prompt(s); add a foreground row" in refused(doc, foregrounds=1)
    assert "expected a JSON object" in refused({"keyframes": []})
    assert refused(doc, frames="nine") == "Frames must be a whole number (got 'nine')"


def test_generation_with_a_bad_trajectory_is_refused_before_it_queues(server):
    bad = {"format": "layert2v-trajectories", "version": 1,
           "foregrounds": [{"foreground": 1, "keyframes": [{"frame": 0, "box": [0.3, 0.3, 0.3, 0.6]}]}]}
    status, data = post_json(server, "/api/generate", {"prompt": "a red circle over a blue sky", "frames": 3,
                                                       "trajectories": bad})
    assert status == 400 and data["error"].startswith("trajectory: foreground 1 frame 0: box")
    bad["foregrounds"][0]["keyframes"][0] = {"frame": 0, "box": [0.1, 0.1, 0.5, 0.5]}
    bad["foregrounds"][0]["foreground"] = 2
    status, data = post_json(server, "/api/generate", {"prompt": "a red circle over a blue sky", "frames": 3,
                                                       "trajectories": bad})
    assert status == 400 and "names foreground 2 but there are 1 foreground prompt(s)" in data["error"]
    assert not (server["root"] / "runs").exists() or not any((server["root"] / "runs").iterdir())


def multipart(fields: dict[str, str], file: tuple[str, bytes] | None) -> tuple[bytes, dict]:
    boundary = "----layert2vtest"
    parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n".encode()
             for k, v in fields.items()]
    if file is not None:
        parts.append((f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file[0]}\"\r\n"
                      "Content-Type: application/octet-stream\r\n\r\n").encode() + file[1] + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_decompose_requests_are_checked_before_they_queue(server):
    import tempfile

    def decompose(fields, file):
        status, data = request(server, "POST", "/api/decompose", *multipart(fields, file))
        return status, json.loads(data)["error"]

    layers = {"method": "model", "background": "a gradient", "foregrounds": json.dumps(["a square"])}
    png = io.BytesIO()
    Image.new("RGB", (20, 10), (10, 200, 30)).save(png, format="PNG")
    leftovers = set(Path(tempfile.gettempdir()).glob("layert2v-ui-decompose-*"))
    status, error = decompose(layers, None)
    assert status == 400 and "no video" in error
    status, error = decompose(layers, ("clip.mp4", b"RIFF" + bytes(300)))
    assert status == 400 and error.startswith("cannot decode clip.mp4 as a video") and "layert2v-ui" not in error
    status, error = decompose(layers, ("still.png", png.getvalue()))
    assert status == 400 and "still image; decompose takes a video" in error
    status, error = decompose(layers, ("big.mp4", bytes(5000)))
    assert status == 413 and "limit" in error
    status, error = decompose({**layers, "background": " "}, ("still.png", png.getvalue()))
    assert status == 400 and "background prompt is empty" in error
    status, error = decompose({**layers, "foregrounds": "[]"}, ("still.png", png.getvalue()))
    assert status == 400 and "no foreground prompts" in error
    four = json.dumps(["a", "b", "c", "d"])
    status, error = decompose({**layers, "foregrounds": four}, ("still.png", png.getvalue()))
    assert status == 400 and "at most 3" in error
    status, error = decompose({**layers, "steps": "0"}, ("still.png", png.getvalue()))
    assert (status, error) == (400, "Steps must be a whole number from 1 to 500 (got '0')")
    status, error = decompose({**layers, "method": "magic"}, ("still.png", png.getvalue()))
    assert status == 400 and error.startswith("method: Input should be 'engine' or 'model'")
    engine = {"method": "engine", "background": "", "foregrounds": "[]"}  # the engine needs no prompts ...
    status, error = decompose(engine, ("still.png", png.getvalue()))
    assert status == 400 and "still image; decompose takes a video" in error  # ... but a video
    status, error = decompose({**engine, "steps": "3"}, ("still.png", png.getvalue()))
    assert status == 400 and "steps is a setting of the model method" in error
    status, error = decompose({**engine, "method": ""}, ("still.png", png.getvalue()))  # the built-in: the engine
    assert status == 400 and "still image" in error
    assert set(Path(tempfile.gettempdir()).glob("layert2v-ui-decompose-*")) == leftovers  # nothing written
    assert not (server["root"] / "runs").exists() or not any((server["root"] / "runs").iterdir())


def test_regenerate_requests_are_checked_before_they_queue(server):
    run = server["ids"]["toy"]
    status, data = post_json(server, f"/api/runs/{run}/regenerate", {"layer": "foreground_3", "prompt": "a cat"})
    assert status == 400 and data["error"] == ("cannot regenerate 'foreground_3': this video's foregrounds are "
                                               "foreground_1, foreground_2; choose one of them")
    status, data = post_json(server, f"/api/runs/{run}/regenerate", {"layer": "alpha_1", "prompt": "a cat"})
    assert status == 400 and "regenerate foreground_1: its alpha alpha_1 is made again with it" in data["error"]
    status, data = post_json(server, f"/api/runs/{run}/regenerate", {"layer": "foreground_1", "prompt": "  "})
    assert status == 400 and "new prompt for foreground_1 is empty" in data["error"]
    status, data = post_json(server, "/api/runs/nope/regenerate", {"layer": "foreground_1", "prompt": "a cat"})
    assert status == 404
    assert not (server["root"] / "runs").exists() or not any((server["root"] / "runs").iterdir())


def test_stopping_drops_queued_requests_and_their_uploads(tmp_path):
    from layert2v.ui.jobs import DecomposeRequest, GenerationQueue

    queue = GenerationQueue(load=lambda: None, finish=lambda request, video: "")  # no worker started
    folder = tmp_path / "upload"
    folder.mkdir()
    (folder / "clip.mp4").write_bytes(b"video")
    job = queue.submit(DecomposeRequest(folder / "clip.mp4", None, "bg", ["fg"], 0, 1, 1.0, None, None, None))
    assert queue.status(job.id)["state"] == "queued"
    queue.stop()
    assert queue.status(job.id)["state"] == "error" and "stopped" in queue.status(job.id)["error"]
    assert not folder.exists()


def test_a_regenerated_foreground_takes_boxes_for_itself_only(server):
    run = server["ids"]["toy"]  # 2 foregrounds, 3 frames

    def boxes(k, frame=0):
        return {"format": "layert2v-trajectories", "version": 1,
                "foregrounds": [{"foreground": k, "keyframes": [{"frame": frame, "box": [0.1, 0.1, 0.5, 0.5]}]}]}

    status, data = post_json(server, f"/api/runs/{run}/regenerate",
                             {"layer": "foreground_1", "prompt": "a cat", "trajectories": boxes(2)})
    assert status == 400 and "boxes for foreground(s) [2], which are kept; only foreground 1" in data["error"]
    status, data = post_json(server, f"/api/runs/{run}/regenerate",
                             {"layer": "foreground_1", "prompt": "a cat", "trajectories": boxes(1, frame=3)})
    assert status == 400 and "past the clip's last frame 2" in data["error"]
    assert not (server["root"] / "runs").exists() or not any((server["root"] / "runs").iterdir())


def test_the_default_output_folder_is_ignored_by_git():
    """`layert2v ui` saves under ./layert2v-ui by default; run from a checkout, that must not show up in git."""
    import shutil
    import subprocess

    from layert2v.cli import build_parser

    root = Path(__file__).parent.parent
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    default = build_parser().parse_args(["ui"]).out
    done = subprocess.run(["git", "check-ignore", "-q", f"{default}/run/manifest.json"], cwd=root)
    assert done.returncode == 0, f"{default}/ is not in .gitignore"
