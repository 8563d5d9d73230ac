"""Batch dreaming of many images: discovery, size buckets, vmapped batches sharded over local devices, a manifest,
resume, and one slice of the inputs per process on several hosts.

Every image of a run uses the same random schedule (drawn from the seed), and batches are formed from the whole
sorted input list, so an image's result does not depend on which batch, device or process dreamed it, or on
whether the run was interrupted and resumed.
"""

from __future__ import annotations

import collections
import errno
import glob
import hashlib
import json
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxdream import dream, image
from jaxdream.dream import core
from jaxdream.dream.runner import Program, RunStats, program_cache
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
        self._lock = threading.Lock()  # the dreaming and the writing thread both append
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
    """What a batch run did, for the closing line of the command."""

    done: int = 0
    skipped: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    sizes: int = 0  # distinct image sizes dreamed
    peak_decoded: int = 0  # most decoded images alive at once (bounded by the batches in flight)
    stats: RunStats = field(default_factory=RunStats)

    @property
    def ok(self) -> bool:
        return not self.errors


def _mesh(batch_size: int) -> Mesh | None:
    devices = jax.local_devices()
    if len(devices) < 2:
        return None
    if batch_size % len(devices):
        raise OptionError(f"--batch-size {batch_size} must be a multiple of the {len(devices)} local devices")
    return Mesh(np.array(devices), ("batch",))


def dream_batch(model: ModelBase, job: Job, x: np.ndarray, mesh: Mesh | None, stats: RunStats | None = None
                ) -> np.ndarray:
    """(B, H, W, 3) -> (rounds, B, H, W, 3) with the job's mode and options."""
    images = jax.device_put(x, NamedSharding(mesh, PartitionSpec("batch"))) if mesh is not None else x
    options = dict(job.options)
    if job.mode == "nightmare":
        return dream.nightmare(model, images, seed=job.seed, stats=stats, **options)
    if job.mode == "deepdream":
        options.pop("rounds", None)
        return dream.deepdream(model, images, seed=job.seed, stats=stats, **options)
    return dream.lucid(model, images, seed=job.seed, stats=stats, **options)


class _Decoded:
    """Counts the decoded images alive (decoded, not yet written), to prove the pipeline's memory bound."""

    def __init__(self) -> None:
        self.alive = self.peak = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.alive += n
            self.peak = max(self.peak, self.alive)


def _decode(path: Path, size: tuple[int, int] | None, counter: _Decoded) -> np.ndarray | str:
    """The image as the dream sees it, or the error message that replaces it in the manifest."""
    try:
        x = image.load_image(path)
    except ImageError as err:
        return str(err)
    except MemoryError:
        return f"{path}: too large for memory"
    if size is not None and x.shape[:2] != size:
        resize = Program("resize", None, size, lambda: lambda a: image.darknet_resize(a, *size))
        x = np.asarray(program_cache()(resize, x))
    counter.add(1)
    return x


def _plan(paths: list[Path], size: tuple[int, int] | None, batch_size: int
          ) -> tuple[list[list[Path]], dict[Path, str], int]:
    """Batches of one size each (from the image headers, without decoding), the unreadable inputs, and how many
    distinct sizes there are."""
    buckets: dict[tuple[int, int], list[Path]] = {}
    errors: dict[Path, str] = {}
    for path in paths:
        try:
            hw = size if size is not None else image.image_size(path)
        except ImageError as err:
            errors[path] = str(err)
            continue
        buckets.setdefault(hw, []).append(path)
    batches = [bucket[i : i + batch_size] for bucket in buckets.values() for i in range(0, len(bucket), batch_size)]
    return batches, errors, len(buckets)


