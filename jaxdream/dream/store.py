"""Compiled programs kept on disk, so a second process running the same command neither traces nor compiles.

An entry is one file named by the digest of everything that decides the program (see ``runner.ProgramKey``)
plus the environment it was compiled in (jax/jaxlib versions, jaxdream's source, the devices, XLA flags). It
holds a header line (JSON: the digest, the readable key, the payload's length and sha256) and the payload (the
serialized executable and its argument/result tree structures). An entry that is stale, truncated, corrupt or
made for another key is never used: it is reported with one notice and rebuilt.

The payload is a pickle, loaded only after its checksum and key have been verified; the folder is the user's
own (``$JAXDREAM_HOME/programs``), as trusted as the installed code.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax

from jaxdream.errors import JaxdreamError
from jaxdream.files import write_atomically

MAGIC = b"jaxdream-program 1\n"
SUFFIX = ".program"
DISABLE_ENV = "JAXDREAM_NO_CACHE"  # set to 1 to keep compiled programs in memory only
DEFAULT_MAX_BYTES = 4 << 30
log = logging.getLogger("jaxdream")


@functools.cache
def environment() -> dict[str, Any]:
    """What a compiled program depends on besides its key: versions, jaxdream's source, devices, XLA flags."""
    import jaxlib

    import jaxdream

    source = hashlib.sha256()
    package = Path(jaxdream.__file__).parent
    for path in sorted(package.rglob("*.py")):
        source.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
    devices = jax.local_devices()
    return {
        "jax": jax.__version__, "jaxlib": jaxlib.__version__, "jaxdream_source": source.hexdigest(),
        "platform": devices[0].platform, "device_kind": devices[0].device_kind, "devices": len(devices),
        "processes": jax.process_count(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
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

    def load(self, digest: str, key: dict[str, Any]) -> jax.stages.Compiled | None:
        """The program stored under ``digest``, or None when there is none or it cannot be trusted (noticed)."""
        path = self.path_for(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as err:
            log.warning("program cache: cannot read %s (%s); compiling instead", path, err.strerror or err)
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
        try:
            from jax.experimental.serialize_executable import serialize

            payload = pickle.dumps(serialize(compiled))
        except Exception as err:
            log.debug("program cache: %s not stored (%s)", key.get("name"), err)
            return
        header = {"digest": digest, "key": key, "bytes": len(payload),
                  "sha256": hashlib.sha256(payload).hexdigest()}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_atomically(self.path_for(digest), MAGIC + json.dumps(header).encode() + b"\n" + payload,
                             "a compiled program")
        except (OSError, JaxdreamError) as err:
            log.warning("program cache: %s; this program will be compiled again next time", err)
            return
        self.trim()

    def entries(self) -> list[StoredProgram]:
        """Every entry with its readable key (unreadable ones as '?')."""
        found = []
        for path in sorted(self.folder.glob(f"*{SUFFIX}")) if self.folder.is_dir() else []:
            key: dict[str, Any] = {}
            try:
                with open(path, "rb") as handle:
                    if handle.readline() == MAGIC:
                        header = json.loads(handle.readline())
                        key = header.get("key", {}) if isinstance(header, dict) else {}
                size = path.stat().st_size
            except (OSError, ValueError, AttributeError):
                continue  # gone meanwhile, or not a file
            key = key if isinstance(key, dict) else {}
            found.append(StoredProgram(path, str(key.get("name", "?")), str(key.get("model", "?"))[:12],
                                       str(key.get("args", "?")), size))
        return found

    def clear(self) -> int:
        """Remove every entry (and stray temp files); returns how many bytes were freed."""
        freed = 0
        for path in self.folder.glob(f"*{SUFFIX}*") if self.folder.is_dir() else []:
            with contextlib.suppress(OSError):  # a folder of that name, or removed meanwhile
                size = path.stat().st_size
                path.unlink()
                freed += size
        return freed

    def trim(self) -> None:
        sizes = {}
        for path in self.folder.glob(f"*{SUFFIX}"):
            with contextlib.suppress(OSError):  # another process may trim at the same time
                sizes[path] = (path.stat().st_mtime, path.stat().st_size)
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


def default_store() -> ProgramStore | None:
    """The store under $JAXDREAM_HOME/programs, or None when $JAXDREAM_NO_CACHE is set."""
    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        return None
    from jaxdream.zoo import cache_dir

    return ProgramStore(cache_dir() / "programs")
