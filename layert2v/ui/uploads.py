"""Uploaded replacement backgrounds: an image or a video, decoded once, fitted to a layered video's shape."""

from __future__ import annotations

import io
import secrets
import threading
from collections import OrderedDict

import av
import numpy as np
from PIL import Image, UnidentifiedImageError

from ..data.fit import frame_window, resize_frames
from ..io.codec import to_integer

MAX_SIDE = 1024  # decoded uploads are shrunk to this longest side; a background never needs more here
MAX_FRAMES = 1000
_KEPT = 8


def decode_upload(data: bytes, filename: str) -> np.ndarray:
    """An image or a video file's bytes -> uint8 frames (N, H, W, 3); ValueError when it is neither."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return _shrink(np.asarray(img.convert("RGB")))[None]
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        pass
    frames = []
    try:
        with av.open(io.BytesIO(data)) as container:
            if not container.streams.video:
                raise ValueError(f"{filename} has no video stream; upload an image or a video")
            for frame in container.decode(container.streams.video[0]):
                frames.append(_shrink(frame.to_ndarray(format="rgb24")))
                if len(frames) >= MAX_FRAMES:
                    break
    except av.FFmpegError:
        frames = []
    if not frames:
        raise ValueError(f"{filename} is neither an image nor a video that can be read; upload a PNG, JPEG, MP4, "
                         "WebM or MOV file")
    return np.stack(frames)


def _shrink(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    if max(h, w) <= MAX_SIDE:
        return frame
    scale = MAX_SIDE / max(h, w)
    shrunk = resize_frames(frame[None] / np.float32(255), max(1, round(h * scale)), max(1, round(w * scale)),
                           crop=False)
    return to_integer(shrunk[0])


def fit_background(frames: np.ndarray, num_frames: int, height: int, width: int) -> np.ndarray:
    """uint8 (N, h, w, 3) -> float (T, H, W, 3): centre-cropped to the aspect ratio and resized (layert2v.data.fit); a
    still image is held for every frame, a video plays from its start and holds its last frame when it is shorter."""
    indices = frame_window(len(frames), 1.0, num_frames)
    fitted = {i: resize_frames(frames[i:i + 1] / np.float32(255), height, width)[0] for i in set(indices)}
    return np.stack([fitted[i] for i in indices])


class Uploads:
    """The last few uploads by id (in memory only: nothing is written to disk)."""

    def __init__(self) -> None:
        self._items: OrderedDict[str, tuple[str, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, name: str, frames: np.ndarray) -> str:
        upload_id = secrets.token_hex(6)
        with self._lock:
            self._items[upload_id] = (name, frames)
            while len(self._items) > _KEPT:
                self._items.popitem(last=False)
        return upload_id

    def get(self, upload_id: str) -> np.ndarray:
        with self._lock:
            item = self._items.get(upload_id)
        if item is None:
            raise KeyError(upload_id)
        return item[1]
