"""Video files: encoding frames (H.264, ProRes 4444 and VP9, the last two with alpha), decoding them (all frames, the
first few, or chosen ones; RGB or straight RGBA) and reading a file's frame count, rate and size without decoding.

Colour: every YUV file is tagged and converted as BT.709, limited ("tv") range, so that ffmpeg, browsers and
editors agree with what :func:`read_video` returns. The swscale flags below matter: without full-chroma
interpolation and accurate rounding, RGB <-> 4:2:0 alone costs ~10 dB of PSNR on smooth content.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, Interpolation

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
    # mb-tree off: with it, x264's lookahead (as PyAV 18's wheels build it) reads memory it never wrote, so the same
    # frames came out as different bits depending on what was encoded before; without it they always match
    "libx264": _Codec("libx264", "yuv420p", None, False, {"crf": "12", "preset": "medium", "x264-params": "mbtree=0"}),
    # profile "4" is 4444 (prores_ks numbers its profiles 0..5); alpha_bits defaults to 16. vendor apl0 keeps
    # some Apple software from rejecting the file.
    "prores_ks": _Codec("prores_ks", "yuv444p10le", "yuva444p10le", True, {"profile": "4", "vendor": "apl0"}),
    # crf with b=0 is libvpx's constant-quality mode; cpu-used 4 keeps long clips from taking minutes.
    "libvpx-vp9": _Codec("libvpx-vp9", "yuv420p", "yuva420p", False,
                         {"crf": "15", "b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"}),
}


# ------------------------------------------------------------------------------------------------ write
def to_integer(frames: np.ndarray, deep: bool = False) -> np.ndarray:
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


class VideoWriter:
    """A video file written in chunks of frames, so a long clip never has to be in memory at once
    (:func:`write_video` is one chunk). Frames are (t, H, W, 3) RGB or (t, H, W, 4) straight RGBA, uint8 or float in
    [0, 1]; the stream opens on the first chunk, whose size and channels every later chunk must have. ``close`` (or
    leaving the ``with`` block) flushes the encoder; after an error the file is incomplete and the caller removes it.
    """

    def __init__(self, path: str | Path | io.BytesIO, fps: float, codec: str = "libx264",
                 options: dict[str, str] | None = None, container: str | None = None):
        self.spec = _CODECS.get(codec)
        if self.spec is None:
            raise ValueError(f"unsupported codec {codec!r}; choose from {sorted(_CODECS)}")
        # a file, or a buffer in memory (then `container` names its format: mp4, mov, webm, matroska)
        self.path = path if isinstance(path, io.BytesIO) else Path(path)
        self.container, self.options = container, options
        self.rate = Fraction(fps).limit_denominator(1_000_000)
        self.shape: tuple[int, int, int] | None = None  # (H, W, C) of the first chunk
        self.frames = 0
        self._container: av.container.OutputContainer | None = None
        self._stream: av.video.stream.VideoStream | None = None

    def _open(self, h: int, w: int, c: int) -> None:
        spec = self.spec
        pix_fmt = spec.pix_fmt if c == 3 else spec.alpha_pix_fmt
        if pix_fmt is None:
            raise ValueError(f"{spec.encoder} cannot store alpha; pass RGB frames or use prores_ks / libvpx-vp9")
        if spec.subsampled and (h % 2 or w % 2):
            raise ValueError(f"{spec.encoder} ({pix_fmt}) needs even width and height, got {w}x{h}")
        container_options = {"fflags": "+bitexact"}  # no random ids (Matroska's segment UID) nor version strings
        if isinstance(self.path, io.BytesIO):
            self._container = av.open(self.path, "w", format=self.container, options=container_options)
        else:
            if self.path.suffix.lower() in (".mp4", ".mov"):
                container_options["movflags"] = "+faststart"
            self._container = av.open(str(self.path), "w", options=container_options)
        stream = self._container.add_stream(spec.encoder, rate=self.rate, time_base=1 / self.rate)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        stream.options = {**spec.options, **(self.options or {})}
        ctx = stream.codec_context
        ctx.colorspace, ctx.color_primaries, ctx.color_trc, ctx.color_range = _BT709, _BT709, _BT709, _RANGE_TV
        self._stream, self.shape = stream, (h, w, c)

    def write(self, frames: np.ndarray) -> None:
        """Encode a chunk of frames after those written so far."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] not in (3, 4) or frames.shape[0] == 0:
            raise ValueError(f"frames must be (T, H, W, 3) or (T, H, W, 4) with T >= 1, got {frames.shape}")
        if self.shape is not None and frames.shape[1:] != self.shape:
            raise ValueError(f"a chunk of shape {frames.shape[1:]} after chunks of {self.shape}; every chunk of a "
                             "video has one size")
        data = to_integer(frames, self.spec.deep)  # refuses NaN before the file is created
        if self.shape is None:
            self._open(*frames.shape[1:])
        c = frames.shape[-1]
        in_fmt = {(3, False): "rgb24", (4, False): "rgba", (3, True): "rgb48le", (4, True): "rgba64le"}[c,
                                                                                                        self.spec.deep]
        stream = self._stream
        for i in range(len(data)):
            frame = av.VideoFrame.from_ndarray(data[i], format=in_fmt)
            frame = frame.reformat(format=stream.pix_fmt, src_colorspace=Colorspace.ITU709,
                                   dst_colorspace=Colorspace.ITU709, src_color_range=ColorRange.JPEG,
                                   dst_color_range=ColorRange.MPEG, dst_color_trc=_BT709, dst_color_primaries=_BT709,
                                   interpolation=_SWS_FLAGS)
            frame.pts = self.frames
            frame.time_base = 1 / self.rate
            self._container.mux(stream.encode(frame))
            self.frames += 1

    def close(self) -> None:
        """Flush the encoder and close the file (nothing to do when no frame was written)."""
        if self._container is None:
            return
        container, self._container = self._container, None
        try:
            container.mux(self._stream.encode(None))
        finally:
            container.close()

    def abort(self) -> None:
        """Close the file without flushing (after an error: the caller removes the incomplete file). Closing can fail
        in turn (a full disk fails every write); that is not raised, so the first error is the one the caller sees."""
        if self._container is not None:
            container, self._container = self._container, None
            with contextlib.suppress(OSError):
                container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, kind, *_exc) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def write_video(path: str | Path, frames: np.ndarray, fps: float, codec: str = "libx264",
                options: dict[str, str] | None = None) -> Path:
    """Encode (T, H, W, 3) RGB or (T, H, W, 4) straight RGBA frames (uint8, or float in [0, 1]).

    `codec` is libx264, prores_ks (4444) or libvpx-vp9; `options` override the codec defaults.
    4:2:0 codecs need even width and height.
    """
    with VideoWriter(path, fps, codec, options) as writer:
        writer.write(frames)
    return Path(path)


