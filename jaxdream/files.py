"""Writing outputs so that a failure (full disk, kill, bad folder) never leaves a half-written or lost file.

Files are serialised in memory first and written by Python's own ``write``: a failed disk write then surfaces as
one ``OSError``, whereas HDF5 can crash the process when its writes fail part-way.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
from PIL import Image

from jaxdream.errors import JaxdreamError

_UMASK = os.umask(0o022)  # read once at import (the only way to read it), then restored
os.umask(_UMASK)


def write_atomically(
    path: str | Path, data: bytes | str, what: str, error: type[JaxdreamError] = JaxdreamError
) -> Path:
    """Write ``data`` (str as UTF-8) to a temp file beside ``path`` and rename it to ``path`` once complete.

    On failure the temp file is removed, whatever ``path`` held before stays as it was, and ``error`` is raised
    naming the file and the fix. The temp file has an unpredictable name and is created exclusively (mkstemp), so
    a symlink planted in a shared folder is never followed; the rename replaces a link at ``path`` itself.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise error(f"{path}: cannot write {what}: the folder {path.parent} does not exist")
    tmp: Path | None = None
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        tmp = Path(name)
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp's 0600 would make every output private
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
    """jaxdream's cache folder: ``$JAXDREAM_HOME`` when set and not empty, else the platform's user cache folder
    (``~/.cache/jaxdream`` on Linux, honouring ``XDG_CACHE_HOME``)."""
    import platformdirs

    return Path(os.environ.get("JAXDREAM_HOME") or platformdirs.user_cache_dir("jaxdream"))
