"""Manifests: append-only JSON lines, one record per finished (or failed) picture, flushed as each is written,
read back by --resume, merges and ``jaxdream eval``. A record names its outputs (plain names in the manifest's
folder) with their sha256, so a file replaced since it was recorded is never taken as done."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from jaxdream.errors import JaxdreamError


class Manifest:
    """Append-only JSON lines, one per finished (or failed) image, flushed to disk as each is written."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()  # the dreaming and the writing thread both append
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise JaxdreamError(f"{path}: the manifest is not a regular file (a folder or a symbolic link, which "
                                "jaxdream does not follow); remove it or choose another --out")

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        with self._lock:
            self._append(line)

    def _append(self, line: bytes) -> None:
        try:
            # O_NOFOLLOW: a manifest planted as a symlink in a shared folder must not redirect our appends.
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
            with os.fdopen(fd, "a+b") as handle:
                # After a kill or a full disk cut the last line, start a fresh one so this record stays readable.
                handle.write(b"\n" + line if _last_line_cut(handle) else line)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise JaxdreamError(f"{self.path}: the manifest is a symbolic link, which jaxdream does not follow; "
                                    "remove it or choose another --out") from None
            raise JaxdreamError(f"{self.path}: cannot append to the manifest ({err.strerror or err}); free some "
                                "space, then rerun with --resume") from None


def done_inputs(folder: Path, job_key: str) -> set[str]:
    """Inputs that the folder's manifests record as finished by this job (the same options), each of whose outputs
    is still the file this job wrote (its sha256 as recorded) and whose input is still the same picture: what was
    overwritten or changed since is redone."""
    finished = set()
    for record in read_records(folder):
        if record.get("job") != job_key or record.get("status") != "done" or not isinstance(
                record.get("input"), str) or not verified(folder, record):
            continue
        if record.get("input_sha256") == file_sha256(Path(record["input"])):
            finished.add(record["input"])
    return finished


def _last_line_cut(handle: BinaryIO) -> bool:
    size = handle.seek(0, os.SEEK_END)
    if not size:
        return False
    handle.seek(size - 1)
    return handle.read(1) != b"\n"


def _names_and_hashes(names: Any, hashes: Any) -> bool:
    """A record's outputs are plain file names in the output folder, each with a sha256 (a hand-edited manifest
    may say anything)."""
    return (isinstance(names, list) and isinstance(hashes, list) and len(names) == len(hashes) > 0
            and all(isinstance(n, str) and n and Path(n).name == n and n not in (".", "..") for n in names)
            and all(isinstance(h, str) for h in hashes))


def file_sha256(path: Path) -> str | None:
    """The sha256 of a regular file (not followed through a symbolic link), or None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def read_records(folder: Path) -> Iterator[dict[str, Any]]:
    """Every readable record of the folder's manifests."""
    for path in sorted(folder.glob("manifest*.jsonl")):
        yield from read_records_of(path)


def read_records_of(path: Path) -> Iterator[dict[str, Any]]:
    """The records of one manifest; lines cut by a kill, not UTF-8, not JSON or not an object are passed over
    (their images are simply redone), and so is a manifest that is a link or not a file."""
    if path.is_symlink() or not path.is_file():
        return
    try:
        data = path.read_bytes()
    except OSError:
        return
    for line in data.splitlines():
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(record, dict):
            yield record


def verified(folder: Path, record: dict[str, Any]) -> bool:
    """Whether each output a record names is in ``folder`` and still the file recorded (its sha256)."""
    names, hashes = record.get("outputs"), record.get("sha256")
    return _names_and_hashes(names, hashes) and all(
        file_sha256(folder / name) == digest for name, digest in zip(names, hashes, strict=True))
