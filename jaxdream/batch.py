"""Batch dreaming of many images: discovery, size buckets, vmapped batches sharded over local devices, a manifest,
resume, and one slice of the inputs per process on several hosts.

Every image of a run uses the same random schedule (drawn from the seed), and batches are formed from the whole
sorted input list, so an image's result does not depend on which batch, device or process dreamed it, or on
whether the run was interrupted and resumed.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxdream import dream, image
from jaxdream.errors import ImageError, JaxdreamError, OptionError
from jaxdream.files import write_atomically
from jaxdream.model import ModelBase

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}
LIST_SUFFIXES = {".txt", ".lst", ".list"}
MODES = ("nightmare", "lucid", "deepdream")


def discover(inputs: list[str]) -> list[Path]:
    """Image files from paths, folders (recursive), globs, and text files listing one path per line."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += [p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            lines = [line.strip() for line in path.read_text().splitlines()]
            found += [(path.parent / line) for line in lines if line and not line.startswith("#")]
        elif path.is_file():
            found.append(path)
        elif any(ch in item for ch in "*?["):
            found += [Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file()]
        else:
            raise OptionError(f"{item}: no such file, folder or matching glob")
    unique = sorted({p.resolve(): p for p in found}.values(), key=lambda p: str(p.resolve()))
    if not unique:
        raise OptionError(f"no images found in {', '.join(inputs)}")
    return unique


