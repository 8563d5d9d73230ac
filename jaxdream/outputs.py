"""Where outputs go and what they are called: the one place every command takes its folder, format and names from.

Names follow Darknet's: ``<image stem>_<model>_<tag>_<ending>.<format>``, where the stem is the file name up to
its first dot (Darknet's ``basecfg``) and the ending is the round (``000003``) or a mode's word (``deepdream``).
Every name of a run is planned at once from the whole input list, so two inputs never share an output, whatever
their folders and names, and a resumed or multi-process run plans the same names.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

from jaxdream.errors import OptionError

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


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_not_input(target: str | Path, inputs: Sequence[str | Path | None], what: str) -> Path:
    """``target`` unless it is one of the run's inputs (followed through links): writing it would destroy one."""
    target = Path(target)
    for source in inputs:
        if source is not None and str(source) != "-" and _same_file(target, Path(source)):
            raise OptionError(f"{what} {target} is an input of this run ({source}); writing it would destroy it")
    return target


def check_report_path(path: str | Path | None, inputs: Sequence[str | Path | None], what: str = "--stats"
                      ) -> Path | None:
    """A file a report will be written to at the end, checked before any work: its folder exists and is writable,
    it is not a folder, and it is none of the run's inputs or outputs."""
    if path is None:
        return None
    path = check_not_input(path, inputs, what)
    if path.is_dir():
        raise OptionError(f"{what} {path}: a folder has that name; give a file name")
    if not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
        raise OptionError(f"{what} {path}: the folder {path.parent} does not exist or is not writable")
    return path


def round_endings(rounds: int) -> list[str]:
    """Darknet's per-round endings: 000000, 000001, ..."""
    from jaxdream.dream.core import check_count

    return [f"{r:06d}" for r in range(check_count("rounds", rounds, 1))]
