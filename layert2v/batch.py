"""`layert2v generate --prompts FILE --out DIR`: one layered clip per line of FILE, the model loaded once per worker.

FILE is JSONL, one clip per line with the fields of :data:`FIELDS` (only ``prompt`` required), or plain text with one
prompt per line. Every line is checked before any model loads, by the checks ``generate`` makes for one clip, and all
bad lines are reported together, one line each with its line number. DIR gets::

    000001/ 000002/ ...    one ordinary layered directory per line, named by line number (LayeredVideo.save: atomic)
    index.jsonl            per finished line: line, directory, seed, settings, seconds, reused
    failed.jsonl           per line that failed while generating: line, directory, reason

A rerun of the same command resumes: a line whose directory holds a manifest with the line's settings is reused,
any other line is made (again). The same settings give the same files: the manifest carries the settings and no
timings (the index has each clip's seconds), every clip starts from an empty prompt cache, and a CPU worker
computes with :data:`CPU_THREADS` threads whatever the number of workers (torch's CPU sums depend on the thread
count).

The workers (:mod:`layert2v.batch_workers`) run in this process, or as Ray actors with ``--workers N`` > 1 or
``--address``. The per-clip checks live in the CLI, above this module; ``cli.cmd_generate`` passes them in.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import re
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .batch_workers import CPU_THREADS, SETTINGS_KEY, Clip
from .formats import VIDEO_MANIFEST
from .output_dirs import check_output_directory, remove_leftovers, write_text_atomic
from .preflight import check_seed

FIELDS = ("prompt", "bg", "fg", "seed", "frames", "size", "steps", "trajectory")
INDEX, FAILED = "index.jsonl", "failed.jsonl"
NOT_WITH_PROMPTS = {"bg": "--bg", "fg": "--fg", "trajectory": "--trajectory", "keep": "--keep",
                    "overwrite": "--overwrite"}


# --------------------------------------------------------------------------------------------- the file
def directory_name(line: int) -> str:
    return f"{line:06d}"


def read_lines(path: Path) -> tuple[list[tuple[int, dict]], list[tuple[int, str]]]:
    """The prompts file as (line number, fields) per non-blank line, and (line number, error) per unreadable line."""
    if not path.is_file():
        raise FileNotFoundError(f"--prompts {path}: no such file; pass a JSONL or text file with one clip per line")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"--prompts {path} is not UTF-8 text ({e.reason}); save it as UTF-8") from None
    jsonl = path.suffix.lower() == ".jsonl"
    lines, errors = [], []
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        if not jsonl:
            if raw.lstrip().startswith("{"):
                errors.append((number, f"looks like JSON, but {path.name} is read as one prompt per line; name the "
                                       "file .jsonl"))
            else:
                lines.append((number, {"prompt": raw.strip()}))
            continue
        try:
            fields = json.loads(raw)
        except json.JSONDecodeError as e:
            errors.append((number, f"not valid JSON ({e.msg} at column {e.colno})"))
            continue
        if not isinstance(fields, dict):
            errors.append((number, 'expected a JSON object like {"prompt": "..."}'))
            continue
        lines.append((number, fields))
    if not lines and not errors:
        raise ValueError(f"--prompts {path} has no prompts; write one clip per line")
    return lines, errors


def _whole(fields: dict, name: str) -> int | None:
    value = fields.get(name)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ValueError(f'"{name}" must be a whole number >= 1, got {value!r}')
    return value


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f'"{name}" must be a string, got {value!r}')
    return value


def line_arguments(number: int, fields: dict, args: argparse.Namespace, base: Path) -> argparse.Namespace:
    """The ``generate`` arguments of one line: its fields over the command's own options (frames, size, steps; a line
    without a seed gets --seed + line - 1). The trajectory path is taken relative to `base` and must lie inside it."""
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown field(s) {unknown}; a line takes {', '.join(FIELDS)}")
    if "prompt" not in fields:
        raise ValueError('no "prompt"; every line needs one')
    fg = fields.get("fg")
    if isinstance(fg, str):
        fg = [fg]
    if fg is not None and (not isinstance(fg, list) or not fg):
        raise ValueError(f'"fg" must be a string or a non-empty list of strings, got {fg!r}')
    size = fields.get("size")
    if size is not None:
        match = re.fullmatch(r"(\d+)x(\d+)", _text(size, "size").lower())
        if not match or 0 in (int(match[1]), int(match[2])):
            raise ValueError(f'"size" must look like "WIDTHxHEIGHT" (e.g. "64x64"), got {size!r}')
        size = int(match[1]), int(match[2])
    seed = fields.get("seed", args.seed + number - 1)
    try:
        check_seed(seed)
    except ValueError:
        raise ValueError(f'"seed" must be a whole number from 0 to 2**63-1, got {seed!r}') from None
    trajectory = fields.get("trajectory")
    if trajectory is not None:
        resolved = (base / _text(trajectory, "trajectory")).resolve()
        if not resolved.is_relative_to(base.resolve()):
            raise ValueError(f"trajectory {trajectory} lies outside {base} (the prompts file's directory); put the "
                             "file there")
        trajectory = str(resolved)
    return argparse.Namespace(**{
        **vars(args), "prompt": _text(fields["prompt"], "prompt"),
        "bg": None if fields.get("bg") is None else _text(fields["bg"], "bg"),
        "fg": None if fg is None else [_text(f, "fg") for f in fg], "seed": seed,
        "frames": _whole(fields, "frames") or args.frames, "size": size or args.size,
        "steps": _whole(fields, "steps") or args.steps, "trajectory": trajectory, "keep": [], "overwrite": True,
    })


def fingerprint(path: Path | None) -> str | None:
    """A model directory's or file's identity: its path and every file's name, size and modification time (no file
    is read; hidden files such as download caches do not count)."""
    if path is None:
        return None
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(path).parts))
    h = hashlib.sha256()
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(path) if p != path else p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return f"{path.resolve()} {h.hexdigest()[:16]}"


def check_lines(args: argparse.Namespace, check: Callable) -> tuple[list[Clip], Path]:
    """Read and check every line (``check``: the CLI's ``check_generate``); print every bad line, then raise.
    Returns the clips and the model directory."""
    path, out = Path(args.prompts), Path(args.out)
    lines, errors = read_lines(path)
    options = argparse.Namespace(**{**vars(args), "prompt": "options", "bg": "options", "fg": ["options"],
                                    "trajectory": None, "out": str(out / directory_name(0))})
    model = check(options)[0].model  # the command's own options (model, frames, size ...), once for all lines
    common = {"negative": args.negative, "guidance": args.guidance, "scheduler": args.scheduler,
              "model": fingerprint(model), "layer_weights": fingerprint(Path(args.layer_weights))
              if args.layer_weights else None, "device": args.device, "dtype": args.dtype,
              "threads": CPU_THREADS if args.device == "cpu" else None}
    clips = []
    for number, fields in lines:
        try:
            ns = line_arguments(number, fields, args, path.parent)
            ns.out = str(out / directory_name(number))
            checked, bg, fgs, trajectories = check(ns)
            trajectory = trajectories.to_dict() if trajectories is not None else None
        except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
                PermissionError) as e:
            errors.append((number, " ".join(str(e).split())))
            continue
        own = {"prompt": ns.prompt, "background": bg, "foregrounds": list(fgs), "seed": ns.seed,
               "frames": checked.frames, "size": checked.size, "steps": ns.steps, "trajectory": trajectory}
        settings = json.loads(json.dumps({**own, **common}))  # as it reads back from a manifest
        clips.append(Clip(number, directory_name(number), settings))
    if errors:
        for number, error in sorted(errors):
            print(f"{path}:{number}: {error}", file=sys.stderr)
        raise ValueError(f"{len(errors)} of {len(clips) + len(errors)} line(s) of {path} are bad (listed above); fix "
                         "them and rerun")
    return clips, model


# ------------------------------------------------------------------------------------------- the output
def finished(out: Path, clip: Clip) -> bool:
    """The line's directory holds a complete clip made with the line's settings (the manifest is written last)."""
    try:
        manifest = json.loads((out / clip.directory / VIDEO_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get(SETTINGS_KEY) == clip.settings


def read_index(out: Path) -> dict[str, dict]:
    """An earlier run's index entries by directory (an unreadable line is skipped: the index is rebuilt anyway)."""
    entries = {}
    with contextlib.suppress(OSError, UnicodeDecodeError):
        for raw in (out / INDEX).read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(raw)
                if isinstance(entry, dict) and isinstance(entry.get("directory"), str):
                    entries[entry["directory"]] = entry
    return entries


def write_jsonl(path: Path, records: Iterable[dict]) -> None:
    """Replace `path` at once (output_dirs' atomic write)."""
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in records))


