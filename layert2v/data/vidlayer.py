"""A reader for VidLayer, the layered video dataset released with LayerT2V (Li et al., 2026).

The release describes each sample as: the original clip (background + foreground), the background clip, the
foreground mask, optionally the foreground clip, and the multi-layer prompt; where there is no foreground clip,
the foreground is video x mask. It is organised by source (VIDGEN, GOT-10K, Youtube-VOS, MOSEv1, MOSEv2).
The exact file names below are **assumed** (no copy of the release was at hand; they follow the authors'
training code): they are defined in the ASSUMED LAYOUT block only, and docs/DATA.md says so. Like the authors'
loader, the reader takes either form that code reads: sample directories (whose metadata may name its files
elsewhere, under ``paths``) or a JSONL index of one sample per line. Every path a sample names is read only inside
the dataset root unless ``allow_absolute_paths`` says the index may point anywhere.

How a sample becomes a :class:`~layert2v.video.LayeredVideo`:

* the mask video (grey, decoded to RGB) -> alpha, the mean of its three channels, clipped to [0, 1];
* the foreground is stored *straight*: its colour is the foreground clip where there is one, else the original
  clip, so its premultiplied form (what the RGB VAE encodes) is ``clip x mask``: the release's "FG = video x
  mask" where there is no foreground clip;
* the multi-layer prompt -> ``prompts = {"full", "background", "foregrounds": [...]}``;
* frames and size are fitted to a :class:`~layert2v.data.fit.ClipShape` (only the window's frames are
  converted; see :mod:`layert2v.data.fit`).

Several foregrounds (the release's multi-subject samples) are numbered masks ``mask_1 .. mask_K``, bottom to
top, with a list of foreground prompts in the same order.

A sample that is incomplete (a layer file missing, no prompt, prompts and masks disagreeing) stops
:class:`VidLayerDataset` when it is opened; one that is corrupt (a file that does not decode, layers of
different lengths or sizes) stops the read of that sample. Either way the message is one line naming the sample
and the fix. ``python -m layert2v.data.vidlayer DIR`` checks every sample's files and lengths without decoding
frames.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from ..formats import read_json_object
from ..io.codec import read_frames, video_info, write_video
from ..output_dirs import atomic_directory
from ..video import LayeredVideo
from .fit import ClipShape, resize_frames, unpremultiply
from .source import ClipSource

# ------------------------------------------------------------------------------------------------------------
# ASSUMED LAYOUT (the one place that names VidLayer's files; documented in docs/DATA.md)
#
#   ROOT/[SOURCE/]SAMPLE/
#     metadata.json      the multi-layer prompt: {"captions": {"full": str, "background": str,
#                        "foreground": str, or [str, ...] bottom to top for several foregrounds}}
#                        (or the same three at the top level as "overall_description", "background_prompt",
#                        "foreground_prompt")
#     full_video.*       the original clip (background + foregrounds)
#     background.*       the background clip
#     mask.*             the foreground mask, grey; several foregrounds: mask_1.* .. mask_K.*
#     foreground.*       optional: the foreground clip (straight colour); several: foreground_1.* ..
#   where * is one of VIDEO_EXTENSIONS. Where full_video, background or mask is not beside metadata.json,
#   metadata.json's "paths" names it: {"paths": {"full_video": P, "background_video": P, "mask_video": P}}.
#
#   or ROOT/INDEX.jsonl, one sample per line (one foreground each):
#     {"vid": P (the original clip), "entry": {"pha_video_path": P (the mask), "bg_path": P (the background)},
#      "overall_description": str, "foreground_prompt": str, "background_prompt": str}
#
#   A relative P is relative to ROOT (the directory given, or the one holding the JSONL file).
PROMPT_FILE = "metadata.json"
FULL, BACKGROUND, MASK, FOREGROUND = "full_video", "background", "mask", "foreground"
VIDEO_EXTENSIONS = (".mp4", ".mov", ".webm", ".mkv", ".avi")
PROMPT_KEYS = {  # ours: (key inside "captions", top-level key; the JSONL index's key too)
    "full": ("full", "overall_description"),
    "background": ("background", "background_prompt"),
    "foregrounds": ("foreground", "foreground_prompt"),
}
PATHS = "paths"  # metadata.json's key naming files kept elsewhere
PATH_KEYS = {FULL: "full_video", BACKGROUND: "background_video", MASK: "mask_video"}
INDEX_SUFFIX = ".jsonl"
INDEX_PATHS = {FULL: ("vid",), MASK: ("entry", "pha_video_path"), BACKGROUND: ("entry", "bg_path")}
# ------------------------------------------------------------------------------------------------------------

FIX_INCOMPLETE = "re-download the sample or remove its directory"
FIX_OUTSIDE = ("move the files under the dataset root, or pass allow_absolute_paths (data.allow_absolute_paths: true) "
               "if you trust the index")


class VidLayerSampleError(ValueError):
    """A VidLayer sample that cannot be read; the message names the sample and the fix."""


@dataclass(frozen=True)
class VidLayerSample:
    """One sample's files (found, not yet decoded) and prompts."""

    name: str  # the sample directory, relative to the dataset root
    full: Path
    background: Path
    masks: tuple[Path, ...]  # bottom to top
    foregrounds: tuple[Path | None, ...]  # the foreground clip per mask, None where there is none
    prompts: dict[str, Any]

    @property
    def num_foregrounds(self) -> int:
        return len(self.masks)

    @property
    def videos(self) -> list[Path]:
        return [self.full, self.background, *self.masks, *(f for f in self.foregrounds if f is not None)]


