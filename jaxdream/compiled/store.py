"""Compiled programs kept on disk, so a second process running the same command neither traces nor compiles.

An entry is one file named by the digest of everything that decides the program (see ``runner.ProgramKey``)
plus the environment it was compiled in (jax/jaxlib versions, jaxdream's source, the devices, XLA flags). It
holds a header line (JSON: the digest, the readable key, the payload's length and sha256) and the payload (the
serialized executable and its argument/result tree structures). An entry that is stale, truncated, corrupt or
made for another key is never used: it is reported with one notice and rebuilt.

The payload is a pickle, and unpickling runs code, so the store is trusted the way ssh trusts ``~/.ssh``: the
folder and each entry must be owned by the current user and writable by no one else (the folder is created 0700,
entries 0600), and entries are opened only as regular files (``O_NOFOLLOW | O_NONBLOCK``, then ``fstat``), never
through a link or from a FIFO or device. A folder or entry that fails is refused with one notice and the program is
compiled as if it were absent; nothing is unpickled before it has passed, and its checksum and key are verified.
A program is keyed by the devices it was compiled for (their ids, the process index and count), so the processes of
a multi-process run never load each other's programs. ``clear`` and ``trim`` remove only files the store wrote
(named ``<sha256>.program`` or its temp file, starting with the store's magic line).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import pickle
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax

from jaxdream.errors import JaxdreamError
from jaxdream.files import home_dir, write_atomically

MAGIC = b"jaxdream-program 1\n"
SUFFIX = ".program"
DISABLE_ENV = "JAXDREAM_NO_CACHE"  # set to 1 to keep compiled programs in memory only
DEFAULT_MAX_BYTES = 4 << 30
ENTRY_NAME = re.compile(r"[0-9a-f]{64}" + re.escape(SUFFIX))  # what save writes
TEMP_NAME = re.compile(r"\.[0-9a-f]{64}" + re.escape(SUFFIX) + r"\..+\.tmp")  # write_atomically's temp file of one
log = logging.getLogger("jaxdream")
_NOTICED: set[str] = set()


class UntrustedEntry(Exception):
    """A store folder or entry that must not be read (another owner, writable by others, not a regular file)."""


def current_uid() -> int:
    """The user the store must belong to (a function, so tests can pretend to be someone else)."""
    return os.geteuid()


def check_trusted(info: os.stat_result, path: Path, what: str) -> None:
    """Refuse ``path`` (stat ``info``) unless it is the current user's and writable by no one else."""
    if info.st_uid != current_uid():
        raise UntrustedEntry(f"{what} {path} belongs to uid {info.st_uid}, not to you (uid {current_uid()})")
    if info.st_mode & 0o022:
        raise UntrustedEntry(f"{what} {path} is writable by others (mode {stat.S_IMODE(info.st_mode):o}); "
                             f"chmod go-w it")


