"""Batch dreaming of many images: discovery, size buckets, vmapped batches sharded over local devices, a manifest,
resume, and one slice of the inputs per process on several hosts.

Every image of a run uses the same random schedule (drawn from the seed), and batches are formed from the whole
sorted input list, so an image's result does not depend on which batch, device or process dreamed it, or on
whether the run was interrupted and resumed.

A nightmare over images of several sizes dreams them on shared canvases (dream/canvas.py: one set of compiled
programs for sizes within 2x the pixels of each other, planned from the sizes of the whole input list), unless
``exact_sizes`` asks for one set of programs per size, each image's result then byte-identical to ``nightmare``
on that image alone.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import logging
import os
import queue
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxdream import checks, dream, image, interrupts
from jaxdream.compiled.cache import Program, program_cache
from jaxdream.compiled.stats import RunStats
from jaxdream.dream import canvas, engine
from jaxdream.dream.lucid_mode import output_tag
from jaxdream.dream.validate import validate
from jaxdream.errors import ImageError, JaxdreamError, OptionError, SizeError
from jaxdream.files import read_user_file, write_atomically
from jaxdream.manifests import Manifest, done_inputs, file_sha256, read_records, read_records_of
from jaxdream.ops import default_precision
from jaxdream.outputs import check_format, check_io, output_folder, output_names, round_endings
from jaxdream.protocol import Model, layer_key
from jaxdream.shards import DEFAULT_LEASE_SECONDS, Claims, Shard, Share, write_plan

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}
LIST_SUFFIXES = {".txt", ".lst", ".list"}
MAX_LIST_BYTES = 64 << 20  # a million long paths
BATCH_MODES = ("nightmare", "lucid", "deepdream")


def discover(inputs: list[str], out: str | Path | None = None) -> list[Path]:
    """Image files from paths, folders (recursive), globs, and text files listing one path per line.

    A batch never takes its own outputs: a folder walk skips ``out`` and every folder holding a jaxdream manifest
    (below the folder given), and any file a manifest beside it records as an output is left out, however it was
    named (so ``--out`` may even be the input folder).
    """
    found: list[Path] = []
    outputs = _DreamFolders(out)
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for root, dirs, files in os.walk(path):  # links to folders are not followed: no endless search
                dirs[:] = sorted(d for d in dirs if not outputs.is_dream_folder(Path(root) / d))
                found += [Path(root) / f for f in files
                          if Path(f).suffix.lower() in IMAGE_SUFFIXES and (Path(root) / f).is_file()]
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            found += [path.parent / line for line in _list_lines(path)]
        elif path.is_file():
            found.append(path)
        elif any(ch in item for ch in "*?["):
            found += _glob(item)
        else:
            raise OptionError(f"{item}: no such file, folder or matching glob")
    unique = sorted({p.resolve(): p for p in found}.values(), key=lambda p: str(p.resolve()))
    kept = [p for p in unique if not outputs.is_output(p)]
    if len(kept) < len(unique):
        logging.getLogger("jaxdream").warning("batch: %d file(s) that jaxdream wrote (recorded in a manifest) "
                                              "left out of the inputs", len(unique) - len(kept))
    if not kept:
        raise OptionError(f"no images found in {', '.join(inputs)}"
                          + (" (only outputs of earlier runs)" if unique else ""))
    return kept


class _DreamFolders:
    """Recognises a batch's own outputs: the output folder, folders holding a manifest, and the files their
    manifests record as outputs."""

    def __init__(self, out: str | Path | None) -> None:
        self.out = Path(out).resolve() if out is not None else None
        self._recorded: dict[Path, set[str]] = {}

    def is_dream_folder(self, folder: Path) -> bool:
        with contextlib.suppress(OSError):
            if self.out is not None and folder.resolve() == self.out:
                return True
            return any(folder.glob("manifest*.jsonl"))
        return False

    def is_output(self, path: Path) -> bool:
        folder = path.resolve().parent
        if folder not in self._recorded:
            names: set[str] = set()
            for record in read_records(folder):
                written = record.get("outputs")
                if isinstance(written, list) and record.get("mode") in BATCH_MODES:  # not render's, atlas's
                    names.update(str(name) for name in written)
            self._recorded[folder] = names
        return path.resolve().name in self._recorded[folder]


def _list_lines(path: Path) -> list[str]:
    """The paths a list file names, one a line ('#' starts a comment)."""
    lines = []
    data = read_user_file(path, "the list file", MAX_LIST_BYTES, OptionError, "split the list into several files")
    for number, raw in enumerate(data.splitlines(), 1):
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise OptionError(f"{path}:{number}: the line is not UTF-8 text; save the list as UTF-8") from None
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def _glob(pattern: str) -> list[Path]:
    """Files matching ``pattern`` (``**`` for any depth). pathlib's glob does not descend into symlinked folders,
    so a link to a parent (``s1 -> .``) cannot make the search endless."""
    parts = Path(pattern).parts
    first = next(i for i, part in enumerate(parts) if any(ch in part for ch in "*?["))
    root = Path(*parts[:first]) if first else Path(".")
    return [p for p in root.glob(str(Path(*parts[first:]))) if p.is_file()]


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

    @property
    def endings(self) -> list[str]:
        """What output names end in: the round (Darknet's 000000), or the mode's word for deepdream's one image."""
        return ["deepdream"] if self.mode == "deepdream" else round_endings(self.rounds)

    @property
    def tag(self) -> str:
        """What output names carry after the model: the layer, or the classes of a lucid dream."""
        return output_tag(self.options["classes"]) if self.mode == "lucid" else str(self.options["layer"])


MODE_OPTIONS = {
    "nightmare": {"layer", "rounds", "iters", "layer_range", "octaves", "rate", "thresh", "zoom", "rotate",
                  "objective", "channel", "precision", "tile", "memory", "exact_sizes"},
    "lucid": {"classes", "iters", "rate", "target_scale", "octaves", "rounds", "zoom", "rotate", "precision"},
    "deepdream": {"layer", "octaves", "octave_scale", "iters", "rate", "objective", "channel", "precision", "tile",
                  "memory"},
}
MAX_SIZE_PIXELS = image.MAX_PIXELS


def parse_size(text: str) -> tuple[int, int]:
    """'WIDTHxHEIGHT' -> (height, width), each at least 1 and the whole no larger than an image may be."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise OptionError(f"--size {text!r}: write it as WIDTHxHEIGHT, e.g. 224x224") from None
    if w < 1 or h < 1 or w * h > MAX_SIZE_PIXELS:
        raise OptionError(f"--size {text!r}: width and height must be at least 1 and their product at most "
                          f"{MAX_SIZE_PIXELS:,} pixels")
    return h, w


def make_job(mode: str, model: str, options: dict[str, Any], seed: int, size: str | None = None,
             fmt: str = "jpg") -> Job:
    """A batch job from a mode and its options, each checked: the options the mode takes, the one it needs, the
    seed, the size and the format."""
    if mode not in MODE_OPTIONS:
        raise OptionError(f"unknown mode {mode!r}; use one of {', '.join(MODE_OPTIONS)}")
    wrong = sorted(set(options) - MODE_OPTIONS[mode])
    if wrong:
        raise OptionError(f"{mode} does not take {', '.join('--' + w.replace('_', '-') for w in wrong)}")
    needed = "classes" if mode == "lucid" else "layer"
    if needed not in options:
        raise OptionError(f"{mode} needs --{'class' if needed == 'classes' else 'layer'}")
    options = {**options, **({"layer": layer_key(options["layer"])} if "layer" in options else {})}
    return Job(mode, model, options, checks.check_seed(seed), parse_size(size) if size else None,
               check_format(fmt))


def join_processes(coordinator: str | None, num_processes: int | None, process_id: int | None
                   ) -> tuple[int, int]:
    """Join a multi-process run when asked (arguments, or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
    JAX_PROCESS_ID); returns (this process's index, process count)."""
    coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS")
    num_processes = num_processes if num_processes is not None else _env_int("JAX_NUM_PROCESSES")
    process_id = process_id if process_id is not None else _env_int("JAX_PROCESS_ID")
    if not num_processes or num_processes == 1:
        return 0, 1
    if num_processes < 1:
        raise OptionError(f"--num-processes {num_processes} must be at least 1")
    if coordinator is None or process_id is None:
        raise OptionError("a multi-process run needs --coordinator HOST:PORT, --num-processes and --process-id")
    if not 0 <= process_id < num_processes:
        raise OptionError(f"--process-id {process_id} must be in 0 .. {num_processes - 1} for {num_processes} "
                          "processes")
    jax.distributed.initialize(coordinator, num_processes, process_id)
    return jax.process_index(), jax.process_count()


def launch_id() -> str:
    """An id that every process of this multi-process launch shares (process 0 draws it and sends it to all), so
    that the merge waits for this launch's end lines, never for an earlier run's."""
    from jax.experimental import multihost_utils

    drawn = np.int32(secrets.randbits(31)) if jax.process_index() == 0 else np.int32(0)
    return f"{int(multihost_utils.broadcast_one_to_all(drawn)):08x}"


def _env_int(name: str) -> int | None:
    text = os.environ.get(name)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise OptionError(f"{name}={text!r} is not a whole number") from None


@dataclass
class Summary:
    """What a batch run did, for the closing line of the command."""

    done: int = 0
    skipped: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    sizes: int = 0  # distinct image sizes dreamed
    canvases: int = 0  # canvases shared by several of them
    peak_decoded: int = 0  # most decoded images alive at once (bounded by the batches in flight)
    claimed: int = 0  # batches this worker claimed (--claim)
    taken_over: int = 0  # of them, batches whose earlier worker's lease had expired
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


def dream_batch(model: Model, job: Job, x: np.ndarray, mesh: Mesh | None, stats: RunStats | None = None,
                sizes: np.ndarray | None = None) -> np.ndarray:
    """(B, H, W, 3) -> (rounds, B, H, W, 3) with the job's mode and options (``sizes``: each image's true size on
    canvases, nightmare only)."""
    images = jax.device_put(x, NamedSharding(mesh, PartitionSpec("batch"))) if mesh is not None else x
    options = dict(job.options)
    options.pop("exact_sizes", None)
    if job.mode == "nightmare":
        return dream.nightmare(model, images, seed=job.seed, stats=stats, sizes=sizes, **options)
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


@dataclass(frozen=True)
class _Batch:
    """Images dreamed together: all of one size (``sizes`` None), or of several sizes on one canvas."""

    paths: list[Path]
    canvas: tuple[int, int]
    sizes: list[tuple[int, int]] | None


def _plan(paths: list[Path], size: tuple[int, int] | None, batch_size: int, canvases: dict[tuple[int, int],
          tuple[int, int]]) -> tuple[list[_Batch], dict[Path, str], int]:
    """Batches of one size or one canvas each (from the image headers, without decoding), the unreadable inputs,
    and how many distinct sizes there are."""
    buckets: dict[tuple[int, int], list[tuple[Path, tuple[int, int]]]] = {}
    errors: dict[Path, str] = {}
    for path in paths:
        try:
            hw = size if size is not None else image.image_size(path)
        except ImageError as err:
            errors[path] = str(err)
            continue
        key = (canvases[hw], True) if hw in canvases else (hw, False)
        buckets.setdefault(key, []).append((path, hw))
    batches = []
    for (canvas_size, shared), members in buckets.items():
        for i in range(0, len(members), batch_size):
            chunk = members[i : i + batch_size]
            batches.append(_Batch([p for p, _ in chunk], canvas_size, [hw for _, hw in chunk] if shared else None))
    return batches, errors, len({hw for members in buckets.values() for _, hw in members})


def _canvas_plan(model: Model, job: Job, inputs: list[Path], batch_size: int) -> dict[tuple[int, int],
                                                                                      tuple[int, int]]:
    """Each image size of the whole input list that shares a canvas with another -> that canvas (sizes left out
    are dreamed on their own, as all are when the job cannot use canvases). Planned from every process's inputs,
    so the plan, and so each result, is the same however the inputs are split or resumed (a canvas that the batch
    size would make too large to dream untiled is dropped, so there the batch size decides)."""
    if job.mode != "nightmare" or job.size is not None or job.options.get("exact_sizes"):
        return {}
    options = job.options
    config = dream.DreamConfig(
        layer=model.resolve_layer(options["layer"]), layer_range=options.get("layer_range", 1),
        iters=options.get("iters", 10), octaves=options.get("octaves", 4), objective=options.get("objective",
                                                                                               "darknet"))
    if canvas.canvas_problem(model, config, job.rounds, options.get("zoom", 1.0), options.get("rotate", 0.0),
                             options.get("tile"), options.get("memory")) is not None:
        return {}
    sizes = set()
    for path in inputs:
        with contextlib.suppress(ImageError, JaxdreamError):  # a size too small for the layer fails on its own
            hw = image.image_size(path)
            validate(model, config, *hw)
            sizes.add(hw)
    plan = canvas.plan_canvases(sizes)
    shared = {c for c in plan.values() if list(plan.values()).count(c) > 1}
    # A canvas that would be tiled is not used: tiles are planned per image size.
    return {hw: c for hw, c in plan.items()
            if c in shared and engine.surely_untiled(model, config, (batch_size, *c, 3), None, None)}


def _next_sizes(batches: list[_Batch]) -> tuple[list[_Batch | None], list[int]]:
    """For each batch, the next batch of another canvas or size (None: none follows), whose programs compile while
    this batch dreams, and how many later batches have this batch's programs."""
    keys = [(b.canvas, b.sizes is not None) for b in batches]
    following: list[_Batch | None] = [None] * len(batches)
    for b in range(len(batches) - 2, -1, -1):
        following[b] = batches[b + 1] if keys[b + 1] != keys[b] else following[b + 1]
    return following, [keys[b + 1 :].count(key) for b, key in enumerate(keys)]


class _Writer:
    """The background thread that encodes and writes each finished batch and its manifest records, in order.
    The queue is bounded, so dreaming waits for writing rather than piling frames up in memory."""

    def __init__(self, write: Callable[[list[Path], list[np.ndarray]], None], depth: int):
        self.queue: queue.Queue[tuple[list[Path], list[np.ndarray], Callable[[], None] | None] | None] = \
            queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self._write, self._abort = write, threading.Event()
        self._thread = threading.Thread(target=self._run, name="jaxdream-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is None and not self._abort.is_set():
                group, frames, after = item
                try:
                    self._write(group, frames)
                    if after is not None:
                        after()
                except BaseException as err:
                    self.error = err

    def put(self, group: list[Path], frames: list[np.ndarray], after: Callable[[], None] | None = None) -> None:
        """Queue a batch's images; ``after`` runs once they are written and recorded."""
        self._raise()
        self.queue.put((group, frames, after))

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def check(self) -> None:
        """Raise the writer's error, if it has failed."""
        self._raise()

    def close(self, abort: bool = False) -> None:
        """Write what is queued and stop (raising the writer's error), or with ``abort`` drop it and stop."""
        if abort:
            self._abort.set()
        self.queue.put(None)
        self._thread.join()
        if not abort:
            self._raise()


def run_key(job: Job, model: Model) -> str:
    """What the manifest records as the maker of each output: the job, the network (architecture and weights) and
    the compute precision it ran in, so --resume redoes what another model or precision made."""
    precision = job.options.get("precision") or default_precision()
    text = f"{job.key()}|{model.fingerprint}|{model.weights_digest}|{precision}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Plan:
    """A run planned before any dreaming: each input's output names, the batches, the inputs whose headers cannot
    be read (the plan's last pseudo-batch, index ``len(batches)``), and what is already done. Planned from the
    whole input list, batch ``k`` is the same images in every worker of one command."""

    key: str  # run_key: what the manifest records as the maker
    names: dict[Path, list[Path]]
    batches: list[_Batch]
    unreadable: dict[Path, str]
    sizes: int  # distinct image sizes
    finished: frozenset[str]  # inputs (resolved) this job has already done in the folder


def plan_run(model: Model, job: Job, inputs: list[Path], out: Path, batch_size: int,
             reads: dict[str, Any] | None = None, skip_done: bool = False,
             stride: tuple[int, int] | None = None) -> Plan:
    """Plan dreaming ``inputs`` into ``out`` (the output names checked against ``reads``, the run's other files).
    ``skip_done``: leave out what the folder's manifests record as done by this job. ``stride`` (index, count):
    batch only ``inputs[index::count]`` not yet done, a ``jax.distributed`` process's share; None: the whole list,
    so that shards, claims and Ray actors agree on every batch."""
    checks.check_count("batch-size", batch_size, 1)
    key = run_key(job, model)
    names = output_names(inputs, out, job.model, job.tag, job.endings, job.format)  # whole list
    check_io({"input": inputs, **(reads or {})}, {"output": list(names.values())})
    finished = frozenset(done_inputs(out, key) if skip_done else ())
    canvases = _canvas_plan(model, job, inputs, batch_size)  # from the whole list: the same for every share
    if stride is not None:
        inputs = [p for p in inputs[stride[0]::stride[1]] if str(p.resolve()) not in finished]
    batches, unreadable, sizes = _plan(inputs, job.size, batch_size, canvases)
    return Plan(key, names, batches, unreadable, sizes, finished)


def run_batch(
    model: Model, job: Job, inputs: list[Path], out: Path, batch_size: int = 4,
    process: tuple[int, int] = (0, 1), resume: bool = False,
    progress: Callable[[int, int], None] | None = None, prefetch: int = 2, decoders: int = 2,
    reads: dict[str, Any] | None = None, shard: Share | None = None, claim: bool = False,
    lease_seconds: float = DEFAULT_LEASE_SECONDS, launch: str = "", plan: Plan | None = None,
) -> Summary:
    """Dream ``inputs`` (this process's slice of them) into ``out``; returns what was done and what failed.

    A streaming pipeline: the headers give each image's size and so the batches; ``decoders`` threads decode the
    next ``prefetch`` batches while one dreams; a writer thread encodes and writes what is done. Memory holds
    only the batches in flight, whatever the number of inputs. ``reads``: the run's other files (model, weights,
    labels), which no output may replace; checked with the inputs before any work. ``shard``: dream only that
    shard's batches of the whole plan (a ``Shard``, or the batches a scheduler assigned, ``Assigned``);
    ``claim``: take batches through leases in ``out`` until all are done (``shards``). ``launch``: the id every
    process of a multi-process launch shares (``launch_id``), on the end line of its manifest part. ``plan``: the
    whole-list plan made once (``plan_run``) for a worker that is handed batch after batch.
    """
    checks.check_count("prefetch", prefetch, 1)
    out = output_folder(out)
    index, count = process
    planned_whole = shard is not None or claim
    if planned_whole and count > 1:
        raise OptionError("--shard and --claim need no coordinator: leave out --coordinator/--num-processes")
    if shard is not None and claim:
        raise OptionError("give --shard I/N (a fixed share) or --claim (batches taken as workers free up), not both")
    if plan is None:  # a shard or claim never redoes work
        plan = plan_run(model, job, inputs, out, batch_size, reads, resume or planned_whole,
                        None if planned_whole else process)
    key, names, batches, unreadable, finished = plan.key, plan.names, plan.batches, plan.unreadable, plan.finished
    claims = Claims(out, write_plan(out, key, inputs, batch_size), lease_seconds) if claim else None
    if isinstance(shard, Shard):
        write_plan(out, key, inputs, batch_size)
    manifest = Manifest(out / (shard.manifest if shard else claims.manifest if claims else
                               f"manifest.part{index}.jsonl" if count > 1 else "manifest.jsonl"))
    summary = Summary(sizes=plan.sizes)
    start = time.perf_counter()
    record = {"job": key, "mode": job.mode, "options": job.options, "seed": job.seed}

    def failed(path: Path, message: str) -> None:
        manifest.append({"input": str(path.resolve()), "status": "error", "error": message, **record})
        summary.errors.append((str(path), message))

    if not planned_whole:
        summary.skipped = sum(str(p.resolve()) in finished for p in inputs[index::count])
    summary.canvases = len({b.canvas for b in batches if b.sizes is not None})
    counter = _Decoded()
    todo = sum(len(b.paths) for b in batches) + len(unreadable)

    def write(group: list[Path], frames: list[np.ndarray]) -> None:
        for i, path in enumerate(group):
            counter.add(-1)
            try:
                files = [image.encode_image(target, frames[i][r]) for r, target in enumerate(names[path])]
                for target, data in zip(names[path], files, strict=True):
                    write_atomically(target, data, "the image", ImageError)
            except ImageError as err:  # this image cannot be encoded or written (NaN, too wide, a name too long)
                failed(path, str(err))
            else:
                manifest.append({"input": str(path.resolve()), "input_sha256": file_sha256(path.resolve()),
                                 "outputs": [t.name for t in names[path]],
                                 "sha256": [hashlib.sha256(data).hexdigest() for data in files], "status": "done",
                                 **record})
                summary.done += 1
            if progress:
                progress(summary.done + len(summary.errors), todo)

    mesh = _mesh(batch_size)
    pool = ThreadPoolExecutor(max_workers=decoders, thread_name_prefix="jaxdream-decode")
    writer = _Writer(write, prefetch)

    def dream_all(batches: list[_Batch], after: Callable[[], None] | None = None) -> None:
        (ahead, repeats), started = _next_sizes(batches), set()
        pending: collections.deque[list[Future]] = collections.deque()
        for batch in batches[:prefetch]:
            pending.append([pool.submit(_decode, p, job.size, counter) for p in batch.paths])
        for b, batch in enumerate(batches):
            interrupts.check()
            decoded = [future.result() for future in pending.popleft()]
            if b + prefetch < len(batches):
                pending.append([pool.submit(_decode, p, job.size, counter) for p in batches[b + prefetch].paths])
            sizes = batch.sizes or [batch.canvas] * len(batch.paths)
            for path, result in zip(batch.paths, decoded, strict=True):
                if isinstance(result, str):
                    failed(path, result)
            good = [(p, x, hw) for p, x, hw in zip(batch.paths, decoded, sizes, strict=True) if not isinstance(x, str)]
            if not good:
                continue
            filled = [x for _, x, _ in good] + [good[-1][1]] * (batch_size - len(good))  # fixed batch shape
            stack = canvas.on_canvas(filled, batch.canvas) if batch.sizes else np.stack(filled)
            true_sizes = np.array([hw for _, _, hw in good] + [good[-1][2]] * (batch_size - len(good)), np.int32) \
                if batch.sizes else None
            del decoded, filled
            # Several processes dream in lockstep (their sharded programs meet in collectives): only a lone process
            # may run the small extra programs that compiling ahead needs.
            if (following := ahead[b]) is not None and id(following) not in started and jax.process_count() == 1:
                started.add(id(following))
                # That size's own dream reports what is wrong with it (e.g. too small for the layer) when its turn
                # comes; compiling ahead only helps.
                with engine.compiling_ahead(), contextlib.suppress(JaxdreamError):
                    dream_batch(model, job, np.full((batch_size, *following.canvas, 3), 0.5, np.float32), mesh,
                                summary.stats, None if following.sizes is None else
                                np.array([following.canvas] * batch_size, np.int32))
            try:
                with engine.repeats(repeats[b]):
                    frames = dream_batch(model, job, stack, mesh, summary.stats, true_sizes)
            except SizeError as err:  # these images (all of one size) do not fit the dream; the rest go on
                for path, _, _ in good:
                    failed(path, f"{path}: {err}")
                continue
            writer.put([p for p, _, _ in good], [frames[:, i, :h, :w] for i, (_, _, (h, w)) in enumerate(good)])
            del frames
            del good, stack
        if after is not None:  # once what was queued is written, whether or not a batch failed
            writer.put([], [], after)

    def unfinished(batch: _Batch) -> _Batch:
        keep = [i for i, p in enumerate(batch.paths) if str(p.resolve()) not in finished]
        summary.skipped += len(batch.paths) - len(keep)
        return _Batch([batch.paths[i] for i in keep], batch.canvas,
                      None if batch.sizes is None else [batch.sizes[i] for i in keep])

    def record_unreadable() -> None:
        for path, message in unreadable.items():
            failed(path, message)

    try:
        if claims is None:
            mine_batches = [unfinished(b) for k, b in enumerate(batches) if shard is None or shard.owns(k)] \
                if planned_whole else batches
            if shard is None or shard.owns(len(batches)):  # the unreadable inputs: the plan's last "batch"
                record_unreadable()
            else:
                todo -= len(unreadable)
            todo -= sum(len(b.paths) for b in batches) - sum(len(b.paths) for b in mine_batches)
            if progress and todo:
                progress(len(summary.errors), todo)
            dream_all([b for b in mine_batches if b.paths])
        else:
            if resume:  # batches marked done whose images are not all recorded (failed, or replaced since)
                claims.reopen([k for k, b in enumerate(batches) if any(str(p.resolve()) not in finished
                                                                       for p in b.paths)]
                              + [len(batches)] * bool(unreadable))  # the unreadable ones: tried again
            for k in claims.batches(len(batches) + 1):
                if k == len(batches):
                    record_unreadable()
                    claims.finish(k)
                else:
                    dream_all([b for b in [unfinished(batches[k])] if b.paths], lambda k=k: claims.finish(k))
                    summary.claimed += 1
                writer.check()
        writer.close()  # everything written and recorded (and claimed batches marked done)
    except BaseException:
        writer.close(abort=True)  # Ctrl-C or an error: stop now; --resume redoes what was not written
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        if claims is not None:
            claims.close()  # after the writer: a lease is let go once its batch is written or abandoned
    if claims is not None:
        summary.taken_over = claims.taken_over
    summary.seconds = time.perf_counter() - start
    summary.peak_decoded = counter.peak
    if count > 1:
        manifest.append({"status": "end", "process": index, "launch": launch})
    return summary


def merge_manifests(out: Path, count: int, launch: str, timeout: float = 3600.0) -> Path:
    """Wait until every process's manifest part has the end line of this ``launch`` (the end lines of an earlier
    run, left in the parts, do not count), then write manifest.jsonl listing all images."""
    deadline = time.monotonic() + timeout
    parts = [out / f"manifest.part{i}.jsonl" for i in range(count)]

    def records(part: Path) -> list[dict[str, Any]]:
        return list(read_records_of(part))

    while not all(any(r.get("status") == "end" and r.get("launch") == launch for r in records(p)) for p in parts):
        if time.monotonic() > deadline:
            raise JaxdreamError(f"{out}: not every process finished within {timeout:.0f}s; merge again later")
        time.sleep(0.2)
    lines = [json.dumps(r, sort_keys=True) for p in parts for r in records(p) if r.get("status") != "end"]
    return write_atomically(out / "manifest.jsonl", "".join(line + "\n" for line in lines), "the merged manifest")
