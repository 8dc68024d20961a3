"""Reading and writing layered videos (see docs/OUTPUT.md for the directory layout).

One directory per sample: H.264 for the opaque layers, ProRes 4444 (the lossless-enough, authoritative copy)
and VP9 (small, browser-friendly) for each foreground with its alpha, a grey H.264 matte per alpha, the
composite, a contact-sheet preview and a manifest. Foregrounds are written *straight*, like LayeredVideo holds them.

Colour: every YUV file is tagged and converted as BT.709, limited ("tv") range, so that ffmpeg, browsers and
editors agree with what :func:`read_video` returns. The swscale flags below matter: without full-chroma
interpolation and accurate rounding, RGB <-> 4:2:0 alone costs ~10 dB of PSNR on smooth content.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, Interpolation
from PIL import Image, ImageDraw, ImageFont

from .formats import VIDEO_FORMAT, VIDEO_MANIFEST, VIDEO_VERSION
from .layout import BACKGROUND, FOREGROUND, FULL, LayerLayout
from .output_dirs import atomic_directory

if TYPE_CHECKING:
    from .video import LayeredVideo

FORMAT, VERSION, MANIFEST = VIDEO_FORMAT, VIDEO_VERSION, VIDEO_MANIFEST
PREVIEW_MAX_WIDTH = 1600

# Manifest keys owned by the writer; video.metadata may not override them.
_RESERVED = ("format", "version", "prompts", "seed", "fps", "frames", "size", "num_foregrounds", "layer_order",
             "premultiplied", "files")

_SWS_FLAGS = (Interpolation.BICUBIC | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INP
              | Interpolation.FULL_CHR_H_INT)
_BT709 = 1  # AVCOL_SPC/PRI/TRC_BT709: the tags written into every YUV stream
_RANGE_TV = 1  # AVCOL_RANGE_MPEG

# AVColorSpace (what decoded frames carry) -> swscale colorspace. Unknown/unspecified falls back to BT.601,
# which is what ffmpeg itself assumes.
_FRAME_TO_SWS = {1: Colorspace.ITU709, 4: Colorspace.FCC, 5: Colorspace.ITU601, 6: Colorspace.ITU601,
                 7: Colorspace.SMPTE240M, 9: Colorspace.BT2020, 10: Colorspace.BT2020}


@dataclass(frozen=True)
class _Codec:
    encoder: str
    pix_fmt: str  # for RGB input
    alpha_pix_fmt: str | None  # for RGBA input; None: the codec cannot carry alpha
    deep: bool  # feed 16-bit RGB(A) so 10-bit codecs get their precision
    options: dict[str, str] = field(default_factory=dict)

    @property
    def subsampled(self) -> bool:
        return "420" in self.pix_fmt


_CODECS = {
    "libx264": _Codec("libx264", "yuv420p", None, False, {"crf": "12", "preset": "medium"}),
    # profile "4" is 4444 (prores_ks numbers its profiles 0..5); alpha_bits defaults to 16. vendor apl0 keeps
    # some Apple software from rejecting the file.
    "prores_ks": _Codec("prores_ks", "yuv444p10le", "yuva444p10le", True, {"profile": "4", "vendor": "apl0"}),
    # crf with b=0 is libvpx's constant-quality mode; cpu-used 4 keeps long clips from taking minutes.
    "libvpx-vp9": _Codec("libvpx-vp9", "yuv420p", "yuva420p", False,
                         {"crf": "15", "b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"}),
}


# --------------------------------------------------------------------------------------------- helpers
def checkerboard(h: int, w: int, tile: int = 8) -> np.ndarray:
    """The grey checkerboard editors show behind transparency, (h, w, 3) float32."""
    if tile < 1:
        raise ValueError(f"tile must be >= 1, got {tile}")
    yy, xx = np.mgrid[0:h, 0:w]
    light = ((yy // tile + xx // tile) % 2 == 0)
    board = np.where(light, 0.8, 0.6).astype(np.float32)
    return np.repeat(board[..., None], 3, axis=-1)


def _to_integer(frames: np.ndarray, deep: bool) -> np.ndarray:
    """Float [0,1] or uint8 frames -> uint8, or uint16 when the codec has more than 8 bits to fill."""
    frames = np.asarray(frames)
    if frames.dtype == np.uint8:
        return frames.astype(np.uint16) * 257 if deep else frames
    if not np.issubdtype(frames.dtype, np.floating):
        raise TypeError(f"frames must be uint8 or float in [0, 1], got dtype {frames.dtype}")
    if not np.isfinite(frames).all():
        raise ValueError("frames contain NaN or infinite values")
    scale = 65535.0 if deep else 255.0
    out = np.rint(np.clip(frames, 0.0, 1.0) * scale)
    return out.astype(np.uint16 if deep else np.uint8)


def write_video(path: str | Path, frames: np.ndarray, fps: float, codec: str = "libx264",
                options: dict[str, str] | None = None) -> Path:
    """Encode (T, H, W, 3) RGB or (T, H, W, 4) straight RGBA frames (uint8, or float in [0, 1]).

    `codec` is libx264, prores_ks (4444) or libvpx-vp9; `options` override the codec defaults.
    4:2:0 codecs need even width and height.
    """
    path = Path(path)
    spec = _CODECS.get(codec)
    if spec is None:
        raise ValueError(f"unsupported codec {codec!r}; choose from {sorted(_CODECS)}")
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] not in (3, 4) or frames.shape[0] == 0:
        raise ValueError(f"frames must be (T, H, W, 3) or (T, H, W, 4) with T >= 1, got {frames.shape}")
    t, h, w, c = frames.shape
    pix_fmt = spec.pix_fmt if c == 3 else spec.alpha_pix_fmt
    if pix_fmt is None:
        raise ValueError(f"{spec.encoder} cannot store alpha; pass RGB frames or use prores_ks / libvpx-vp9")
    if spec.subsampled and (h % 2 or w % 2):
        raise ValueError(f"{spec.encoder} ({pix_fmt}) needs even width and height, got {w}x{h}")
    data = _to_integer(frames, spec.deep)
    in_fmt = {(3, False): "rgb24", (4, False): "rgba", (3, True): "rgb48le", (4, True): "rgba64le"}[c, spec.deep]

    rate = Fraction(fps).limit_denominator(1_000_000)
    container_options = {"movflags": "+faststart"} if path.suffix.lower() in (".mp4", ".mov") else {}
    with av.open(str(path), "w", options=container_options) as container:
        stream = container.add_stream(spec.encoder, rate=rate, time_base=1 / rate)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        stream.options = {**spec.options, **(options or {})}
        ctx = stream.codec_context
        ctx.colorspace, ctx.color_primaries, ctx.color_trc, ctx.color_range = _BT709, _BT709, _BT709, _RANGE_TV
        for i in range(t):
            frame = av.VideoFrame.from_ndarray(data[i], format=in_fmt)
            frame = frame.reformat(format=pix_fmt, src_colorspace=Colorspace.ITU709, dst_colorspace=Colorspace.ITU709,
                                   src_color_range=ColorRange.JPEG, dst_color_range=ColorRange.MPEG,
                                   dst_color_trc=_BT709, dst_color_primaries=_BT709, interpolation=_SWS_FLAGS)
            frame.pts = i
            frame.time_base = 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def _decoded_frames(path: Path) -> Iterator[av.VideoFrame]:
    """Decode the first video stream. VP9 with alpha goes through libvpx: FFmpeg's native vp9 decoder
    silently drops the alpha channel (it lives in WebM BlockAdditional side data)."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path.name} has no video stream")
        stream = container.streams.video[0]
        if stream.codec_context.name == "vp9" and stream.metadata.get("alpha_mode") == "1":
            decoder = av.codec.CodecContext.create("libvpx-vp9", "r")
            for packet in container.demux(stream):  # the last packet is empty and flushes the decoder
                yield from decoder.decode(packet)
        else:
            yield from container.decode(stream)


