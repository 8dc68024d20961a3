"""Output directories and files: one check and one atomic writer, with one overwrite and permissions policy.

Policy, for everything layert2v writes (layered videos, pipelines, training outputs, eval reports):
    * a missing or empty directory is written; a non-empty one only with ``overwrite``;
    * with a ``marker`` (the file that identifies what the writer makes, e.g. manifest.json), ``overwrite`` replaces
      only a directory holding that marker, so a mistyped path never replaces a home directory;
    * the result appears all at once: it is built in a hidden sibling and renamed into place; on error the sibling
      is removed and any earlier directory stays as it was;
    * permissions follow the umask, like any file the user creates (0755 / 0644 under the usual 022).

Files inside a directory a writer owns (dataset metadata, done markers, logs, weights) are written the same way with
:func:`atomic_file`. The hidden siblings are named ``.NAME.tmp-XXXXXXXX`` (and ``.NAME.old-XXXXXXXX`` while a
directory is replaced); :func:`remove_leftovers` removes those a killed process left.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

_LEFTOVER = re.compile(r"^\..+\.(tmp|old)-[0-9a-f]{8}$")  # the names _sibling gives
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class NoSpaceError(OSError):
    """The filesystem filled up while a result was written; the partial result is gone and the message (one line)
    names the device, what is free, what the result needs where the writer knows it, and the fix."""

    def __init__(self, message: str, needed: int | None = None, free: int | None = None):
        super().__init__(message)
        self.needed, self.free = needed, free  # bytes: the whole result (None: unknown), free after clean-up


def is_no_space(error: BaseException) -> bool:
    return isinstance(error, OSError) and (isinstance(error, NoSpaceError) or error.errno in _NO_SPACE)


def _mount_of(path: Path) -> tuple[str, Path]:
    """(device, mount point) of the filesystem holding ``path``: the deepest mount point at or above it in
    /proc/mounts (where that cannot be read: the path's existing ancestor, for both)."""
    path = next(p for p in (path, *path.parents) if p.exists()).resolve()
    found: tuple[str, Path] | None = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            device, mount = line.split()[:2]
            mount_path = Path(mount.replace("\\040", " "))
            if (mount_path == path or mount_path in path.parents) and (
                    found is None or len(mount_path.parts) >= len(found[1].parts)):
                found = (device, mount_path)
    return found or (str(path), path)


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def no_space(path: Path, needed: int | None = None) -> NoSpaceError:
    """The one-line error for a full disk under ``path``, measured now (after the partial result is removed)."""
    device, mount = _mount_of(path)
    free = free_bytes(mount)

    def mb(n: int) -> str:
        return f"{max(n, 0) / 2**20:.1f} MB"

    if needed is not None and needed > free:
        fix = f"{path.name} needs {mb(needed)} and {mb(free)} is free: free {mb(needed - free)}"
    else:
        fix = f"{mb(free)} was not enough for {path.name}: free more space"
    return NoSpaceError(f"no space left on {device} (mounted at {mount}); {fix} or choose another output directory "
                        "(--out); nothing was written", needed, free)


def _target(directory: str | Path) -> Path:
    path = Path(directory).expanduser().absolute()
    return path.resolve() if path.is_symlink() else path  # replace what a link points at, not the link


def check_output_directory(directory: str | Path, overwrite: bool = False, marker: str | None = None) -> Path:
    """Fail early, with the fix, when `directory` cannot take a new result; return its absolute path.

    Creates nothing, so a refusal (or an error later, before writing) leaves no trace.
    """
    path = _target(directory)
    for above in path.parents:
        if above.exists() and not above.is_dir():
            raise NotADirectoryError(f"{above} is a file, so {path} cannot be created; choose another output path")
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a directory; choose another directory")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{path} exists and is not empty; pass overwrite=True (CLI: --overwrite) or choose "
                                  "another directory")
        if marker is not None and not (path / marker).is_file():
            raise FileExistsError(f"{path} exists and is not what this command writes (no {marker}); refusing to "
                                  "overwrite it, remove it yourself or choose another directory")
    existing = next(p for p in (path.parent, *path.parent.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write to {existing}: permission denied (needed to create {path})")
    return path


def _sibling(path: Path, tag: str) -> Path:
    """A hidden name next to ``path`` (same filesystem, so the final rename is atomic)."""
    return path.with_name(f".{path.name}.{tag}-{secrets.token_hex(4)}")


def _fresh_sibling(path: Path, tag: str) -> Path:
    """A new hidden directory next to ``path``."""
    for _ in range(100):
        sibling = _sibling(path, tag)
        try:
            sibling.mkdir()  # honours the umask, unlike tempfile.mkdtemp's 0700
            return sibling
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary directory in {path.parent}")


@contextlib.contextmanager
def atomic_directory(directory: str | Path, overwrite: bool = False, marker: str | None = None,
                     previous: str | Path | None = None) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces `directory`, on error it vanishes.

    See the module docstring for the policy; `overwrite` and `marker` are as in :func:`check_output_directory`.
    With ``previous``, the directory replaced is kept there (in place of what ``previous`` held) instead of removed.
    """
    path = check_output_directory(directory, overwrite, marker)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except PermissionError as e:
        raise PermissionError(f"cannot create {path.parent}: permission denied") from e
    tmp = _fresh_sibling(path, "tmp")
    try:
        try:
            yield tmp
        except OSError as e:
            if not is_no_space(e):
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # before measuring what is free
            raise no_space(path, getattr(e, "needed", None)) from e
        if path.exists():
            old = _fresh_sibling(path, "old")
            os.replace(path, old / path.name)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old / path.name, path)  # put the earlier directory back
                raise
            else:
                if previous is not None:
                    shutil.rmtree(previous, ignore_errors=True)
                    os.replace(old / path.name, previous)
            finally:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path to write the file to; on success it replaces ``path``, on error it vanishes."""
    path = Path(path)
    tmp = _sibling(path, "tmp")
    try:
        try:
            yield tmp
        except OSError as e:
            if not is_no_space(e) or isinstance(e, NoSpaceError):
                raise
            tmp.unlink(missing_ok=True)
            raise no_space(path) from e
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_file`: readers see the old file or the new one."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def remove_leftovers(directory: str | Path) -> None:
    """Remove the temporary siblings (files and directories) that a killed writer left directly in ``directory``."""
    for path in Path(directory).iterdir():
        if _LEFTOVER.match(path.name):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