def read_regular(path: Path, limit: int | None = None) -> tuple[bytes, os.stat_result]:
    """The bytes of ``path`` (at most ``limit``) if it is a regular file, opened without following a link and
    without blocking (a FIFO or device named like an entry would hang a plain open or read)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UntrustedEntry(f"{path} is not a regular file")
        chunks, left = [], info.st_size if limit is None else min(limit, info.st_size)
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 24))):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks), info
    finally:
        os.close(fd)


@functools.cache
def _source_digest() -> str:
    source = hashlib.sha256()
    package = Path(__file__).resolve().parent.parent  # the jaxdream package
    for path in sorted(package.rglob("*.py")):
        source.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
    return source.hexdigest()


def environment() -> dict[str, Any]:
    """What a compiled program depends on besides its key: versions, jaxdream's source, the devices it is compiled
    for (read at each call: a multi-process run joins after import), XLA flags."""
    import jaxlib

    devices = jax.local_devices()
    return {
        "jax": jax.__version__, "jaxlib": jaxlib.__version__, "jaxdream_source": _source_digest(),
        "platform": devices[0].platform, "device_kind": devices[0].device_kind, "devices": len(devices),
        "device_ids": [d.id for d in devices], "global_devices": jax.device_count(),
        "process": jax.process_index(), "processes": jax.process_count(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "x64": bool(jax.config.jax_enable_x64), "matmul_precision": str(jax.config.jax_default_matmul_precision),
        "prng": str(jax.config.jax_default_prng_impl), "threefry": bool(jax.config.jax_threefry_partitionable),
    }


@dataclass(frozen=True)
class StoredProgram:
    """One entry as ``jaxdream cache info`` lists it."""

    path: Path
    name: str
    model: str
    shapes: str
    bytes: int


class ProgramStore:
    """A folder of compiled programs, bounded to ``max_bytes`` (the least recently used go first)."""

    def __init__(self, folder: Path, max_bytes: int = DEFAULT_MAX_BYTES):
        self.folder, self.max_bytes = Path(folder), max_bytes

    def path_for(self, digest: str) -> Path:
        return self.folder / f"{digest}{SUFFIX}"

    def _notice(self, text: str) -> None:
        if text not in _NOTICED:  # one line per refused folder or entry, not one per program
            _NOTICED.add(text)
            log.warning("%s", text)

    def _folder_trusted(self) -> bool:
        """Whether the folder may be read and written (missing: it will be created private); noticed once if not."""
        try:
            info = os.stat(self.folder)
        except FileNotFoundError:
            return True
        except OSError as err:
            self._notice(f"program cache: cannot use {self.folder} ({err.strerror or err}); compiling instead")
            return False
        try:
            if not stat.S_ISDIR(info.st_mode):
                raise UntrustedEntry(f"{self.folder} is not a folder")
            check_trusted(info, self.folder, "the folder")
        except UntrustedEntry as err:
            self._notice(f"program cache: not used: {err}; compiling instead")
            return False
        return True

    def load(self, digest: str, key: dict[str, Any]) -> jax.stages.Compiled | None:
        """The program stored under ``digest``, or None when there is none or it cannot be trusted (noticed)."""
        path = self.path_for(digest)
        if not self._folder_trusted():
            return None
        try:
            data, info = read_regular(path)
            check_trusted(info, path, "the entry")
        except FileNotFoundError:
            return None
        except UntrustedEntry as err:
            self._notice(f"program cache: not used: {err}; compiling instead")
            return None
        except OSError as err:  # a link (ELOOP), unreadable ...
            self._notice(f"program cache: cannot read {path} ({err.strerror or err}); compiling instead")
            return None
        try:
            payload = _verified_payload(data, digest)
            serialized, in_tree, out_tree = pickle.loads(payload)
            from jax.experimental.serialize_executable import deserialize_and_load

            compiled = deserialize_and_load(serialized, in_tree, out_tree)
        except Exception as err:
            log.warning("program cache: %s for %s was unusable (%s); rebuilding it", path.name, key.get("name"), err)
            path.unlink(missing_ok=True)
            return None
        with contextlib.suppress(OSError):  # another process may have trimmed it meanwhile
            os.utime(path)  # recently used: kept longest when the folder is trimmed
        return compiled

    def save(self, digest: str, key: dict[str, Any], compiled: jax.stages.Compiled) -> None:
        """Store ``compiled`` under ``digest``; a program that cannot be serialized or written is skipped."""
        if not self._folder_trusted():
            return
        try:
            from jax.experimental.serialize_executable import serialize

            payload = pickle.dumps(serialize(compiled))
        except Exception as err:
            log.debug("program cache: %s not stored (%s)", key.get("name"), err)
            return
        header = {"digest": digest, "key": key, "bytes": len(payload),
                  "sha256": hashlib.sha256(payload).hexdigest()}
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # private (parents get the usual mode)
            if not self._folder_trusted():
                return
            write_atomically(self.path_for(digest), MAGIC + json.dumps(header).encode() + b"\n" + payload,
                             "a compiled program", mode=0o600)
        except (OSError, JaxdreamError) as err:
            log.warning("program cache: %s; this program will be compiled again next time", err)
            return
        self.trim()

    def _own_files(self, temps: bool = False) -> list[tuple[Path, os.stat_result]]:
        """The files this store wrote: entries (and, with ``temps``, their temp files) by name and magic line;
        anything else in the folder (links, FIFOs, other files) is left alone."""
        if not self.folder.is_dir():
            return []
        found = []
        for path in sorted(self.folder.iterdir()):
            if not (ENTRY_NAME.fullmatch(path.name) or (temps and TEMP_NAME.fullmatch(path.name))):
                continue
            with contextlib.suppress(OSError, UntrustedEntry):  # gone meanwhile, a link, not a regular file
                head, info = read_regular(path, len(MAGIC))
                if head == MAGIC or (TEMP_NAME.fullmatch(path.name) and info.st_size == 0):
                    found.append((path, info))
        return found

    def entries(self) -> list[StoredProgram]:
        """Every entry with its readable key (unreadable ones as '?'); only regular files are opened."""
        found = []
        for path, info in self._own_files():
            key: dict[str, Any] = {}
            with contextlib.suppress(OSError, ValueError, AttributeError, UntrustedEntry):
                head, _ = read_regular(path, 1 << 20)
                header = json.loads(head[len(MAGIC):].split(b"\n", 1)[0])
                key = header.get("key", {}) if isinstance(header, dict) else {}
            key = key if isinstance(key, dict) else {}
            found.append(StoredProgram(path, str(key.get("name", "?")), str(key.get("model", "?"))[:80],
                                       str(key.get("args", "?")), info.st_size))
        return found

    def clear(self) -> int:
        """Remove the store's own entries (and stray temp files), nothing else; returns how many bytes were freed."""
        freed = 0
        for path, info in self._own_files(temps=True):
            with contextlib.suppress(OSError):  # removed meanwhile
                path.unlink()
                freed += info.st_size
        return freed

    def trim(self) -> None:
        sizes = {path: (info.st_mtime, info.st_size) for path, info in self._own_files()}
        total = 0
        for path in sorted(sizes, key=lambda p: sizes[p][0], reverse=True):
            total += sizes[path][1]
            if total > self.max_bytes:
                path.unlink(missing_ok=True)


def _verified_payload(data: bytes, digest: str) -> bytes:
    if not data.startswith(MAGIC):
        raise ValueError("not a jaxdream program file")
    end = data.find(b"\n", len(MAGIC))
    if end < 0:
        raise ValueError("truncated header")
    header = json.loads(data[len(MAGIC) : end])
    if not isinstance(header, dict) or header.get("digest") != digest:
        raise ValueError("made for another program")
    payload = data[end + 1 :]
    if len(payload) != header.get("bytes") or hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise ValueError("truncated or corrupt")
    return payload


def cache_enabled() -> bool:
    """False when $JAXDREAM_NO_CACHE is set (to anything but 0): compiled programs stay in memory only."""
    return os.environ.get(DISABLE_ENV, "") in ("", "0")


def disable_cache() -> None:
    """Keep compiled programs in memory only for the rest of this process (the command line's --no-cache)."""
    os.environ[DISABLE_ENV] = "1"


def program_store() -> ProgramStore:
    """The store's folder, $JAXDREAM_HOME/programs, whether the cache is on or off (to list or clear it)."""
    return ProgramStore(home_dir() / "programs")


def default_store() -> ProgramStore | None:
    """The store under $JAXDREAM_HOME/programs, or None when $JAXDREAM_NO_CACHE is set."""
    return program_store() if cache_enabled() else None