def _frame_to_array(frame: av.VideoFrame, alpha: bool) -> np.ndarray:
    """One decoded frame -> float32 RGB(A) in [0, 1], honouring the colour tags the stream carries."""
    out_fmt = "rgba64le" if alpha else "rgb48le"
    if frame.format.is_rgb:
        rgb = frame.reformat(format=out_fmt)
    else:
        space = _FRAME_TO_SWS.get(int(frame.colorspace), Colorspace.ITU601)
        full = int(frame.color_range) == 2 or frame.format.name.startswith("yuvj")
        rgb = frame.reformat(format=out_fmt, src_colorspace=space, dst_colorspace=space,
                             src_color_range=ColorRange.JPEG if full else ColorRange.MPEG,
                             dst_color_range=ColorRange.JPEG, interpolation=_SWS_FLAGS)
    return rgb.to_ndarray().astype(np.float32) / 65535.0


def _read(path: str | Path, alpha: bool) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such video file: {path}")
    frames = [_frame_to_array(f, alpha) for f in _decoded_frames(path)]
    if not frames:
        raise ValueError(f"{path.name} contains no video frames")
    return np.stack(frames)


def read_video(path: str | Path) -> np.ndarray:
    """Decode a video to float32 RGB (T, H, W, 3) in [0, 1]."""
    return _read(path, alpha=False)