@dataclass(frozen=True)
class Job:
    """Everything that decides the output bytes (the manifest records it; --resume compares it)."""

    mode: str
    model: str
    options: dict[str, Any]
    seed: int
    size: tuple[int, int] | None
    format: str = "jpg"

    def key(self) -> str:
        text = json.dumps([self.mode, self.model, self.options, self.seed, self.size, self.format], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def rounds(self) -> int:
        return int(self.options.get("rounds", 1))


def output_names(job: Job, source: Path, tag: str, taken: set[str], folder: Path) -> list[Path]:
    """<stem>_<model>_<tag>_<round:06d>.<ext>; a second input with the same stem gets a path hash added."""
    stem = source.name.split(".", 1)[0]
    if stem in taken:
        stem = f"{stem}_{hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:8]}"
    taken.add(stem)
    return [folder / f"{stem}_{job.model}_{tag}_{r:06d}.{job.format}" for r in range(job.rounds)]


class Manifest:
    """Append-only JSON lines, one per finished (or failed) image, flushed to disk as each is written."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def done(self, job_key: str) -> set[str]:
        """Inputs already finished by this job (same options), whose outputs all still exist."""
        finished = set()
        for record in read_records(self.path.parent):
            if record.get("job") == job_key and record.get("status") == "done" and \
                    all(Path(p).exists() for p in record.get("outputs", [])):
                finished.add(record["input"])
        return finished

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        try:
            with open(self.path, "a+b") as handle:
                # After a kill or a full disk cut the last line, start a fresh one so this record stays readable.
                handle.write(b"\n" + line if _last_line_cut(handle) else line)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as err:
            raise JaxdreamError(f"{self.path}: cannot append to the manifest ({err.strerror or err}); free some "
                                "space, then rerun with --resume") from None


def _last_line_cut(handle: BinaryIO) -> bool:
    size = handle.seek(0, os.SEEK_END)
    if not size:
        return False
    handle.seek(size - 1)
    return handle.read(1) != b"\n"


def read_records(folder: Path) -> Iterator[dict[str, Any]]:
    for path in sorted(folder.glob("manifest*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill: that image is simply redone


@dataclass
class Summary:
    done: int = 0
    skipped: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors


def _load_all(paths: list[Path], size: tuple[int, int] | None) -> tuple[dict[Path, np.ndarray], dict[Path, str]]:
    images, errors = {}, {}
    for path in paths:
        try:
            x = image.load_image(path)
            if size is not None:
                x = np.asarray(image.darknet_resize(jnp.asarray(x), *size))
            images[path] = x
        except (ImageError, MemoryError) as err:
            errors[path] = str(err) if isinstance(err, ImageError) else f"{path}: too large for memory"
    return images, errors


def _buckets(images: dict[Path, np.ndarray]) -> dict[tuple[int, int], list[Path]]:
    buckets: dict[tuple[int, int], list[Path]] = {}
    for path in sorted(images, key=lambda p: str(p.resolve())):
        buckets.setdefault(images[path].shape[:2], []).append(path)
    return buckets


def _mesh(batch_size: int) -> Mesh | None:
    devices = jax.local_devices()
    if len(devices) < 2:
        return None
    if batch_size % len(devices):
        raise OptionError(f"--batch-size {batch_size} must be a multiple of the {len(devices)} local devices")
    return Mesh(np.array(devices), ("batch",))


def dream_batch(model: ModelBase, job: Job, x: np.ndarray, mesh: Mesh | None) -> np.ndarray:
    """(B, H, W, 3) -> (rounds, B, H, W, 3) with the job's mode and options."""
    images = jnp.asarray(x)
    if mesh is not None:
        images = jax.device_put(images, NamedSharding(mesh, PartitionSpec("batch")))
    options = dict(job.options)
    if job.mode == "nightmare":
        return dream.nightmare(model, images, seed=job.seed, **options)
    if job.mode == "deepdream":
        options.pop("rounds", None)
        return dream.deepdream(model, images, seed=job.seed, **options)
    from jaxdream.lucid_dream import lucid

    return lucid(model, images, seed=job.seed, **options)


def run_batch(
    model: ModelBase, job: Job, inputs: list[Path], out: Path, batch_size: int = 4, tag: str = "",
    process: tuple[int, int] = (0, 1), resume: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Summary:
    """Dream ``inputs`` (this process's slice of them) into ``out``; returns what was done and what failed."""
    if job.mode not in MODES:
        raise OptionError(f"unknown mode {job.mode!r}; use one of {', '.join(MODES)}")
    if batch_size < 1:
        raise OptionError(f"--batch-size {batch_size} must be at least 1")
    out.mkdir(parents=True, exist_ok=True)
    index, count = process
    mine = inputs[index::count]
    manifest = Manifest(out / (f"manifest.part{index}.jsonl" if count > 1 else "manifest.jsonl"))
    finished = manifest.done(job.key()) if resume else set()
    taken: set[str] = set()
    names = {path: output_names(job, path, tag, taken, out) for path in inputs}  # names from the whole list
    summary = Summary(skipped=sum(str(p.resolve()) in finished for p in mine))
    todo = [p for p in mine if str(p.resolve()) not in finished]
    start = time.perf_counter()
    images, errors = _load_all(todo, job.size)
    for path, message in errors.items():
        manifest.append({"input": str(path.resolve()), "job": job.key(), "status": "error", "error": message,
                         "mode": job.mode, "options": job.options, "seed": job.seed})
        summary.errors.append((str(path), message))
    if todo and progress:
        progress(len(errors), len(todo))
    mesh = _mesh(batch_size)
    for bucket in _buckets(images).values():
        for first in range(0, len(bucket), batch_size):
            group = bucket[first : first + batch_size]
            stack = np.stack([images[p] for p in group] + [images[group[-1]]] * (batch_size - len(group)))
            frames = dream_batch(model, job, stack, mesh)
            for i, path in enumerate(group):
                for r, target in enumerate(names[path]):
                    image.save_image(target, frames[r, i])
                manifest.append({"input": str(path.resolve()), "outputs": [str(t) for t in names[path]],
                                 "job": job.key(), "status": "done", "mode": job.mode, "options": job.options,
                                 "seed": job.seed})
                summary.done += 1
            if progress:
                progress(summary.done + len(errors), len(todo))
    summary.seconds = time.perf_counter() - start
    if count > 1:
        manifest.append({"status": "end", "process": index})
    return summary


def merge_manifests(out: Path, count: int, timeout: float = 3600.0) -> Path:
    """Wait until every process's manifest part has its end line, then write manifest.jsonl listing all images."""
    deadline = time.monotonic() + timeout
    parts = [out / f"manifest.part{i}.jsonl" for i in range(count)]

    def finished(part: Path) -> bool:
        return part.exists() and any(json.loads(line).get("status") == "end"
                                     for line in part.read_text().splitlines() if line.strip())

    while not all(finished(p) for p in parts):
        if time.monotonic() > deadline:
            raise JaxdreamError(f"{out}: not every process finished within {timeout:.0f}s; merge again later")
        time.sleep(0.2)
    lines = [line for p in parts for line in p.read_text().splitlines()
             if line.strip() and json.loads(line).get("status") != "end"]
    return write_atomically(out / "manifest.jsonl", "".join(line + "\n" for line in lines), "the merged manifest")