def _fail(name: str, problem: str, fix: str = FIX_INCOMPLETE) -> VidLayerSampleError:
    return VidLayerSampleError(f"VidLayer sample {name}: {problem}; {fix}")


def _videos_by_stem(directory: Path, name: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for entry in sorted(directory.iterdir()):
        if entry.suffix.lower() in VIDEO_EXTENSIONS and entry.is_file():
            if entry.stem in found:
                raise _fail(name, f"both {found[entry.stem].name} and {entry.name}",
                            "keep one file per layer")
            found[entry.stem] = entry
    return found


def _numbered(videos: dict[str, Path], stem: str, name: str) -> dict[int, Path]:
    """{k: file} for ``stem`` alone (k = 1) or ``stem_1 .. stem_K``."""
    numbered = {int(s[len(stem) + 1:]): p for s, p in videos.items()
                if s.startswith(stem + "_") and s[len(stem) + 1:].isdigit()}
    if stem in videos and numbered:
        raise _fail(name, f"both {videos[stem].name} and numbered {stem}_k files", "keep one naming")
    return {1: videos[stem]} if stem in videos else dict(sorted(numbered.items()))


def _metadata(directory: Path, name: str) -> dict[str, Any]:
    path = directory / PROMPT_FILE
    if not path.is_file():
        raise _fail(name, f"no {PROMPT_FILE} (the multi-layer prompt)")
    try:
        return read_json_object(path)
    except ValueError as e:
        raise _fail(name, str(e).replace(str(path), PROMPT_FILE)) from None


def _prompts(raw: dict[str, Any], name: str, k: int, where: str = PROMPT_FILE) -> dict[str, Any]:
    """The multi-layer prompt of a sample's metadata (or its index line) with ``k`` masks."""
    captions = raw.get("captions") if isinstance(raw.get("captions"), dict) else {}
    prompts: dict[str, Any] = {}
    for ours, (inside, top) in PROMPT_KEYS.items():
        value = captions.get(inside, raw.get(top))
        if value is None:
            raise _fail(name, f"{where} has no {inside} prompt (captions.{inside} or {top})")
        prompts[ours] = value
    fgs = prompts["foregrounds"]
    fgs = [fgs] if isinstance(fgs, str) else fgs
    if not isinstance(fgs, list) or len(fgs) != k or not all(isinstance(p, str) and p for p in fgs):
        raise _fail(name, f"{k} foreground mask(s) but foreground prompt(s) {prompts['foregrounds']!r}",
                    "give one non-empty foreground prompt per mask")
    if not all(isinstance(prompts[key], str) and prompts[key] for key in ("full", "background")):
        raise _fail(name, "the full and background prompts must be non-empty strings")
    prompts["foregrounds"] = fgs
    return prompts


def _named_file(root: Path, value: Any, name: str, what: str, allow_absolute_paths: bool) -> Path:
    """A file a sample names by path: relative to ``root``, and inside it (symlinks resolved) unless
    ``allow_absolute_paths``."""
    if not isinstance(value, str) or not value.strip():
        raise _fail(name, f"{what} must be a path, got {value!r}")
    given = Path(value)
    path = given if given.is_absolute() else root / given
    if not allow_absolute_paths and (given.is_absolute() or not path.resolve().is_relative_to(root.resolve())):
        raise _fail(name, f"{what} {value} is outside the dataset root {root}", FIX_OUTSIDE)
    if not path.is_file():
        raise _fail(name, f"{what} {value} is not a file")
    return path


def find_sample(directory: Path, name: str, root: Path | None = None,
                allow_absolute_paths: bool = False) -> VidLayerSample:
    """The files and prompts of the sample in ``directory``, checked for completeness (nothing is decoded). A layer
    file that is not in the directory is taken from metadata.json's ``paths``, relative to ``root`` (the dataset
    root; default: the sample directory itself) and inside it unless ``allow_absolute_paths``."""
    root = directory if root is None else root
    videos = _videos_by_stem(directory, name)
    raw = _metadata(directory, name)
    elsewhere = raw.get(PATHS) if isinstance(raw.get(PATHS), dict) else {}
    for stem in (FULL, BACKGROUND, MASK):
        if stem not in videos and not any(s.startswith(stem + "_") for s in videos) and PATH_KEYS[stem] in elsewhere:
            videos[stem] = _named_file(root, elsewhere[PATH_KEYS[stem]], name, f"{PATHS}.{PATH_KEYS[stem]}",
                                       allow_absolute_paths)
    for stem, what in ((FULL, "original clip"), (BACKGROUND, "background clip")):
        if stem not in videos:
            raise _fail(name, f"no {stem}{{{','.join(VIDEO_EXTENSIONS)}}} (the {what})")
    masks = _numbered(videos, MASK, name)
    if not masks:
        raise _fail(name, f"no {MASK} video (the foreground mask)")
    if list(masks) != list(range(1, len(masks) + 1)):
        raise _fail(name, f"masks are numbered {list(masks)}, not 1..K")
    clips = _numbered(videos, FOREGROUND, name)
    if not set(clips) <= set(masks):
        raise _fail(name, f"foreground clip(s) {sorted(clips)} for mask(s) {list(masks)}",
                    "number each foreground clip like its mask")
    return VidLayerSample(name=name, full=videos[FULL], background=videos[BACKGROUND], masks=tuple(masks.values()),
                          foregrounds=tuple(clips.get(k) for k in masks), prompts=_prompts(raw, name, len(masks)))


def index_samples(index: Path, allow_absolute_paths: bool = False) -> list[VidLayerSample | VidLayerSampleError]:
    """The samples of a JSONL index (the ASSUMED LAYOUT's second form), each line checked like a sample directory:
    a sample, or the error naming its line. Paths are relative to the index's directory and inside it unless
    ``allow_absolute_paths``."""
    root = index.parent
    found: list[VidLayerSample | VidLayerSampleError] = []
    with index.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            name = f"{index.name}:{number}"
            try:
                try:
                    raw = json.loads(line)
                except json.JSONDecodeError as e:
                    raise _fail(name, f"not valid JSON ({e.msg})", "fix or remove the line") from None
                if not isinstance(raw, dict):
                    raise _fail(name, "not a JSON object", "fix or remove the line")
                files = {}
                for stem, keys in INDEX_PATHS.items():
                    value = raw
                    for key in keys:
                        value = value.get(key) if isinstance(value, dict) else None
                    if value is None:
                        raise _fail(name, f"no {'.'.join(keys)}", "fix or remove the line")
                    files[stem] = _named_file(root, value, name, ".".join(keys), allow_absolute_paths)
                found.append(VidLayerSample(name=name, full=files[FULL], background=files[BACKGROUND],
                                            masks=(files[MASK],), foregrounds=(None,),
                                            prompts=_prompts(raw, name, 1, "the line")))
            except VidLayerSampleError as e:
                found.append(e)
    return found


def _is_sample(directory: Path) -> bool:
    """A directory holding the prompt file or any layer video of the layout."""
    for p in directory.iterdir():
        if p.name == PROMPT_FILE or (p.suffix.lower() in VIDEO_EXTENSIONS and (
                p.stem in (FULL, BACKGROUND, MASK) or p.stem.startswith(MASK + "_"))):
            return True
    return False


def _root(directory: str | Path) -> Path:
    root = Path(directory).expanduser()
    if root.suffix == INDEX_SUFFIX and root.is_file():
        return root
    if not root.is_dir():
        raise FileNotFoundError(f"VidLayer directory {root} not found; point data.path at the unpacked release (its "
                                f"directory, or its {INDEX_SUFFIX} index)")
    return root


def find_samples(path: Path, allow_absolute_paths: bool = False) -> list[VidLayerSample | VidLayerSampleError]:
    """Every sample of a dataset root (sample directories) or of a JSONL index, or the error of one that cannot be
    read, in order."""
    if path.is_file():
        return index_samples(path, allow_absolute_paths)
    found: list[VidLayerSample | VidLayerSampleError] = []
    for d in sample_directories(path):
        try:
            found.append(find_sample(d, d.relative_to(path).as_posix(), path, allow_absolute_paths))
        except VidLayerSampleError as e:
            found.append(e)
    return found


def sample_directories(root: Path) -> list[Path]:
    """Sample directories under ``root`` (directly, or one source level down), sorted; symlinked directories
    are not followed out of ``root``."""
    found = []
    for entry in sorted(root.iterdir()):
        if not entry.is_dir() or entry.is_symlink():
            continue
        if _is_sample(entry):
            found.append(entry)
        else:
            found += [d for d in sorted(entry.iterdir()) if d.is_dir() and not d.is_symlink() and _is_sample(d)]
    return found


def probe_sample(sample: VidLayerSample) -> tuple[int, float, int, int]:
    """(frames, fps, width, height) of a sample, with its layer files checked to open and agree in frame count
    and size (no frame is decoded)."""
    infos = {}
    for path in sample.videos:  # by path: files named elsewhere (metadata paths, an index) may share a name
        try:
            infos[path] = video_info(path)
        except (av.error.FFmpegError, ValueError, OSError) as e:
            raise _fail(sample.name, f"{path.name} cannot be opened ({' '.join(str(e).split())})") from None
    frames, fps, width, height = infos[sample.full]
    for file, (n, _, w, h) in infos.items():
        if (w, h) != (width, height):
            raise _fail(sample.name, f"{file.name} is {w}x{h}, {sample.full.name} {width}x{height}",
                        "re-export the layers at one size or remove the sample")
        if n != frames:
            raise _fail(sample.name, f"{file.name} has {n} frames, {sample.full.name} {frames}",
                        "re-export the layers with the same frames or remove the sample")
    return frames, fps, width, height


def _decode(sample: VidLayerSample, path: Path, indices: list[int]) -> np.ndarray:
    try:
        return read_frames(path, indices)
    except (av.error.FFmpegError, ValueError, OSError) as e:
        reason = " ".join(str(e).split())
        raise _fail(sample.name, f"{path.name} does not decode ({reason})") from None


class VidLayerDataset(ClipSource):
    """The VidLayer release (see the module docstring) as a clip source.

    Args:
        directory: the dataset root (samples directly under it, or one source directory down), or a JSONL index
            file (one sample per line; its directory is the root).
        shape: frames, size and frame rate to fit clips to; None gives every frame at the stored size.
        allow_absolute_paths: read files a sample names (metadata ``paths``, the index's paths) anywhere, not only
            inside the root.

    Opening checks every sample's files and prompts (no decoding) and stops at the first incomplete one.
    """

    def __init__(self, directory: str | Path, shape: ClipShape | None = None, allow_absolute_paths: bool = False):
        self.directory = _root(directory)
        self.shape = shape
        self.samples = []
        for found in find_samples(self.directory, allow_absolute_paths):
            if isinstance(found, VidLayerSampleError):
                raise found
            self.samples.append(found)
        if not self.samples:
            raise ValueError(f"no VidLayer sample under {self.directory} (a sample directory holds "
                             f"{FULL}.mp4, {BACKGROUND}.mp4, {MASK}.mp4 and {PROMPT_FILE}; an index, one sample "
                             "per line); point data.path at the unpacked release")

    def __len__(self) -> int:
        return len(self.samples)

    def num_foregrounds(self, index: int) -> int:
        return self.samples[index].num_foregrounds

    def probe(self, index: int) -> tuple[int, float, int, int]:
        """(frames, fps, width, height) of sample ``index``, its layers checked to agree (no decoding)."""
        return probe_sample(self.samples[index])

    def load(self, index: int, draw: int) -> LayeredVideo:
        """Sample ``index`` fitted to the shape, frame window ``draw``."""
        sample = self.samples[index]
        frames, fps, width, height = self.probe(index)
        if self.shape is None:
            indices, (out_h, out_w), out_fps = list(range(frames)), (height, width), fps
        else:
            indices = self.shape.window(frames, fps, draw)
            out_h, out_w, out_fps = self.shape.height, self.shape.width, self.shape.fps or fps

        def fit(x: np.ndarray) -> np.ndarray:
            return resize_frames(x, out_h, out_w)

        full_src = _decode(sample, sample.full, indices)
        foregrounds, alphas = [], []
        for mask, clip in zip(sample.masks, sample.foregrounds):
            alpha_src = np.clip(_decode(sample, mask, indices).mean(axis=-1), 0.0, 1.0)
            colour = full_src if clip is None else _decode(sample, clip, indices)
            alpha = np.clip(fit(alpha_src), 0.0, 1.0)
            foregrounds.append(unpremultiply(fit(colour * alpha_src[..., None]), alpha))  # see layert2v.data.fit
            alphas.append(alpha)
        full = fit(full_src)
        del full_src
        background = fit(_decode(sample, sample.background, indices))
        return LayeredVideo(full=full, background=background, foregrounds=foregrounds, alphas=alphas,
                            fps=int(out_fps) if float(out_fps).is_integer() else out_fps,
                            prompts={**sample.prompts, "foregrounds": list(sample.prompts["foregrounds"])},
                            metadata={"vidlayer_sample": sample.name, "source_frames": indices})


def write_vidlayer(directory: str | Path, videos: Iterable[LayeredVideo], *, foreground_clips: bool = False,
                   source: str = "synthetic") -> Path:
    """Write layered videos in the (assumed) VidLayer layout under ``directory/source/``: sample ``i`` as
    ``{i:06d}/`` with the original and background clips, one grey mask per foreground, the foreground clips
    (straight colour) when ``foreground_clips``, and the prompts in ``metadata.json``. For tests and rehearsals:
    what the reader reads back is what was written, up to H.264's loss. Each sample is written to a temporary
    directory and renamed into place."""
    root = Path(directory).expanduser() / source
    root.mkdir(parents=True, exist_ok=True)
    for i, video in enumerate(videos):
        final = root / f"{i:06d}"
        if final.exists():
            raise FileExistsError(f"{final} exists; write into an empty directory")
        with atomic_directory(final) as tmp:
            k = video.num_foregrounds
            write_video(tmp / f"{FULL}.mp4", video.full, video.fps)
            write_video(tmp / f"{BACKGROUND}.mp4", video.background, video.fps)
            for j in range(1, k + 1):
                suffix = "" if k == 1 else f"_{j}"
                write_video(tmp / f"{MASK}{suffix}.mp4", np.repeat(video.alphas[j - 1][..., None], 3, -1), video.fps)
                if foreground_clips:
                    write_video(tmp / f"{FOREGROUND}{suffix}.mp4", video.foregrounds[j - 1], video.fps)
            fgs = video.prompts.get("foregrounds", [])
            captions = {"full": video.prompts.get("full", ""), "background": video.prompts.get("background", ""),
                        "foreground": fgs[0] if k == 1 and fgs else fgs}
            (tmp / PROMPT_FILE).write_text(json.dumps({"captions": captions}), encoding="utf-8")
    return Path(directory).expanduser()


def check(directory: str | Path, allow_absolute_paths: bool = False) -> list[str]:
    """One line per unreadable sample (files, prompts, frame counts and sizes; no frame is decoded)."""
    problems = []
    for found in find_samples(_root(directory), allow_absolute_paths):
        try:
            if isinstance(found, VidLayerSampleError):
                raise found
            probe_sample(found)
        except VidLayerSampleError as e:
            problems.append(str(e))
    return problems


if __name__ == "__main__":  # python -m layert2v.data.vidlayer DIR: list the samples that cannot be read
    if len(sys.argv) != 2:
        sys.exit("usage: python -m layert2v.data.vidlayer VIDLAYER_DIR_OR_INDEX.jsonl")
    try:
        found = check(sys.argv[1])
    except FileNotFoundError as e:
        sys.exit(str(e))
    print("\n".join(found) or f"{sys.argv[1]}: every sample is complete")
    sys.exit(1 if found else 0)
