"""The layered-video directory (see docs/OUTPUT.md): one directory per sample, written and read here.

H.264 for the opaque layers, ProRes 4444 (the lossless-enough, authoritative copy) and VP9 (small, browser-friendly)
for each foreground with its alpha, a grey H.264 matte per alpha, the composite, a contact-sheet preview and a
manifest. Foregrounds are written *straight*, like :class:`~layert2v.video.LayeredVideo` holds them. LayeredVideo's
``save`` and ``load`` call this module (video.py imports it, not the other way round: :class:`Layers` says what the
writer reads of a video). The codecs (PyAV) and PIL load when a video is saved or read, so ``import layert2v`` stays
light.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..formats import VIDEO_FORMAT, VIDEO_MANIFEST, VIDEO_VERSION, read_json_object
from ..layout import ALPHA, BACKGROUND, FOREGROUND, FULL, LayerLayout, Segment
from ..output_dirs import atomic_directory, is_no_space

if TYPE_CHECKING:
    from PIL import Image

FORMAT, VERSION, MANIFEST = VIDEO_FORMAT, VIDEO_VERSION, VIDEO_MANIFEST
PREVIEW_MAX_WIDTH = 1600

# Manifest keys owned by the writer; video.metadata may not override them.
_RESERVED = ("format", "version", "prompts", "seed", "fps", "frames", "size", "num_foregrounds", "layer_order",
             "premultiplied", "files")


def digest(frames: np.ndarray) -> str:
    """A fingerprint of a layer's pixels (shape and float32 bytes): equal digests, equal arrays."""
    arr = np.ascontiguousarray(frames, dtype=np.float32)
    h = hashlib.blake2b(repr(arr.shape).encode(), digest_size=20)
    h.update(arr.tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class LayerSource:
    """Where a layer's pixels were decoded from: a saved layered directory, the files that hold the layer there
    (``full.mp4``; ``foreground_k.mov`` and its ``.webm``; ``alpha_k.mp4``), the files' sizes and modification times
    when read, and the :func:`digest` of the pixels decoded. Saving a layer whose pixels still have this digest
    copies these files instead of encoding again, so a kept layer stays bit-identical through save and load."""

    directory: Path
    files: tuple[str, ...]
    stats: tuple[tuple[int, int], ...]  # (size, mtime_ns) per file
    digest: str
    fps: float

    @classmethod
    def of(cls, directory: Path, files: tuple[str, ...], frames: np.ndarray, fps: float) -> LayerSource:
        return cls(directory, files, tuple(_stat(directory / f) for f in files), digest(frames), fps)

    def holds(self, frames: np.ndarray, fps: float) -> bool:
        """True when ``frames`` are the pixels read, at the same frame rate, and the files are unchanged since (so
        a copy of the files is exact)."""
        try:
            unchanged = all(_stat(self.directory / f) == s for f, s in zip(self.files, self.stats))
        except OSError:
            return False
        return unchanged and fps == self.fps and digest(frames) == self.digest


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


class Layers(Protocol):
    """What the writer reads of a layered video (:class:`~layert2v.video.LayeredVideo` is one)."""

    full: np.ndarray
    background: np.ndarray
    foregrounds: list[np.ndarray]
    alphas: list[np.ndarray]
    fps: float
    prompts: dict[str, Any]
    seed: int | None
    metadata: dict[str, Any]
    sources: dict[str, LayerSource]

    @property
    def num_foregrounds(self) -> int: ...

    @property
    def num_frames(self) -> int: ...

    @property
    def size(self) -> tuple[int, int]: ...

    @property
    def layout(self) -> LayerLayout: ...

    def composite(self) -> np.ndarray: ...


def layer_frames(video: Layers) -> dict[str, np.ndarray]:
    """Segment name -> the frames of that layer, in the layout's order."""
    return dict(zip(video.layout.names, [video.full, video.background, *video.foregrounds, *video.alphas]))


# ------------------------------------------------------------------------------------------- preview
def checkerboard(h: int, w: int, tile: int = 8) -> np.ndarray:
    """The grey checkerboard editors show behind transparency, (h, w, 3) float32."""
    if tile < 1:
        raise ValueError(f"tile must be >= 1, got {tile}")
    yy, xx = np.mgrid[0:h, 0:w]
    light = ((yy // tile + xx // tile) % 2 == 0)
    board = np.where(light, 0.8, 0.6).astype(np.float32)
    return np.repeat(board[..., None], 3, axis=-1)


def preview_frames(num_frames: int, rows: int = 4) -> list[int]:
    """The frames the contact sheet shows: `rows` evenly spaced ones, first and last included."""
    return [int(i) for i in np.unique(np.linspace(0, num_frames - 1, min(rows, num_frames)).round().astype(int))]


def contact_sheet(video: Layers, rows: int = 4, max_width: int = PREVIEW_MAX_WIDTH,
                  labels: list[int] | None = None) -> Image.Image:
    """A few evenly spaced frames (rows) x every layer in the layout's order (columns): full | background | fg_k
    over a checkerboard | alpha_k, so a sample can be judged at a glance without a video player. With ``labels``,
    ``video`` holds only the frames to show (as :class:`LayeredWriter` keeps them), numbered by ``labels``."""
    from PIL import Image, ImageDraw, ImageFont

    from .codec import to_integer

    t, h, w, _ = video.full.shape
    segments = video.layout.segments
    layers = layer_frames(video)
    ncols, gap, header = len(segments), 4, 16
    cell_w = min(max(w, 128), (max_width - gap * (ncols + 1)) // ncols)
    cell_w = max(8, min(cell_w, round(400 * w / h)))  # cap the cell height at ~400 px
    cell_h = max(1, round(cell_w * h / w))
    frame_ids = preview_frames(t, rows) if labels is None else list(range(t))
    labels = frame_ids if labels is None else labels
    board = checkerboard(h, w, tile=max(4, min(h, w) // 12))

    def cell(segment: Segment, i: int) -> np.ndarray:
        frame = layers[segment.name][i]
        if segment.kind == FOREGROUND:  # over the checkerboard
            a = layers[segment.partner][i][..., None]
            return frame * a + board * (1.0 - a)
        return np.repeat(frame[..., None], 3, axis=-1) if segment.kind == ALPHA else frame

    sheet = Image.new("RGB", (ncols * cell_w + (ncols + 1) * gap, header + len(frame_ids) * (cell_h + gap) + gap),
                      (32, 32, 32))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for c, segment in enumerate(segments):
        label = segment.name.replace(FOREGROUND, "fg").replace("_", " ")
        draw.text((gap + c * (cell_w + gap) + 2, 2), label, fill=(230, 230, 230), font=font)
    resample = Image.Resampling.LANCZOS if cell_w < w else Image.Resampling.NEAREST
    for r, i in enumerate(frame_ids):
        y = header + r * (cell_h + gap)
        for c, segment in enumerate(segments):
            img = Image.fromarray(to_integer(cell(segment, i))).resize((cell_w, cell_h), resample)
            sheet.paste(img, (gap + c * (cell_w + gap), y))
        box = draw.textbbox((gap + 3, y + 2), f"t={labels[r]}", font=font)
        draw.rectangle((box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1), fill=(0, 0, 0))
        draw.text((gap + 3, y + 2), f"t={labels[r]}", fill=(255, 255, 0), font=font)
    return sheet


# -------------------------------------------------------------------------------------------- manifest
def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (Path, os.PathLike)):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"manifest value of type {type(obj).__name__} is not JSON serialisable: {obj!r}")


def _file_names(k: int) -> dict[str, str]:
    """Manifest "files": each layer name of LayerLayout(K).names -> its authoritative file, plus extras."""
    layout = LayerLayout(k)
    files = {name: f"{name}.{'mov' if layout.segment(name).kind == FOREGROUND else 'mp4'}" for name in layout.names}
    for i in layout.composite_order:
        files[f"{layout.foreground_name(i)}_webm"] = f"{layout.foreground_name(i)}.webm"
    files["composite"] = "composite.mp4"
    files["preview"] = "preview.png"
    return files


def _manifest(k: int, frames: int, size: tuple[int, int], fps: float, prompts: dict[str, Any], seed: int | None,
              metadata: dict[str, Any]) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "prompts": prompts,
        "seed": seed,
        "fps": fps,
        "frames": frames,
        "size": list(size),
        "num_foregrounds": k,
        "layer_order": LayerLayout(k).names,
        "premultiplied": False,
        "files": _file_names(k),
    }
    def same(a: Any, b: Any) -> bool:  # via JSON, so numpy values compare without ambiguity
        return json.dumps(a, default=_json_default, sort_keys=True) == json.dumps(b, default=_json_default,
                                                                                  sort_keys=True)

    clashes = [key for key in metadata if key in manifest and not same(metadata[key], manifest[key])]
    if clashes:
        raise ValueError(f"metadata key(s) {clashes} clash with manifest fields {list(_RESERVED)}; rename them")
    manifest.update({key: v for key, v in metadata.items() if key not in manifest})
    return manifest


def _manifest_text(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, indent=2, default=_json_default) + "\n"


# ---------------------------------------------------------------------------------------- save / load
def save_layered_video(video: Layers, directory: str | Path, overwrite: bool = False) -> Path:
    """Write every layer file, the preview and manifest.json into `directory`, atomically.

    Everything is written into a hidden sibling directory first and renamed into place at the end, so a crash
    or error never leaves a half-written sample; with overwrite=True the old directory is replaced only once the
    new one is complete. Returns the directory's path. (:class:`LayeredWriter` with the whole clip as one chunk.)
    """
    target = Path(directory).expanduser().absolute()
    _check_size(video.size)
    for name, arr in layer_frames(video).items():
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} contains NaN or infinite values; refusing to save")
    fields = (video.prompts, video.seed, video.metadata)
    text = _manifest_text(_manifest(video.num_foregrounds, video.num_frames, video.size, video.fps, *fields))
    extras = {}
    if "trajectory" in video.metadata:  # requested boxes (what `layert2v eval` scores) and their overlay
        from ..trajectory import trajectory_files

        extras = trajectory_files(video)
    copies = kept_files(video)  # layers read from a saved directory and unchanged since: their files are copied
    with LayeredWriter(target, video.num_foregrounds, video.num_frames, video.size, video.fps, overwrite,
                       copies) as writer:
        try:
            writer.add(video)
            writer.finish(*fields, extras=extras)
        except OSError as e:
            if is_no_space(e):  # say what the whole directory needs (atomic_directory names the device)
                with contextlib.suppress(Exception):
                    e.needed = _bytes_needed(video, copies, extras, text)
            raise
    return target


def _bytes_needed(video: Layers, copies: dict[str, list[Path]], extras: dict[str, bytes], manifest_text: str) -> int:
    """The bytes :func:`save_layered_video` writes for ``video``, found without the disk: each file encoded in
    memory, kept layers' files by their size, the preview, ``extras`` and the manifest."""
    from .codec import encoded_size

    files = _file_names(video.num_foregrounds)

    def encoded(name: str, frames: np.ndarray, codec: str) -> int:
        return encoded_size(Path(files[name]).suffix, frames, video.fps, codec)

    def copied(name: str) -> int:
        return sum(p.stat().st_size for p in copies[name])

    total = sum(copied(name) if name in copies else encoded(name, frames, "libx264")
                for name, frames in ((FULL, video.full), (BACKGROUND, video.background)))
    for i, (fg, a) in enumerate(zip(video.foregrounds, video.alphas), start=1):
        name = LayerLayout.foreground_name(i)
        if name in copies:
            total += copied(name)
            continue
        rgba = np.concatenate([fg, a[..., None]], axis=-1)
        total += (encoded(name, rgba, "prores_ks") + encoded(f"{name}_webm", rgba, "libvpx-vp9")
                  + encoded(LayerLayout.alpha_name(i), np.repeat(a[..., None], 3, axis=-1), "libx264"))
    total += encoded("composite", video.composite(), "libx264")
    total += len(_png_bytes(contact_sheet(video)))
    return total + sum(len(data) for data in extras.values()) + len(manifest_text.encode("utf-8"))


def _png_bytes(image: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _check_size(size: tuple[int, int]) -> None:
    w, h = size
    if h % 2 or w % 2:
        raise ValueError(f"video size {w}x{h} must have even width and height for H.264/VP9 (4:2:0); crop or pad it")


class LayeredWriter:
    """A layered directory written chunk by chunk: the files, preview and manifest of :func:`save_layered_video`,
    for a clip that is never in memory whole (``layert2v decompose --method engine`` streams its windows here).

    ::

        with LayeredWriter(out, num_foregrounds=1, frames=240, size=(1920, 1080), fps=24) as writer:
            for chunk in chunks:          # LayeredVideo of a few consecutive frames each
                writer.add(chunk)
            writer.finish(prompts, seed, metadata)

    Every file is open for the whole run (one encoder per file) in a hidden sibling of ``directory``
    (:func:`~layert2v.output_dirs.atomic_directory`); ``finish`` writes the preview from the frames it kept and the
    manifest last, and the directory is renamed into place when the ``with`` block ends. An error, or leaving the
    block without ``finish``, leaves nothing behind. ``copies`` (layer name -> files, from :func:`kept_files`) are
    copied instead of encoded.
    """

    def __init__(self, directory: str | Path, num_foregrounds: int, frames: int, size: tuple[int, int],
                 fps: float, overwrite: bool = False, copies: dict[str, list[Path]] | None = None):
        _check_size(size)
        self.directory = Path(directory).expanduser().absolute()
        self.k, self.frames, self.size, self.fps = num_foregrounds, frames, tuple(size), fps
        self.overwrite, self.copies = overwrite, copies or {}
        self.written = 0
        self._show = preview_frames(frames)
        self._kept: list[Layers] = []  # the preview's frames, one single-frame chunk each
        self._writers: dict[str, Any] = {}
        self._stack = contextlib.ExitStack()
        self._tmp: Path | None = None
        self._finished = False

    def __enter__(self) -> LayeredWriter:
        from .codec import VideoWriter

        self._tmp = self._stack.enter_context(atomic_directory(self.directory, self.overwrite, marker=MANIFEST))
        files = _file_names(self.k)
        for name in (FULL, BACKGROUND):
            if name not in self.copies:
                self._writers[name] = VideoWriter(self._tmp / files[name], self.fps, "libx264")
        for i in range(1, self.k + 1):
            fg = LayerLayout.foreground_name(i)
            if fg not in self.copies:
                self._writers[fg] = VideoWriter(self._tmp / files[fg], self.fps, "prores_ks")
                self._writers[f"{fg}_webm"] = VideoWriter(self._tmp / files[f"{fg}_webm"], self.fps, "libvpx-vp9")
                self._writers[LayerLayout.alpha_name(i)] = VideoWriter(self._tmp / files[LayerLayout.alpha_name(i)],
                                                                       self.fps, "libx264")
        self._writers["composite"] = VideoWriter(self._tmp / files["composite"], self.fps, "libx264")
        return self

    def add(self, chunk: Layers) -> None:
        """Encode the next frames: ``chunk`` holds them as a layered video (its size and foreground count this
        writer's)."""
        if self._tmp is None:
            raise RuntimeError("use LayeredWriter in a with block")
        if chunk.num_foregrounds != self.k or tuple(chunk.size) != self.size:
            raise ValueError(f"a chunk of {chunk.num_foregrounds} foreground(s) at {chunk.size[0]}x{chunk.size[1]} "
                             f"for a video of {self.k} at {self.size[0]}x{self.size[1]}")
        if self.written + chunk.num_frames > self.frames:
            raise ValueError(f"more than the {self.frames} frames this video was opened for")
        for name, arr in layer_frames(chunk).items():
            if not np.isfinite(arr).all():
                raise ValueError(f"{name} contains NaN or infinite values; refusing to save")
        w = self._writers
        for name, frames in ((FULL, chunk.full), (BACKGROUND, chunk.background)):
            if name in w:
                w[name].write(frames)
        for i, (fg, a) in enumerate(zip(chunk.foregrounds, chunk.alphas), start=1):
            name = LayerLayout.foreground_name(i)
            if name in w:
                rgba = np.concatenate([fg, a[..., None]], axis=-1)
                w[name].write(rgba)
                w[f"{name}_webm"].write(rgba)
                w[LayerLayout.alpha_name(i)].write(np.repeat(a[..., None], 3, axis=-1))
        w["composite"].write(chunk.composite())
        for t in range(chunk.num_frames):
            if self.written + t in self._show:
                self._kept.append(dataclasses.replace(  # copies: a view would keep the whole chunk alive
                    chunk, full=chunk.full[t:t + 1].copy(), background=chunk.background[t:t + 1].copy(),
                    foregrounds=[f[t:t + 1].copy() for f in chunk.foregrounds],
                    alphas=[a[t:t + 1].copy() for a in chunk.alphas]))
        self.written += chunk.num_frames

    def finish(self, prompts: dict[str, Any], seed: int | None, metadata: dict[str, Any],
               extras: dict[str, bytes] | None = None) -> None:
        """Close the files, copy the kept layers' files, write the preview, ``extras`` (file name -> bytes) and,
        last, the manifest. The frames written must be the ``frames`` the writer was opened for."""
        if self.written != self.frames:
            raise ValueError(f"{self.written} frames were written to a video opened for {self.frames}")
        text = _manifest_text(_manifest(self.k, self.frames, self.size, self.fps, prompts, seed, metadata))
        for writer in self._writers.values():
            writer.close()
        files = _file_names(self.k)
        for name, sources in self.copies.items():
            names = [files[name]] if name in (FULL, BACKGROUND) else \
                [files[name], files[f"{name}_webm"], files[LayerLayout.alpha_name(Segment.from_name(name).index)]]
            _copy(sources, self._tmp, names)
        first = self._kept[0]
        shown = dataclasses.replace(first, full=np.concatenate([c.full for c in self._kept]),
                                    background=np.concatenate([c.background for c in self._kept]),
                                    foregrounds=[np.concatenate([c.foregrounds[i] for c in self._kept])
                                                 for i in range(self.k)],
                                    alphas=[np.concatenate([c.alphas[i] for c in self._kept]) for i in range(self.k)])
        (self._tmp / files["preview"]).write_bytes(_png_bytes(contact_sheet(shown, labels=self._show)))
        for name, data in (extras or {}).items():
            (self._tmp / name).write_bytes(data)
        (self._tmp / MANIFEST).write_text(text, encoding="utf-8")  # last: its presence marks completion
        self._finished = True

    def __exit__(self, kind, error, trace) -> bool:
        for writer in self._writers.values():
            writer.abort()  # closed already when finished; after an error the files go with the directory
        if kind is None and not self._finished:
            unfinished = RuntimeError("LayeredWriter left without finish(); nothing was written")
            self._stack.__exit__(RuntimeError, unfinished, None)  # removes the temporary directory
            raise unfinished
        self._stack.__exit__(kind, error, trace)  # renames it into place, or removes it after an error
        return False


def kept_files(video: Layers) -> dict[str, list[Path]]:
    """Layers of ``video`` still holding exactly the pixels :func:`read_layers` read from a saved directory
    (``video.sources``), whose files there are unchanged and at the same frame rate: layer name -> the files to copy,
    in the order the writer names them (full / background: the one H.264 file; foreground_k: its ``.mov``, its
    ``.webm`` and ``alpha_k.mp4``, which needs alpha_k read from that same ``.mov`` too). Decoding a copied file
    gives what decoding the source gave, so a kept layer stays bit-identical through save and load, where encoding
    its decoded pixels again would lose a little more each time."""
    out: dict[str, list[Path]] = {}
    for name, frames in [(FULL, video.full), (BACKGROUND, video.background)]:
        source = video.sources.get(name)
        if source is not None and source.holds(frames, video.fps):
            out[name] = [source.directory / f for f in source.files]
    for k, (fg, a) in enumerate(zip(video.foregrounds, video.alphas), start=1):
        fg_source = video.sources.get(LayerLayout.foreground_name(k))
        alpha_source = video.sources.get(LayerLayout.alpha_name(k))
        if fg_source is None or alpha_source is None or fg_source.directory != alpha_source.directory:
            continue
        if fg_source.files[0] != alpha_source.files[0]:  # both must come from the same .mov
            continue
        if fg_source.holds(fg, video.fps) and alpha_source.holds(a, video.fps):
            out[LayerLayout.foreground_name(k)] = [fg_source.directory / f for f in
                                                   (*fg_source.files, alpha_source.files[1])]
    return out


def _copy(sources: list[Path], directory: Path, names: list[str]) -> None:
    for source, name in zip(sources, names, strict=True):
        shutil.copyfile(source, directory / name)


def _load_manifest(directory: Path) -> dict[str, Any]:
    if not directory.exists():
        raise FileNotFoundError(f"no such directory: {directory}")
    if not directory.is_dir():
        raise NotADirectoryError(f"{directory} is not a directory")
    path = directory / MANIFEST
    if not path.is_file():
        raise ValueError(f"{directory} is not a saved layered video (no {MANIFEST}); give a directory written by "
                         "`layert2v generate`, `decompose` or `edit`")
    manifest = read_json_object(path)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not a layered-video manifest (format is not {FORMAT!r})")
    if not isinstance(manifest.get("version"), int) or manifest["version"] > VERSION:
        raise ValueError(f"{path} has version {manifest.get('version')!r}; this layert2v reads up to {VERSION}")
    missing = [key for key in ("fps", "frames", "size", "num_foregrounds", "files") if key not in manifest]
    if missing:
        raise ValueError(f"{path} lacks field(s) {missing}")
    k = manifest["num_foregrounds"]
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"{path}: num_foregrounds must be an integer >= 1, got {k!r}")
    size, frames, fps = manifest["size"], manifest["frames"], manifest["fps"]
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise ValueError(f"{path}: size must be [width, height] in pixels, got {size!r}")
    if not isinstance(frames, int) or frames < 1:
        raise ValueError(f"{path}: frames must be an integer >= 1, got {frames!r}")
    if not isinstance(fps, (int, float)) or isinstance(fps, bool) or not 0 < fps < 1e4:
        raise ValueError(f"{path}: fps must be a positive number, got {fps!r}")
    if not isinstance(manifest["files"], dict):
        raise ValueError(f"{path}: files must map layer names to file names")
    if manifest.get("layer_order", LayerLayout(k).names) != LayerLayout(k).names:
        raise ValueError(f"{path}: layer_order {manifest['layer_order']} does not match {k} foreground(s)")
    return manifest


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The checked manifest of a saved layered video, without decoding anything: a one-line error when
    ``directory`` is not one."""
    return _load_manifest(Path(directory).expanduser())


def read_layers(directory: str | Path) -> dict[str, Any]:
    """Read a directory written by :func:`save_layered_video`: the fields of a
    :class:`~layert2v.video.LayeredVideo` (``LayeredVideo.load`` makes one of them), ``sources`` included.

    Foreground RGB and alpha come from the ProRes 4444 .mov files (10-bit, 4:4:4, near-lossless alpha);
    the .webm and alpha_k.mp4 copies are for people, not for round trips.
    """
    import av

    from .codec import read_video, read_video_rgba

    directory = Path(directory).expanduser()
    manifest = _load_manifest(directory)
    k = manifest["num_foregrounds"]
    files = manifest["files"]
    expected = (manifest["frames"], *reversed(manifest["size"]))

    def path_of(layer: str) -> Path:
        name = files.get(layer) if isinstance(files, dict) else None
        if not name or not isinstance(name, str):
            raise ValueError(f"{directory / MANIFEST} lists no file for {layer}")
        path = directory / name
        inside = path.resolve().parent == directory.resolve()  # no "..", absolute paths or links out of it
        if Path(name).name != name or name in (".", "..") or not inside:
            raise ValueError(f"{directory / MANIFEST} names {name!r} for {layer}, which is not a file inside "
                             f"{directory}; a layered video reads only its own files")
        if not path.is_file():
            raise FileNotFoundError(f"{directory} is missing {name} (listed in {MANIFEST})")
        return path

    def checked(path: Path, arr: np.ndarray) -> np.ndarray:
        if arr.shape[:3] != tuple(expected):
            raise ValueError(f"{path.name} decodes to {arr.shape[0]} frames of {arr.shape[2]}x{arr.shape[1]}, but "
                             f"{MANIFEST} says {expected[0]} frames of {expected[2]}x{expected[1]}")
        return arr

    def decode(layer: str, alpha: bool) -> Any:
        path = path_of(layer)
        try:
            result = read_video_rgba(path) if alpha else read_video(path)
        except av.FFmpegError as e:
            raise ValueError(f"cannot decode {path}: {e}") from e
        return (checked(path, result[0]), result[1]) if alpha else checked(path, result)

    layout = LayerLayout(k)
    for layer in layout.rgb_names:  # report a missing file before spending minutes decoding the others
        path_of(layer)
    layers = {FULL: decode(FULL, alpha=False), BACKGROUND: decode(BACKGROUND, alpha=False)}
    for i in layout.composite_order:
        layers[layout.foreground_name(i)], layers[layout.alpha_name(i)] = decode(layout.foreground_name(i), True)
    return {"full": layers[FULL], "background": layers[BACKGROUND],
            "foregrounds": [layers[layout.foreground_name(i)] for i in layout.composite_order],
            "alphas": [layers[layout.alpha_name(i)] for i in layout.composite_order],
            "fps": manifest["fps"], "prompts": manifest.get("prompts") or {}, "seed": manifest.get("seed"),
            "metadata": {key: v for key, v in manifest.items() if key not in _RESERVED},
            "sources": _sources(directory, files, layers, layout, manifest["fps"])}


def _sources(directory: Path, files: dict[str, Any], layers: dict[str, np.ndarray], layout: LayerLayout,
             fps: float) -> dict[str, LayerSource]:
    """:class:`LayerSource` of each layer whose files (see :func:`kept_files`) are all present."""

    def present(*keys: str) -> tuple[str, ...] | None:
        names = tuple(files.get(key) for key in keys)
        ok = all(isinstance(n, str) and Path(n).name == n and (directory / n).is_file() for n in names)
        return names if ok else None

    directory = directory.absolute()
    out = {}
    for name in (FULL, BACKGROUND):
        if (names := present(name)) is not None:
            out[name] = LayerSource.of(directory, names, layers[name], fps)
    for k in layout.composite_order:
        fg, alpha = LayerLayout.foreground_name(k), LayerLayout.alpha_name(k)
        fg_files, alpha_files = present(fg, f"{fg}_webm"), present(fg, alpha)
        if fg_files is not None and alpha_files is not None:
            out[fg] = LayerSource.of(directory, fg_files, layers[fg], fps)
            out[alpha] = LayerSource.of(directory, alpha_files, layers[alpha], fps)
    return out