_CONTAINERS = {".mp4": "mp4", ".mov": "mov", ".webm": "webm", ".mkv": "matroska"}


def encoded_size(suffix: str, frames: np.ndarray, fps: float, codec: str = "libx264",
                 options: dict[str, str] | None = None) -> int:
    """The bytes :func:`write_video` writes for a file of this suffix, encoded in memory (nothing touches the disk;
    +faststart moves an MP4's index to the front without changing its size)."""
    buffer = io.BytesIO()
    with VideoWriter(buffer, fps, codec, options, container=_CONTAINERS[suffix.lower()]) as writer:
        writer.write(frames)
    return buffer.getbuffer().nbytes


# ------------------------------------------------------------------------------------------------- read
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


def read_video(path: str | Path, limit: int | None = None) -> np.ndarray:
    """Decode a video's first ``limit`` frames (all when None) to float32 RGB (T, H, W, 3) in [0, 1]; decoding stops
    there."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such video file: {path}")
    frames = []
    decoded = _decoded_frames(path)
    try:
        for frame in decoded:
            frames.append(_frame_to_array(frame, alpha=False))
            if limit is not None and len(frames) >= limit:
                break
    finally:
        decoded.close()  # closes the container now, not when the generator is collected
    if not frames:
        raise ValueError(f"{path.name} contains no video frames")
    return np.stack(frames)


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


def iter_frames(path: str | Path, indices: list[int], chunk: int) -> Iterator[np.ndarray]:
    """Decode frames ``indices`` (ascending, repeats allowed) of a video in one pass and yield them as float32 RGB
    chunks (t, H, W, 3) of ``chunk`` frames (the last may be shorter): a clip of any length in bounded memory."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such video file: {path}")
    if any(b < a for a, b in zip(indices, indices[1:])):
        raise ValueError("iter_frames takes ascending frame indices")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    pending: list[np.ndarray] = []
    at = decoded = 0
    frames = _decoded_frames(path)
    try:
        for frame in frames:
            if at == len(indices):
                break
            if indices[at] == decoded:
                array = _frame_to_array(frame, alpha=False)
                while at < len(indices) and indices[at] == decoded:
                    pending.append(array)
                    at += 1
                    if len(pending) == chunk:
                        yield np.stack(pending)
                        pending = []
            decoded += 1
    finally:
        frames.close()  # closes the container now, not when the generator is collected
    if at < len(indices):
        raise ValueError(f"{path.name} has {decoded} decodable frames; frame {indices[at]} was asked for")
    if pending:
        yield np.stack(pending)
