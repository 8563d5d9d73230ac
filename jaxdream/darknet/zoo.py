"""Known models: built-in name -> architecture, weights (bundled in the package, or an official URL fetched once into
the cache with pooch: retries with back-off, a sha256 where one is recorded, the size the cfg implies)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from jaxdream import weights as builtin
from jaxdream.errors import FetchError
from jaxdream.files import home_dir

Progress = Callable[[int, int | None], None]  # (bytes done, total bytes or None)
log = logging.getLogger("jaxdream")
MIRROR_ENV = "JAXDREAM_ZOO_MIRROR"  # base URL that replaces the Darknet site (a mirror, or a test server)
RETRIES = 3  # after the first attempt; pooch waits 1 s, 2 s, 3 s between them


@dataclass(frozen=True)
class ZooEntry:
    name: str
    url: str | None  # None: the weights are bundled in the package
    sha256: str | None = None  # checked after a download where known (pjreddie.com publishes none)

    def cfg_text(self) -> str:
        return builtin.ARCHITECTURES[self.name]

    def labels(self) -> tuple[str, ...] | None:
        filename = builtin.DARKNET_LABELS.get(self.name)
        return tuple(builtin.labels_text(filename).splitlines()) if filename else None

    @property
    def bundled(self) -> bool:
        return self.url is None

    def file_sizes(self) -> tuple[int, int]:
        """The byte sizes the official file may have (16- or 20-byte header), implied by the cfg."""
        from jaxdream.darknet.cfg import parse_cfg
        from jaxdream.darknet.weights import expected_file_sizes

        return expected_file_sizes(parse_cfg(self.cfg_text(), self.name))

    def download_url(self) -> str:
        assert self.url is not None
        mirror = os.environ.get(MIRROR_ENV)
        return f"{mirror.rstrip('/')}/{self.url.rsplit('/', 1)[1]}" if mirror else self.url


def names() -> list[str]:
    return sorted(builtin.ARCHITECTURES)


def find(name: str) -> ZooEntry | None:
    """The zoo entry for a built-in name, or None."""
    if name not in builtin.ARCHITECTURES:
        return None
    if name in builtin.BUNDLED_WEIGHTS:
        return ZooEntry(name, None, builtin.BUNDLED_FILES[builtin.BUNDLED_WEIGHTS[name].name])
    return ZooEntry(name, builtin.OFFICIAL_WEIGHTS[name])


def cached_path(entry: ZooEntry) -> Path:
    """Where the entry's weights are: in the package when bundled, else in the cache."""
    if entry.bundled:
        return builtin.BUNDLED_WEIGHTS[entry.name]
    return home_dir() / "weights" / f"{entry.name}.weights"


def fetch(entry: ZooEntry, progress: Progress | None = None) -> Path:
    """The weights of ``entry``: the bundled file, or the cached download (downloading it first if needed)."""
    dest = cached_path(entry)
    if entry.bundled or dest.is_file():
        return dest
    return download(entry.download_url(), dest, entry.file_sizes(), progress, entry.sha256)


class _Bar:
    """pooch's progress-bar interface (tqdm's total/update/reset/close) onto a ``Progress`` callback."""

    def __init__(self, progress: Progress):
        self.progress, self.total, self.done = progress, None, 0

    def update(self, n: int) -> None:
        self.done += n
        self.progress(min(self.done, self.total or self.done), self.total or None)

    def reset(self) -> None:
        self.done = 0

    def close(self) -> None:
        pass


def download(
    url: str, dest: Path, valid_sizes: tuple[int, ...], progress: Progress | None = None, sha256: str | None = None,
    retries: int = RETRIES, timeout: float = 20.0,
) -> Path:
    """Download ``url`` to ``dest`` with pooch (a temp file beside it, moved into place once whole and checked).

    ``timeout`` bounds each wait for the server (to connect, and between bytes); a failed attempt is retried
    ``retries`` times with growing pauses. The final name appears only once the file's size is one of
    ``valid_sizes`` and, where ``sha256`` is given, its hash matches.
    """
    import pooch
    import requests

    dest.parent.mkdir(parents=True, exist_ok=True)
    fetcher = pooch.create(path=dest.parent, base_url="", registry={dest.name: f"sha256:{sha256}" if sha256 else None},
                           urls={dest.name: url}, retry_if_failed=retries)
    if progress:
        progress(0, None)  # shown at once: the user sees what is being waited for before the first byte
    downloader = pooch.HTTPDownloader(progressbar=_Bar(progress) if progress else False, timeout=timeout)
    logging.getLogger("pooch").setLevel(logging.WARNING)
    try:
        path = Path(fetcher.fetch(dest.name, downloader=downloader))
    except (requests.RequestException, OSError) as err:
        raise FetchError(f"{url}: download failed after {retries + 1} attempts ({err}); nothing was kept. Check the "
                         f"connection and run the command again, or download the file yourself and pass its path "
                         f"(or set {MIRROR_ENV} to a mirror's base URL)") from None
    except ValueError as err:  # pooch: the hash does not match
        raise FetchError(f"{url}: the downloaded file is not the expected one ({err}); nothing was kept") from None
    size = path.stat().st_size
    if size not in valid_sizes:
        path.unlink()
        raise FetchError(
            f"{url}: downloaded {size} bytes, but the architecture needs {' or '.join(map(str, valid_sizes))}; "
            "the server sent a different file. Nothing was kept."
        )
    return path
