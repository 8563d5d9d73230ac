"""Writing outputs so that a failure (full disk, kill, bad folder) never leaves a half-written or lost file.

Files are serialised in memory first and written by Python's own ``write``: a failed disk write then surfaces as
one ``OSError``, whereas HDF5 can crash the process when its writes fail part-way.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
from PIL import Image

from jaxdream.errors import JaxdreamError

HOME_ENV = "JAXDREAM_HOME"
_UMASK = os.umask(0o022)  # read once at import (the only way to read it), then restored
os.umask(_UMASK)


def write_atomically(
    path: str | Path, data: bytes | str, what: str, error: type[JaxdreamError] = JaxdreamError,
    mode: int | None = None,
) -> Path:
    """Write ``data`` (str as UTF-8) to a temp file beside ``path`` and rename it to ``path`` once complete.

    On failure the temp file is removed, whatever ``path`` held before stays as it was, and ``error`` is raised
    naming the file and the fix. The temp file has an unpredictable name and is created exclusively (mkstemp), so
    a symlink planted in a shared folder is never followed; the rename replaces a link at ``path`` itself.
    ``mode``: the file's permissions (default: what the umask gives a new file).
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise error(f"{path}: cannot write {what}: the folder {path.parent} does not exist")
    tmp: Path | None = None
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        tmp = Path(name)
        os.fchmod(fd, 0o666 & ~_UMASK if mode is None else mode)  # mkstemp's 0600 would make every output private
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())  # on disk before the rename: a power cut then leaves the old file or the new
        os.replace(tmp, path)
    except OSError as err:
        raise error(f"{path}: cannot write {what} ({err.strerror or err}); check that the folder is writable and "
                    "has free space") from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    return path


def _kind(mode: int) -> str:
    for test, word in ((stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "pipe (FIFO)"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return word
    return "special file"


def open_user_file(path: str | Path, what: str, error: type[JaxdreamError] = JaxdreamError,
                   limit: int | None = None, fix: str = "") -> tuple[int, int]:
    """A user's input file opened for reading: (file descriptor, size). Only a regular file (a link to one is
    followed): a pipe, device or folder is refused, and opening does not block (O_NONBLOCK, so a FIFO with no
    writer cannot hang the run). A file over ``limit`` bytes is refused (``fix`` says what to do). The caller
    closes the descriptor."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise error(f"{path}: cannot read {what} ({err.strerror or err}); check the path") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{path}: {what} must be a regular file, not a {_kind(info.st_mode)}; give the path of a file")
        if limit is not None and info.st_size > limit:
            raise error(f"{path}: {what} holds {info.st_size:,} bytes, more than the {limit:,} it may"
                        + (f"; {fix}" if fix else ""))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, info.st_size


def check_user_file(path: str | Path, what: str, error: type[JaxdreamError] = JaxdreamError) -> int:
    """The size of a user's input file that another library opens by name (HDF5): only a regular file."""
    fd, size = open_user_file(path, what, error)
    os.close(fd)
    return size


def read_user_file(path: str | Path, what: str, limit: int, error: type[JaxdreamError] = JaxdreamError,
                   fix: str = "") -> bytes:
    """The bytes of a user's input file (a regular file of at most ``limit`` bytes; see :func:`open_user_file`).
    At most ``limit`` + 1 bytes are ever read, so a file that grows while it is read is refused too."""
    fd, _ = open_user_file(path, what, error, limit, fix)
    try:
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as err:
        raise error(f"{path}: cannot read {what} ({err.strerror or err}); check the path") from None
    if len(data) > limit:
        raise error(f"{path}: {what} holds more than the {limit:,} bytes it may" + (f"; {fix}" if fix else ""))
    return data


def image_bytes(image: Image.Image, fmt: str, **options: Any) -> bytes:
    """The encoded file of a Pillow image (``fmt``: "PNG", "JPEG" ...)."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def hdf5_bytes(fill: Callable[[h5py.File], None]) -> bytes:
    """The bytes of an HDF5 file that ``fill`` populates."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        fill(f)
    return buffer.getvalue()


def home_dir() -> Path:
    """jaxdream's own folder (fetched weights, compiled programs): ``$JAXDREAM_HOME``, or the platform's user cache
    folder (``~/.cache/jaxdream`` on Linux). An empty ``JAXDREAM_HOME=`` means unset, never the current folder."""
    value = os.environ.get(HOME_ENV, "")
    if value.strip():
        return Path(value).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("jaxdream"))


def standard_stream(path: str | Path) -> int | None:
    """The file descriptor a path names as one of this process's output streams (/dev/stdout, /dev/stderr, /dev/fd/N,
    /proc/self/fd/N), whatever it is redirected to (a file, a pipe), else None."""
    text = str(path)
    named = {"/dev/stdout": 1, "/dev/stderr": 2}
    if text in named:
        return named[text]
    for prefix in ("/dev/fd/", "/proc/self/fd/"):
        if text.startswith(prefix) and text[len(prefix):].isdigit():
            return int(text[len(prefix):])
    return None


def write_report(path: str | Path, data: str, what: str, error: type[JaxdreamError] = JaxdreamError) -> Path:
    """A report (``--stats``): written atomically like any output, except to a stream the user named (one of the
    process's own streams such as /dev/stdout, wherever it is redirected, or a character device or FIFO), which is
    written through (appended, never truncated or replaced)."""
    path = Path(path)
    text = data if data.endswith("\n") else data + "\n"
    fd = standard_stream(path)
    if fd is not None:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        try:
            os.write(fd, text.encode())
        except OSError as err:
            raise error(f"{path}: cannot write {what} ({err.strerror or err})") from None
        return path
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = 0
    if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        try:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)
        except OSError as err:
            raise error(f"{path}: cannot write {what} ({err.strerror or err})") from None
        return path
    if path.is_symlink():
        raise error(f"{path}: {what} would replace a symbolic link; name the file itself")
    return write_atomically(path, data, what, error)


def sha256_of(path: str | Path) -> str:
    """The sha256 of a file, read in blocks (a model's source, a video input)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