def index_entry(clip: Clip, seconds: float | None, reused: bool) -> dict:
    return {"line": clip.line, "directory": clip.directory, "seed": clip.settings["seed"], "settings": clip.settings,
            "seconds": seconds, "reused": reused}


# ------------------------------------------------------------------------------------------- the command
def check_batch_options(args: argparse.Namespace) -> None:
    """The option combinations --prompts takes, in one line each."""
    if args.prompts is None:
        raise ValueError("--workers and --address go with --prompts FILE; drop them for one prompt")
    if args.prompt is not None:
        raise ValueError("give one prompt or --prompts FILE, not both")
    for key, flag in NOT_WITH_PROMPTS.items():
        if getattr(args, key):
            fix = ("a rerun resumes --out; remove it to start over" if key == "overwrite" else
                   "give it per line in the prompts file" if key != "keep" else "generate those clips one by one")
            raise ValueError(f"{flag} does not go with --prompts: {fix}")
    if re.fullmatch(r"cuda:\d+", args.device):
        raise ValueError("with --prompts each worker takes a GPU of its own; pass --device cuda (CUDA_VISIBLE_DEVICES "
                         "picks the GPUs)")


def generate_batch(args: argparse.Namespace, check: Callable, load: Callable, sampling: Callable) -> int:
    """The ``generate --prompts`` command. ``check``, ``load`` and ``sampling`` are the CLI's ``check_generate``,
    ``load_pipeline`` and ``sampling_kwargs``: the checks and the model loading of a single ``generate``."""
    from tqdm import tqdm

    from .batch_workers import in_process, on_ray, require_ray

    check_batch_options(args)
    workers = args.workers or 1
    ray_run = workers > 1 or args.address is not None
    if ray_run:
        require_ray()
    out = check_output_directory(args.out, overwrite=True, marker=INDEX)  # new, empty, or an earlier batch's
    clips, model = check_lines(args, check)
    if out.is_dir():
        remove_leftovers(out)
    previous = read_index(out)
    entries: dict[int, dict] = {}
    for clip in clips:
        if finished(out, clip):
            old = previous.get(clip.directory) or {}
            entries[clip.line] = index_entry(clip, old.get("seconds") if old.get("settings") == clip.settings
                                             else None, reused=True)
    todo = [c for c in clips if c.line not in entries]
    failures: dict[int, dict] = {}

    def write_lists() -> None:
        write_jsonl(out / INDEX, [entries[k] for k in sorted(entries)])
        write_jsonl(out / FAILED, [failures[k] for k in sorted(failures)])

    out.mkdir(parents=True, exist_ok=True)
    write_lists()  # from here on DIR is marked as a batch's, so a rerun after a kill resumes it
    where = (f"Ray{' at ' + args.address if args.address else ''}" if ray_run else "this process")
    threads = f", {CPU_THREADS} thread(s) each" if args.device == "cpu" else ""
    print(f"{len(clips)} line(s) in {args.prompts}: {len(entries)} done by an earlier run, {len(todo)} to make on "
          f"{workers} worker(s) ({where}, {args.device}{threads})")
    start = last_write = time.perf_counter()
    bar = tqdm(total=len(todo), unit="clip", desc="generate", smoothing=0, disable=not todo,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]")
    by_line = {c.line: c for c in todo}
    runner = (r for r in ()) if not todo else on_ray(todo, args, model, out, workers, load, sampling) if ray_run else \
        in_process(todo, args, model, out, load, sampling)
    interrupted = False
    try:
        with contextlib.closing(runner) as results:
            for result in results:
                clip = by_line[result["line"]]
                if "failed" in result:
                    failures[clip.line] = {"line": clip.line, "directory": clip.directory, "reason": result["failed"]}
                    bar.write(f"line {clip.line} failed: {result['failed']}", file=sys.stderr)
                else:
                    entries[clip.line] = index_entry(clip, result["seconds"], reused=False)
                bar.update()
                minutes = (time.perf_counter() - start) / 60
                bar.set_postfix_str(f"{bar.n / minutes:.1f} clips/min" + (f", {len(failures)} failed" if failures
                                                                          else ""))
                if time.perf_counter() - last_write > 30:
                    write_lists()
                    last_write = time.perf_counter()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        if out.is_dir():
            remove_leftovers(out)
        for clip in todo:  # finished as the run was stopped, before its worker could report it: listed, no seconds
            if clip.line not in entries and clip.line not in failures and finished(out, clip):
                entries[clip.line] = index_entry(clip, None, reused=False)
        write_lists()
    if interrupted:
        raise KeyboardInterrupt(f"interrupted; the {len(entries)} finished clip(s) are kept and listed in "
                                f"{out / INDEX}; rerun the same command to make the rest")
    made = len(entries) - (len(clips) - len(todo))
    seconds = time.perf_counter() - start
    print(f"made {made} clip(s), reused {len(clips) - len(todo)}, {len(failures)} failed, in {seconds:.1f}s"
          f"{f' ({made / seconds * 60:.1f} clips/min)' if made else ''}; index: {out / INDEX}")
    if failures:
        print(f"layert2v generate: error: {len(failures)} line(s) failed (reasons in {out / FAILED}); rerun the same "
              "command to retry them", file=sys.stderr)
        return 1
    return 0
