"""`layert2v generate --prompts FILE`: bad lines refused before loading, resuming after a kill or Ctrl-C to the files
of an uninterrupted run, a failing line recorded while the others finish, two Ray workers giving the files of one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from layert2v import cli
from layert2v.cli import main

LONG = " ".join(["a very long prompt"] * 12)  # more tokens than the tiny model's text encoder reads (16)


@pytest.fixture()
def saved_model(tiny_pipeline, tmp_path):
    return tiny_pipeline.save_pretrained(tmp_path / "model")


def write_prompts(path: Path, lines: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines))
    return path


def files(directory: Path) -> dict[str, bytes]:
    """Every file of the clip directories, by relative path (index.jsonl and failed.jsonl hold timings)."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and p.parent != directory}


def index(out: Path) -> dict[int, dict]:
    return {e["line"]: e for e in map(json.loads, (out / "index.jsonl").read_text().splitlines())}


def leftovers(out: Path) -> list[str]:
    return [p.name for p in out.iterdir() if p.name.startswith(".")]


def batch(model: Path, prompts: Path, out: Path, *extra: str) -> list[str]:
    return ["generate", "--prompts", str(prompts), "--out", str(out), "--model", str(model), "--steps", "2", *extra]


def test_bad_lines_are_all_refused_before_the_model_loads(saved_model, tmp_path, capsys, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(cli, "load_pipeline", no_loading)
    inside = tmp_path / "prompts" / "boxes.json"
    prompts = write_prompts(tmp_path / "prompts" / "p.jsonl", [
        {"prompt": "a red circle moving right over a blue sky"},
        {"prompt": "x", "frames": 6},                                # 2: the model's frame rule (4k+1)
        "",
        {"prompt": "x", "size": "40x32"},                            # 4: multiple of 16
        '{"prompt": "unclosed"',                                     # 5: not JSON
        {"prompt": "x", "colour": "red"},                            # 6: unknown field
        {"prompt": "x", "fg": ["a", "b", "c"]},                      # 7: the tiny model takes 2
        {"prompt": "x", "seed": -1},                                 # 8
        {"prompt": "x", "trajectory": "../outside.json"},            # 9: outside the prompts file's directory
        {"prompt": "x", "trajectory": inside.name},                  # 10: no such file
        {"bg": "sky"},                                               # 11: no prompt
        {"prompt": "  "},                                            # 12: empty
    ])
    (tmp_path / "outside.json").write_text("{}")
    out = tmp_path / "out"
    assert main(batch(saved_model, prompts, out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert [line.split(":")[1] for line in err[:-1]] == ["2", "4", "5", "6", "7", "8", "9", "10", "11", "12"]
    assert all(line.startswith(f"{prompts}:") for line in err[:-1])
    for needle, line in zip(["4k+1", "multiple of 16", "not valid JSON", "['colour']", "at most 2", '"seed"',
                             "lies outside", "does not exist", 'no "prompt"', "prompt is empty"], err):
        assert needle in line, line
    assert "10 of 11 line(s)" in err[-1] and err[-1].startswith("layert2v generate: error:")
    assert not out.exists()


def test_plain_text_prompts_and_the_options_that_do_not_go_with_them(saved_model, tmp_path, capsys):
    text = write_prompts(tmp_path / "p.txt", ["a red circle over a blue sky", '{"prompt": "json in a .txt"}'])
    assert main(batch(saved_model, text, tmp_path / "o")) == 2
    assert "name the file .jsonl" in capsys.readouterr().err
    good = write_prompts(tmp_path / "good.txt", ["a red circle over a blue sky"])
    for extra, needle in [(["--bg", "sky"], "--bg does not go with --prompts"),
                          (["--overwrite"], "--overwrite does not go with --prompts"),
                          (["a prompt"], "not both"),
                          (["--device", "cuda:1"], "--device cuda")]:
        assert main(batch(saved_model, good, tmp_path / "o", *extra)) == 2
        assert needle in capsys.readouterr().err
    assert main(["generate", "a", "--workers", "2", "--out", str(tmp_path / "o")]) == 2
    assert "go with --prompts" in capsys.readouterr().err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("mine")
    assert main(batch(saved_model, good, foreign)) == 2
    assert "index.jsonl" in capsys.readouterr().err and (foreign / "mine.txt").read_text() == "mine"
    assert main(batch(saved_model, good, tmp_path / "text")) == 0
    manifest = json.loads((tmp_path / "text" / "000001" / "manifest.json").read_text())
    assert manifest["prompts"]["background"] == "a blue sky" and manifest["seed"] == 0


def test_a_rerun_reuses_lines_of_the_same_settings_and_redoes_changed_ones(saved_model, tmp_path, capsys):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "boxes.json").write_text(json.dumps({"format": "layert2v-trajectories", "version": 1,
                                                          "foregrounds": [{"foreground": 1, "keyframes": [
                                                              {"frame": 0, "box": [0.1, 0.1, 0.4, 0.4]},
                                                              {"frame": 4, "box": [0.5, 0.5, 0.9, 0.9]}]}]}))
    lines = [{"prompt": "a red circle moving right over a blue sky", "trajectory": "boxes.json"},
             {"prompt": "a ball and a box over a field", "seed": 9},
             {"prompt": "a green square over a grey wall"}]
    prompts = write_prompts(tmp_path / "p" / "p.jsonl", lines)
    out = tmp_path / "out"
    assert main(batch(saved_model, prompts, out, "--seed", "100")) == 0
    first = index(out)
    assert [first[k]["seed"] for k in (1, 2)] == [100, 9] and not any(e["reused"] for e in first.values())
    assert (out / "000001" / "trajectory.json").is_file()  # the relative path was taken from the file's directory
    assert json.loads((out / "000002" / "manifest.json").read_text())["num_foregrounds"] == 2
    assert "timings" not in json.loads((out / "000001" / "manifest.json").read_text())
    before = files(out)
    mtimes = {d: (out / d / "manifest.json").stat().st_mtime_ns for d in ("000001", "000002")}

    lines[1]["seed"] = 10  # lines 2 and 3 change
    lines[2]["steps"] = 1
    write_prompts(prompts, lines)
    assert main(batch(saved_model, prompts, out, "--seed", "100")) == 0
    second = index(out)
    assert [second[k]["reused"] for k in (1, 2, 3)] == [True, False, False]
    assert second[1]["seconds"] == first[1]["seconds"]  # carried over from the run that made it
    assert (out / "000001" / "manifest.json").stat().st_mtime_ns == mtimes["000001"]
    assert (out / "000002" / "manifest.json").stat().st_mtime_ns != mtimes["000002"]
    assert json.loads((out / "000002" / "manifest.json").read_text())["seed"] == 10
    after = files(out)
    assert {k: v for k, v in after.items() if k.startswith("000001")} == \
        {k: v for k, v in before.items() if k.startswith("000001")}
    assert "3 line(s)" in capsys.readouterr().out


def test_a_failing_line_is_recorded_and_the_others_finish(saved_model, tmp_path, capsys):
    prompts = write_prompts(tmp_path / "p.jsonl", [{"prompt": "a red circle over a blue sky"},
                                                   {"prompt": LONG, "bg": "sky", "fg": "a ball"},
                                                   {"prompt": "a ball over a field"}])
    out = tmp_path / "out"
    assert main(batch(saved_model, prompts, out)) == 1
    err = capsys.readouterr().err
    assert "line 2 failed" in err and "1 line(s) failed" in err
    failed = [json.loads(x) for x in (out / "failed.jsonl").read_text().splitlines()]
    assert [(f["line"], f["directory"]) for f in failed] == [(2, "000002")] and "tokens long" in failed[0]["reason"]
    assert sorted(index(out)) == [1, 3] and not (out / "000002").exists() and not leftovers(out)
    assert main(batch(saved_model, prompts, out)) == 1  # a rerun tries the failed line again, reuses the others
    assert all(e["reused"] for e in index(out).values())


def _run_until(command: list[str], out: Path, done: int, sig: int) -> subprocess.CompletedProcess:
    """Run `layert2v` in a subprocess and send it `sig` once `done` clip directories exist."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "layert2v.cli", *command], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if out.is_dir() and sum(p.name.isdigit() for p in out.iterdir()) >= done:
            proc.send_signal(sig)
            break
        time.sleep(0.02)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_a_stopped_run_resumes_to_exactly_the_files_of_an_uninterrupted_one(saved_model, tmp_path, sig):
    prompts = write_prompts(tmp_path / "p.jsonl", [{"prompt": f"a ball {k} over a field", "steps": 6}
                                                   for k in range(8)])
    stopped, whole = tmp_path / "stopped", tmp_path / "whole"
    run = _run_until(batch(saved_model, prompts, stopped), stopped, 2, sig)
    if sig == signal.SIGINT:  # Ctrl-C: exit 130, the finished clips listed, nothing half-written
        assert run.returncode == 130, run.stderr
        assert "interrupted" in run.stderr.splitlines()[-1] and "rerun" in run.stderr.splitlines()[-1]
        assert not leftovers(stopped)
        assert sorted(index(stopped)) == sorted(int(p.name) for p in stopped.iterdir() if p.name.isdigit())
    else:
        assert run.returncode == -signal.SIGKILL
    done = {p.name: (p / "manifest.json").stat().st_mtime_ns for p in stopped.iterdir() if p.name.isdigit()}
    assert 2 <= len(done) < 8, "the run was not stopped part way"
    assert all((stopped / d / "manifest.json").is_file() for d in done)  # a directory appears whole or not at all

    assert main(batch(saved_model, prompts, stopped)) == 0
    entries = index(stopped)
    assert {e["directory"] for e in entries.values() if e["reused"]} == set(done)
    assert {d: (stopped / d / "manifest.json").stat().st_mtime_ns for d in done} == done  # not made again
    assert not leftovers(stopped)
    assert main(batch(saved_model, prompts, whole)) == 0
    assert files(stopped) == files(whole) and len(files(whole)) == 8 * 8


def test_two_workers_on_local_ray_give_the_same_files_as_one(saved_model, tmp_path):
    ray = pytest.importorskip("ray")
    prompts = write_prompts(tmp_path / "p.jsonl", [{"prompt": f"a ball {k} over a field"} for k in range(4)]
                            + [{"prompt": "two balls over a field", "fg": ["a ball", "a box"], "seed": 3}])
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(batch(saved_model, prompts, one)) == 0
    ray.init(num_cpus=2, object_store_memory=100 * 1024 * 1024, include_dashboard=False)
    try:
        assert main(batch(saved_model, prompts, two, "--workers", "2")) == 0
    finally:
        ray.shutdown()
    assert files(one) == files(two) and len(files(two)) == 4 * 8 + 11
    assert [e["settings"] for e in index(one).values()] == [e["settings"] for e in index(two).values()]
