"""Time `layert2v ui` from the command to its first page, and to the model being loaded, in a fresh process.

    python benchmarks/ui_startup.py                 # the built-in model, 3 runs
    python benchmarks/ui_startup.py --model DIR --runs 1

Prints the seconds for each run and their median. The page is served before the weights load (they load in the
background), so "first page" does not wait for the model; "model ready" does.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]


def get(port: int, path: str) -> tuple[int, bytes] | None:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    except OSError:
        return None


def free_port() -> int:
    from layert2v.ui import bind

    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    sock.close()
    return port


def one_run(model: str | None) -> tuple[float, float]:
    port = free_port()
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "layert2v.cli", "ui", "--port", str(port), "--out", out]
        if model:
            cmd += ["--model", model]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        try:
            first_page = ready = None
            while ready is None and time.perf_counter() - start < 300:
                if proc.poll() is not None:
                    raise SystemExit(f"layert2v ui exited with {proc.returncode}")
                if first_page is None:
                    got = get(port, "/")
                    if got and got[0] == 200:
                        first_page = time.perf_counter() - start
                else:
                    got = get(port, "/api/model")
                    if got and got[0] == 200 and json.loads(got[1])["ready"]:
                        ready = time.perf_counter() - start
                time.sleep(0.05)
        finally:
            proc.terminate()
            proc.wait(30)
    if first_page is None or ready is None:
        raise SystemExit("layert2v ui did not come up within 300 s")
    return first_page, ready


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model directory (default: the built-in model)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"cpu threads: {os.cpu_count()}  load average: {os.getloadavg()[0]:.1f}  model: {args.model or 'built-in'}")
    pages, readies = [], []
    for i in range(args.runs):
        page, ready = one_run(args.model)
        pages.append(page)
        readies.append(ready)
        print(f"run {i + 1}: first page {page:.2f} s, model ready {ready:.2f} s")
    print(f"median: first page {statistics.median(pages):.2f} s, model ready {statistics.median(readies):.2f} s")


if __name__ == "__main__":
    main()