def read_video_rgba(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Decode a video with alpha (ProRes 4444 .mov, VP9 .webm) to straight RGB (T, H, W, 3) and alpha (T, H, W).

    Raises ValueError when the stream has no alpha channel, rather than returning an opaque matte.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such video file: {path}")
    frames = []
    for frame in _decoded_frames(path):
        if len(frame.format.components) != 4:
            raise ValueError(f"{path.name} has no alpha channel (decoded as {frame.format.name})")
        frames.append(_frame_to_array(frame, alpha=True))
    if not frames:
        raise ValueError(f"{path.name} contains no video frames")
    rgba = np.stack(frames)
    return rgba[..., :3], rgba[..., 3]


def video_info(path: str | Path) -> tuple[int, float, int, int]:
    """(frame count, frame rate, width, height) of a video's first stream, without decoding frames (the count
    comes from the container, or from counting packets where the container does not say)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such video file: {path}")
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path.name} has no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        if not rate:
            raise ValueError(f"{path.name} does not say its frame rate")
        frames = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
        return frames, float(rate), stream.codec_context.width, stream.codec_context.height


def read_frames(path: str | Path, indices: list[int]) -> np.ndarray:
    """Decode only frames ``indices`` (in that order, repeats allowed) of a video to float32 RGB (T, H, W, 3) in
    [0, 1]: a long clip's unused frames are decoded but never converted or kept."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such video file: {path}")
    wanted, last = set(indices), max(indices)
    kept: dict[int, np.ndarray] = {}
    decoded = 0
    frames = _decoded_frames(path)
    try:
        for frame in frames:
            if decoded in wanted:
                kept[decoded] = _frame_to_array(frame, alpha=False)
            decoded += 1
            if decoded > last:
                break
    finally:
        frames.close()  # closes the container now, not when the generator is collected
    if decoded <= last:
        raise ValueError(f"{path.name} has {decoded} decodable frames; frame {last} was asked for")
    return np.stack([kept[i] for i in indices])


# ------------------------------------------------------------------------------------------- preview
def contact_sheet(video: LayeredVideo, rows: int = 4, max_width: int = PREVIEW_MAX_WIDTH) -> Image.Image:
    """A few evenly spaced frames (rows) x every layer (columns): full | background | fg_k over a checkerboard
    | alpha_k, so a sample can be judged at a glance without a video player."""
    t, h, w, _ = video.full.shape
    k = video.num_foregrounds
    names = ["full", "background", *(f"fg {i}" for i in range(1, k + 1)), *(f"alpha {i}" for i in range(1, k + 1))]
    ncols, gap, header = len(names), 4, 16
    cell_w = min(max(w, 128), (max_width - gap * (ncols + 1)) // ncols)
    cell_w = max(8, min(cell_w, round(400 * w / h)))  # cap the cell height at ~400 px
    cell_h = max(1, round(cell_w * h / w))
    frame_ids = np.unique(np.linspace(0, t - 1, min(rows, t)).round().astype(int))
    board = checkerboard(h, w, tile=max(4, min(h, w) // 12))

    sheet = Image.new("RGB", (ncols * cell_w + (ncols + 1) * gap, header + len(frame_ids) * (cell_h + gap) + gap),
                      (32, 32, 32))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for c, name in enumerate(names):
        draw.text((gap + c * (cell_w + gap) + 2, 2), name, fill=(230, 230, 230), font=font)
    resample = Image.Resampling.LANCZOS if cell_w < w else Image.Resampling.NEAREST
    for r, i in enumerate(frame_ids):
        cells = [video.full[i], video.background[i]]
        cells += [fg[i] * a[i][..., None] + board * (1.0 - a[i][..., None]) for fg, a in
                  zip(video.foregrounds, video.alphas)]
        cells += [np.repeat(a[i][..., None], 3, axis=-1) for a in video.alphas]
        y = header + r * (cell_h + gap)
        for c, cell in enumerate(cells):
            img = Image.fromarray(_to_integer(cell, deep=False)).resize((cell_w, cell_h), resample)
            sheet.paste(img, (gap + c * (cell_w + gap), y))
        box = draw.textbbox((gap + 3, y + 2), f"t={i}", font=font)
        draw.rectangle((box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1), fill=(0, 0, 0))
        draw.text((gap + 3, y + 2), f"t={i}", fill=(255, 255, 0), font=font)
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


def _manifest(video: LayeredVideo) -> dict[str, Any]:
    k = video.num_foregrounds
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "prompts": video.prompts,
        "seed": video.seed,
        "fps": video.fps,
        "frames": video.num_frames,
        "size": list(video.size),
        "num_foregrounds": k,
        "layer_order": LayerLayout(k).names,
        "premultiplied": False,
        "files": _file_names(k),
    }
    def same(a: Any, b: Any) -> bool:  # via JSON, so numpy values compare without ambiguity
        return json.dumps(a, default=_json_default, sort_keys=True) == json.dumps(b, default=_json_default,
                                                                                  sort_keys=True)

    clashes = [key for key in video.metadata if key in manifest and not same(video.metadata[key], manifest[key])]
    if clashes:
        raise ValueError(f"metadata key(s) {clashes} clash with manifest fields {list(_RESERVED)}; rename them")
    manifest.update({key: v for key, v in video.metadata.items() if key not in manifest})
    return manifest


# ---------------------------------------------------------------------------------------- save / load
def save_layered_video(video: LayeredVideo, directory: str | Path, overwrite: bool = False) -> Path:
    """Write every layer file, the preview and manifest.json into `directory`, atomically.

    Everything is written into a hidden sibling directory first and renamed into place at the end, so a crash
    or error never leaves a half-written sample; with overwrite=True the old directory is replaced only once the
    new one is complete. Returns the directory's path.
    """
    target = Path(directory).expanduser().absolute()
    w, h = video.size
    if h % 2 or w % 2:
        raise ValueError(f"video size {w}x{h} must have even width and height for H.264/VP9 (4:2:0); crop or pad it")
    for name, arr in [(FULL, video.full), (BACKGROUND, video.background),
                      *((LayerLayout.foreground_name(i), f) for i, f in enumerate(video.foregrounds, 1)),
                      *((LayerLayout.alpha_name(i), a) for i, a in enumerate(video.alphas, 1))]:
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} contains NaN or infinite values; refusing to save")
    manifest = _manifest(video)
    manifest_text = json.dumps(manifest, indent=2, default=_json_default)  # fail before touching the disk
    extras = {}
    if "trajectory" in video.metadata:  # requested boxes (what `layert2v eval` scores) and their overlay
        from .trajectory import trajectory_files

        extras = trajectory_files(video)

    copies = kept_files(video)  # layers read from a saved directory and unchanged since: their files are copied

    with atomic_directory(target, overwrite, marker=MANIFEST) as tmp:
        files = manifest["files"]
        for name, frames in [(FULL, video.full), (BACKGROUND, video.background)]:
            if name in copies:
                _copy(copies[name], tmp, [files[name]])
            else:
                write_video(tmp / files[name], frames, video.fps, "libx264")
        for i, (fg, a) in enumerate(zip(video.foregrounds, video.alphas), start=1):
            fg_name, alpha_name = LayerLayout.foreground_name(i), LayerLayout.alpha_name(i)
            if fg_name in copies:
                _copy(copies[fg_name], tmp, [files[fg_name], files[f"{fg_name}_webm"], files[alpha_name]])
                continue
            rgba = np.concatenate([fg, a[..., None]], axis=-1)
            write_video(tmp / files[fg_name], rgba, video.fps, "prores_ks")
            write_video(tmp / files[f"{fg_name}_webm"], rgba, video.fps, "libvpx-vp9")
            write_video(tmp / files[alpha_name], np.repeat(a[..., None], 3, axis=-1), video.fps, "libx264")
        write_video(tmp / files["composite"], video.composite(), video.fps, "libx264")
        contact_sheet(video).save(tmp / files["preview"])
        for name, data in extras.items():
            (tmp / name).write_bytes(data)
        (tmp / MANIFEST).write_text(manifest_text + "\n", encoding="utf-8")  # last: its presence marks completion
    return target


def kept_files(video: LayeredVideo) -> dict[str, list[Path]]:
    """Layers of ``video`` still holding exactly the pixels :func:`load_layered_video` read from a saved directory
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
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
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


def load_layered_video(directory: str | Path) -> LayeredVideo:
    """Read a directory written by :func:`save_layered_video`.

    Foreground RGB and alpha come from the ProRes 4444 .mov files (10-bit, 4:4:4, near-lossless alpha);
    the .webm and alpha_k.mp4 copies are for people, not for round trips.
    """
    from .video import LayeredVideo

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
    full = decode(FULL, alpha=False)
    background = decode(BACKGROUND, alpha=False)
    foregrounds, alphas = [], []
    for i in layout.composite_order:
        fg, a = decode(layout.foreground_name(i), alpha=True)
        foregrounds.append(fg)
        alphas.append(a)
    metadata = {key: v for key, v in manifest.items() if key not in _RESERVED}
    video = LayeredVideo(full=full, background=background, foregrounds=foregrounds, alphas=alphas,
                         fps=manifest["fps"], prompts=manifest.get("prompts") or {}, seed=manifest.get("seed"),
                         metadata=metadata)
    video.sources = _sources(directory, files, video)
    return video


def _sources(directory: Path, files: dict[str, Any], video: LayeredVideo) -> dict[str, Any]:
    """:class:`~layert2v.video.LayerSource` of each layer whose files (see :func:`kept_files`) are all present."""
    from .video import LayerSource

    def present(*keys: str) -> tuple[str, ...] | None:
        names = tuple(files.get(key) for key in keys)
        ok = all(isinstance(n, str) and Path(n).name == n and (directory / n).is_file() for n in names)
        return names if ok else None

    directory = directory.absolute()
    out = {}
    for name, frames in [(FULL, video.full), (BACKGROUND, video.background)]:
        if (names := present(name)) is not None:
            out[name] = LayerSource.of(directory, names, frames, video.fps)
    for k in video.layout.composite_order:
        fg, alpha = LayerLayout.foreground_name(k), LayerLayout.alpha_name(k)
        fg_files, alpha_files = present(fg, f"{fg}_webm"), present(fg, alpha)
        if fg_files is not None and alpha_files is not None:
            out[fg] = LayerSource.of(directory, fg_files, video.foregrounds[k - 1], video.fps)
            out[alpha] = LayerSource.of(directory, alpha_files, video.alphas[k - 1], video.fps)
    return out