class _Writer:
    """The background thread that encodes and writes each finished batch and its manifest records, in order.
    The queue is bounded, so dreaming waits for writing rather than piling frames up in memory."""

    def __init__(self, write: Callable[[list[Path], np.ndarray], None], depth: int):
        self.queue: queue.Queue[tuple[list[Path], np.ndarray] | None] = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self._write, self._abort = write, threading.Event()
        self._thread = threading.Thread(target=self._run, name="jaxdream-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is None and not self._abort.is_set():
                try:
                    self._write(*item)
                except BaseException as err:
                    self.error = err

    def put(self, group: list[Path], frames: np.ndarray) -> None:
        self._raise()
        self.queue.put((group, frames))

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def close(self, abort: bool = False) -> None:
        """Write what is queued and stop (raising the writer's error), or with ``abort`` drop it and stop."""
        if abort:
            self._abort.set()
        self.queue.put(None)
        self._thread.join()
        if not abort:
            self._raise()


def run_batch(
    model: ModelBase, job: Job, inputs: list[Path], out: Path, batch_size: int = 4, tag: str = "",
    process: tuple[int, int] = (0, 1), resume: bool = False,
    progress: Callable[[int, int], None] | None = None, prefetch: int = 2, decoders: int = 2,
) -> Summary:
    """Dream ``inputs`` (this process's slice of them) into ``out``; returns what was done and what failed.

    A streaming pipeline: the headers give each image's size and so the batches; ``decoders`` threads decode the
    next ``prefetch`` batches while one dreams; a writer thread encodes and writes what is done. Memory holds
    only the batches in flight, whatever the number of inputs.
    """
    if job.mode not in MODES:
        raise OptionError(f"unknown mode {job.mode!r}; use one of {', '.join(MODES)}")
    core.check_count("batch-size", batch_size, 1)
    core.check_count("prefetch", prefetch, 1)
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
    record = {"job": job.key(), "mode": job.mode, "options": job.options, "seed": job.seed}

    def failed(path: Path, message: str) -> None:
        manifest.append({"input": str(path.resolve()), "status": "error", "error": message, **record})
        summary.errors.append((str(path), message))

    batches, unreadable, summary.sizes = _plan(todo, job.size, batch_size)
    for path, message in unreadable.items():
        failed(path, message)
    if todo and progress:
        progress(len(summary.errors), len(todo))
    counter = _Decoded()

    def write(group: list[Path], frames: np.ndarray) -> None:
        for i, path in enumerate(group):
            for r, target in enumerate(names[path]):
                image.save_image(target, frames[r, i])
            manifest.append({"input": str(path.resolve()), "outputs": [str(t) for t in names[path]],
                             "status": "done", **record})
            summary.done += 1
            counter.add(-1)
            if progress:
                progress(summary.done + len(summary.errors), len(todo))

    mesh = _mesh(batch_size)
    pool = ThreadPoolExecutor(max_workers=decoders, thread_name_prefix="jaxdream-decode")
    writer = _Writer(write, prefetch)
    pending: collections.deque[list[Future]] = collections.deque()
    try:
        for group in batches[:prefetch]:
            pending.append([pool.submit(_decode, p, job.size, counter) for p in group])
        for b, group in enumerate(batches):
            decoded = [future.result() for future in pending.popleft()]
            if b + prefetch < len(batches):
                pending.append([pool.submit(_decode, p, job.size, counter) for p in batches[b + prefetch]])
            for path, result in zip(group, decoded, strict=True):
                if isinstance(result, str):
                    failed(path, result)
            good = [(p, x) for p, x in zip(group, decoded, strict=True) if not isinstance(x, str)]
            if not good:
                continue
            stack = np.stack([x for _, x in good] + [good[-1][1]] * (batch_size - len(good)))  # fixed batch shape
            del decoded
            writer.put([p for p, _ in good], dream_batch(model, job, stack, mesh, summary.stats))
            del good, stack
    except BaseException:
        writer.close(abort=True)  # Ctrl-C or an error: stop now; --resume redoes what was not written
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    writer.close()
    summary.seconds = time.perf_counter() - start
    summary.peak_decoded = counter.peak
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
