"""Output directories: one check and one atomic writer, with one overwrite and permissions policy.

Policy, for everything layert2v writes (layered videos, pipelines, training outputs, eval reports):
    * a missing or empty directory is written; a non-empty one only with ``overwrite``;
    * with a ``marker`` (the file that identifies what the writer makes, e.g. manifest.json), ``overwrite`` replaces
      only a directory holding that marker, so a mistyped path never replaces a home directory;
    * the result appears all at once: it is built in a hidden sibling and renamed into place; on error the sibling
      is removed and any earlier directory stays as it was;
    * permissions follow the umask, like any file the user creates (0755 / 0644 under the usual 022).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path


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


def _fresh_sibling(parent: Path, prefix: str) -> Path:
    """A new hidden directory next to the target (same filesystem, so the final rename is atomic)."""
    for _ in range(100):
        path = parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            path.mkdir()  # honours the umask, unlike tempfile.mkdtemp's 0700
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary directory in {parent}")


@contextlib.contextmanager
def atomic_directory(directory: str | Path, overwrite: bool = False, marker: str | None = None) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces `directory`, on error it vanishes.

    See the module docstring for the policy; `overwrite` and `marker` are as in :func:`check_output_directory`.
    """
    path = check_output_directory(directory, overwrite, marker)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except PermissionError as e:
        raise PermissionError(f"cannot create {path.parent}: permission denied") from e
    tmp = _fresh_sibling(path.parent, f".{path.name}.tmp-")
    try:
        yield tmp
        if path.exists():
            old = _fresh_sibling(path.parent, f".{path.name}.old-")
            os.replace(path, old / path.name)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old / path.name, path)  # put the earlier directory back
                raise
            finally:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
