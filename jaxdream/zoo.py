"""Known models: built-in name -> architecture, official weights URL and size; the cache and resumable fetch."""

from __future__ import annotations

import http.client
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from jaxdream import weights as builtin
from jaxdream.errors import FetchError

Progress = Callable[[int, int | None], None]  # (bytes done, total bytes or None)
log = logging.getLogger("jaxdream")
MIRROR_ENV = "JAXDREAM_ZOO_MIRROR"  # base URL that replaces the Darknet site, for mirrors and tests


@dataclass(frozen=True)
class ZooEntry:
    name: str
    url: str

    def cfg_text(self) -> str:
        return builtin.ARCHITECTURES[self.name]

    def labels(self) -> tuple[str, ...] | None:
        filename = builtin.DARKNET_LABELS.get(self.name)
        return tuple(builtin.labels_text(filename).splitlines()) if filename else None

    def file_sizes(self) -> tuple[int, int]:
        """The byte sizes the official file may have (16- or 20-byte header), implied by the cfg."""
        from jaxdream.darknet.cfg import parse_cfg
        from jaxdream.darknet.weights import expected_file_sizes

        return expected_file_sizes(parse_cfg(self.cfg_text(), self.name))

    def download_url(self) -> str:
        mirror = os.environ.get(MIRROR_ENV)
        return f"{mirror.rstrip('/')}/{self.url.rsplit('/', 1)[1]}" if mirror else self.url


def names() -> list[str]:
    return sorted(builtin.ARCHITECTURES)


def find(name: str) -> ZooEntry | None:
    """The zoo entry for a built-in name, or None."""
    if name not in builtin.ARCHITECTURES:
        return None
    return ZooEntry(name, builtin.OFFICIAL_WEIGHTS[name])


def cache_dir() -> Path:
    from jaxdream.files import home_dir

    return home_dir()


def cached_path(entry: ZooEntry) -> Path:
    return cache_dir() / "weights" / f"{entry.name}.weights"


def fetch(entry: ZooEntry, progress: Progress | None = None) -> Path:
    """The cached weights of ``entry``, downloading them first if needed."""
    dest = cached_path(entry)
    if dest.exists():
        return dest
    return download(entry.download_url(), dest, entry.file_sizes(), progress)


def _total_from(response: http.client.HTTPResponse, have: int) -> int | None:
    content_range = response.headers.get("Content-Range", "")
    match = re.search(r"/(\d+)\s*$", content_range)
    if match:
        return int(match.group(1))
    length = response.headers.get("Content-Length")
    return have + int(length) if length is not None else None


def _receive(url: str, part: Path, progress: Progress | None, timeout: float) -> int | None:
    """One request, appending to ``part`` from where it ends; returns the total size the server announced."""
    have = part.stat().st_size if part.exists() else 0
    if progress:
        progress(have, None)  # shown at once: the user sees what is being waited for before the first byte
    request = Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urlopen(request, timeout=timeout)
    except HTTPError as err:
        if err.code == 416 and have:  # nothing left to send: the part file is already whole
            return have
        raise
    with response:
        if have and response.status != 206:  # the server ignored the range: start over
            have = 0
        total = _total_from(response, have)
        with open(part, "ab" if have else "wb") as out:
            done = have
            while chunk := response.read(1 << 16):
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
    return total


def download(
    url: str, dest: Path, valid_sizes: tuple[int, ...], progress: Progress | None = None,
    attempts: int = 4, timeout: float = 20.0,
) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming after dropped connections.

    The final name appears only once the file is whole and its size is one of ``valid_sizes``. ``timeout`` bounds
    each wait for the server (to connect, and between bytes); each failed attempt is noticed with its reason.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    reason = "no attempt made"
    for attempt in range(1, attempts + 1):
        try:
            total = _receive(url, part, progress, timeout)
        except (URLError, OSError, http.client.HTTPException) as err:
            reason = str(getattr(err, "reason", err))
            log.warning("fetching %s: attempt %d of %d failed (%s)", url, attempt, attempts, reason)
            continue
        size = part.stat().st_size
        if total is not None and size < total:
            reason = f"connection closed after {size} of {total} bytes"
            continue
        if size not in valid_sizes:
            part.unlink()
            raise FetchError(
                f"{url}: downloaded {size} bytes, but the architecture needs {' or '.join(map(str, valid_sizes))}; "
                "the server sent a different file. Nothing was kept."
            )
        os.replace(part, dest)
        return dest
    raise FetchError(
        f"{url}: download failed after {attempts} attempts ({reason}). The partial file {part} is kept; "
        "run the command again to resume, or download it yourself and pass its path."
    )
