"""Where outputs go and what they are called: the one place every command takes its folder, format and names from.

Names follow Darknet's: ``<image stem>_<model>_<tag>_<ending>.<format>``, where the stem is the file name up to
its first dot (Darknet's ``basecfg``) and the ending is the round (``000003``) or a mode's word (``deepdream``).
Every name of a run is planned at once from the whole input list, so two inputs never share an output, whatever
their folders and names, and a resumed or multi-process run plans the same names.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path

from jaxdream.checks import check_count
from jaxdream.errors import OptionError
from jaxdream.files import standard_stream

FORMATS = ("jpg", "png")
MOVING_FORMATS = ("mp4", "gif", "webp")


def file_stem(path: str | Path) -> str:
    """Darknet's ``basecfg``: the file name up to its first dot."""
    return Path(path).name.split(".", 1)[0]


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise OptionError(f"--format {fmt!r}: use {' or '.join(FORMATS)}")
    return fmt


def output_folder(folder: str | Path | None) -> Path:
    """The output folder (default: the current one), created with its parents; refused before any work, naming
    the path in the way, when it cannot be."""
    folder = Path(folder) if folder is not None else Path(".")
    existing = next(p for p in (folder, *folder.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise OptionError(f"output folder {folder}: {existing} is a file, not a folder; choose another --out")
    if not os.access(existing, os.W_OK):
        raise OptionError(f"output folder {folder}: {existing} is not writable; choose another --out")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OptionError(f"output folder {folder}: cannot create it ({err.strerror or err}); choose another --out"
                          ) from None
    return folder


def output_names(sources: Sequence[Path], folder: Path, model: str, tag: str, endings: Sequence[str],
                 fmt: str) -> dict[Path, list[Path]]:
    """Each source's output paths, ``folder / <stem>_<model>_<tag>_<ending>.<fmt>`` for every ending; a source
    whose names would meet an earlier source's gets a hash of its resolved path after the stem (and a counter in
    the unlikely case that still meets one)."""
    if fmt not in MOVING_FORMATS:
        check_format(fmt)
    taken: set[str] = set()
    planned: dict[Path, list[Path]] = {}
    for source in sources:
        stem = file_stem(source)
        names = _names(stem, model, tag, endings, fmt)
        if taken & set(names):
            digest = hashlib.sha256(str(Path(source).resolve()).encode()).hexdigest()[:8]
            names, n = _names(f"{stem}_{digest}", model, tag, endings, fmt), 1
            while taken & set(names):
                names, n = _names(f"{stem}_{digest}-{n}", model, tag, endings, fmt), n + 1
        taken.update(names)
        planned[source] = [folder / name for name in names]
    return planned


def _names(stem: str, model: str, tag: str, endings: Sequence[str], fmt: str) -> list[str]:
    # a layer named 'fire5/concat_1' or a model named 'x/../y' (a hand-edited .h5) must not make or leave a folder
    model, tag = (re.sub(r"[^\w.-]+", "_", text.strip()).strip(".") or "_" for text in (model, tag))
    return [f"{stem}_{model}_{tag}_{ending}.{fmt}" for ending in endings]


PathsLike = str | Path | None | Iterable[str | Path | None]


def _paths(value: PathsLike) -> list[Path]:
    if value is None or (isinstance(value, str) and value in ("", "-")):  # "-": a model that carries its weights
        return []
    if isinstance(value, str | Path):
        return [Path(value)]
    return [p for item in value for p in _paths(item)]


def _identities(path: Path) -> list[object]:
    """What makes two names the same file: the resolved path (links followed, also for a file not yet made) and,
    for an existing file, its device and inode (hard links)."""
    found: list[object] = []
    with contextlib.suppress(OSError, RuntimeError):
        found.append(path.resolve())
    with contextlib.suppress(OSError):
        info = os.stat(path)
        found.append((info.st_dev, info.st_ino))
    return found


def is_stream(path: str | Path) -> bool:
    """Whether ``path`` is one of the process's own streams (/dev/stdout, even when redirected to a file), or is or
    links to a character device or FIFO: written through, never replaced."""
    if standard_stream(path) is not None:
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def check_io(reads: Mapping[str, PathsLike], writes: Mapping[str, PathsLike], streams: Collection[str] = (),
             trees: Mapping[str, PathsLike] | None = None) -> None:
    """The one rule every command checks before any work: the files a run reads and the files it writes never meet.

    ``reads`` and ``writes`` map what the user calls them (``IMAGE``, ``--guide``, ``--stats``, ``output``) to a
    path or paths. A write is refused when it is the same file as a read (followed through links: resolved path or
    inode), the same file as another write, a symbolic link (a link is never replaced) or anything but a regular
    file; only the writes named in ``streams`` may be a character device or FIFO (``--stats /dev/stdout``), which is
    written through. ``trees``: folders the run writes into or removes (a video's frame store): no read may lie in
    one. Raises ``OptionError`` naming both files.
    """
    seen: dict[object, tuple[str, Path]] = {}
    for label, value in reads.items():
        for path in _paths(value):
            for identity in _identities(path):
                seen.setdefault(identity, (label, path))
    inputs = dict(seen)
    for label, value in writes.items():
        for path in _paths(value):
            if is_stream(path):
                if label not in streams:
                    raise OptionError(f"{label} {path} is a device or FIFO, not a file; choose a file name")
                continue
            for identity in _identities(path):
                if identity in seen:
                    other, where = seen[identity]
                    if identity in inputs:
                        raise OptionError(f"{label} {path} is an input of this run ({other} {where}); writing it "
                                          "would destroy it; choose another name or --out")
                    raise OptionError(f"{label} {path} is also {other} {where}: two outputs of this run would "
                                      "overwrite each other; choose another name")
            for identity in _identities(path):
                seen[identity] = (label, path)
            if path.is_symlink():
                raise OptionError(f"{label} {path} is a symbolic link, which jaxdream never replaces or writes "
                                  "through; name the file itself" + (" (or a stream such as /dev/stdout)"
                                                                     if label in streams else ""))
            if path.exists() and not path.is_file():
                raise OptionError(f"{label} {path}: a folder or another non-file has that name; choose another")
    for label, value in (trees or {}).items():
        for tree in _paths(value):
            with contextlib.suppress(OSError, RuntimeError):
                root = tree.resolve()
                for identity, (other, where) in inputs.items():
                    if isinstance(identity, Path) and identity.is_relative_to(root):
                        raise OptionError(f"{other} {where} lies in {tree}, the {label} this run writes and removes; "
                                          "move it or choose another output")


def check_not_input(target: str | Path, inputs: Sequence[str | Path | None], what: str) -> Path:
    """``target`` unless it is one of the run's inputs (followed through links): writing it would destroy one."""
    check_io({"input": inputs}, {what: target})
    return Path(target)


def check_report_path(path: str | Path | None, inputs: Sequence[str | Path | None], what: str = "--stats"
                      ) -> Path | None:
    """A file a report will be written to at the end, checked before any work: its folder exists and is writable,
    it is not a folder or a link, and it is none of the run's inputs (a stream such as /dev/stdout is written
    through)."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        raise OptionError(f"{what} {path}: a folder has that name; give a file name")
    check_io({"input": inputs}, {what: path}, streams=[what])
    if is_stream(path):
        return path
    if not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
        raise OptionError(f"{what} {path}: the folder {path.parent} does not exist or is not writable")
    return path


def round_endings(rounds: int) -> list[str]:
    """Darknet's per-round endings: 000000, 000001, ..."""
    return [f"{r:06d}" for r in range(check_count("rounds", rounds, 1))]
