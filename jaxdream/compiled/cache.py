"""One compiled-program cache for every caller.

A program is found by a key made without tracing: its name, the fingerprint of what it computes with (a model's
architecture, or nothing), its static configuration, and the shapes, dtypes and shardings of its arguments. The first
call with a key loads the program from the disk store (another process compiled it) or traces and compiles it (and
stores it); every later call in the process reuses it. ``program_cache().info()`` lists what is held.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

import jax
import numpy as np
from jax.sharding import NamedSharding

from jaxdream import interrupts, progress
from jaxdream.compiled.background import AHEAD, URGENT, CompileQueue, wait
from jaxdream.compiled.stats import RunStats
from jaxdream.compiled.store import ProgramStore, default_store, environment

DEFAULT_CAPACITY = 256  # step programs are one per (layer, view size, image size): a few sizes hold dozens
# XLA options per platform, part of every program's key. XLA:CPU's older elemental emitters compile the dream step
# 20-30 % faster than its fusion emitters, and LLVM's optimisation level 2 (of 3) another 20-35 %, each with
# bit-identical results and steps as fast (interleaved medians within 3 %; benchmarks/NOTES.md).
COMPILER_OPTIONS: dict[str, dict[str, Any]] = {
    "cpu": {"xla_cpu_use_fusion_emitters": False, "xla_backend_optimization_level": 2}}
_STATS_LOCK = threading.Lock()  # programs compile on worker threads; their timings go to the caller's RunStats


class Fingerprinted(Protocol):
    """What a program computes with (a model): named, with a fingerprint of its architecture."""

    name: str

    @property
    def fingerprint(self) -> str: ...


def program_peak_bytes(compiled: jax.stages.Compiled) -> int | None:
    """Device memory a compiled program holds: its arguments, outputs and the temporaries XLA's buffer assignment
    allocates (already reused between ops); None where the backend does not say."""
    m = compiled.memory_analysis()
    if m is None:
        return None
    # Not m.peak_memory_in_bytes: XLA:CPU leaves the temporaries out of it.
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)


@dataclass(frozen=True)
class Program:
    """A pure function to compile, named by everything that decides it besides its arguments' shapes.

    ``static`` must be hashable with a stable ``repr`` (a frozen config, a tuple of numbers); ``build`` returns
    the function and is only called when no compiled program is found.
    """

    name: str
    model: Fingerprinted | None
    static: Any
    build: Callable[[], Callable]
    label: str = ""  # what progress notes add to the name ('layer 9 viewed at 120x90')
    options: tuple[tuple[str, Any], ...] = ()  # XLA options over the platform's (COMPILER_OPTIONS), in the key


@dataclass
class CachedProgram:
    """One compiled program held in memory, as ``info()`` reports it."""

    name: str
    model: str
    static: str
    args: str
    source: str  # "compiled" or "loaded" (from the disk store)
    seconds: float
    calls: int
    peak_bytes: int | None
    compiled: jax.stages.Compiled = field(repr=False)


def _leaf_signature(leaf: Any) -> str:
    sharding = getattr(leaf, "sharding", None)
    where = f"@{dict(sharding.mesh.shape)}{sharding.spec}" if isinstance(sharding, NamedSharding) else ""
    return f"{np.dtype(getattr(leaf, 'dtype', type(leaf)))}{tuple(np.shape(leaf))}{where}"


def signature(args: tuple[Any, ...]) -> str:
    """Tree structure, shapes, dtypes and shardings of ``args``: what a compiled program is specialised to."""
    leaves, tree = jax.tree_util.tree_flatten(args)
    return f"{tree}|{';'.join(_leaf_signature(leaf) for leaf in leaves)}"


def _what(name: str, args: tuple[Any, ...], label: str = "") -> str:
    """A program as a person reads it: its name and the size of the images it takes ('dream step (layer 9
    viewed at 576x432) for 768x576, batch 4')."""
    images = next((leaf for leaf in jax.tree_util.tree_leaves(args) if np.ndim(leaf) == 4 and np.shape(leaf)[-1] == 3),
                  None)
    name = name.replace("_", " ") + (f" ({label})" if label else "")
    if images is None:
        return name
    n, h, w, _ = np.shape(images)
    return f"{name} for {w}x{h}" + (f", batch {n}" if n > 1 else "")


def _shapes(args: tuple[Any, ...]) -> str:
    return " ".join("x".join(map(str, np.shape(leaf))) or "()" for leaf in jax.tree_util.tree_leaves(args))


class ProgramCache:
    """Compiled programs by key: an LRU of at most ``capacity`` in memory, backed by a ``ProgramStore`` on disk
    (by default ``$JAXDREAM_HOME/programs`` unless $JAXDREAM_NO_CACHE is set; ``store=None`` for memory only)."""

    _DEFAULT_STORE = object()

    def __init__(self, capacity: int = DEFAULT_CAPACITY, store: ProgramStore | object | None = _DEFAULT_STORE):
        self.capacity, self._store = capacity, store
        self._programs: OrderedDict[tuple[str, ...], CachedProgram] = OrderedDict()
        self._pending: dict[tuple[str, ...], tuple[Future, int]] = {}
        self._compiling: dict[tuple[str, ...], threading.Lock] = {}
        self._lock = threading.Lock()
        self._queue: CompileQueue | None = None

    @property
    def store(self) -> ProgramStore | None:
        return default_store() if self._store is ProgramCache._DEFAULT_STORE else self._store  # type: ignore

    def __call__(self, program: Program, *args: Any, stats: RunStats | None = None) -> Any:
        """Run ``program`` on ``args`` (compiling or loading it on first use) and wait for the result."""
        interrupts.check()
        compiled = self.compiled(program, args, stats)
        start = time.perf_counter()
        out = jax.block_until_ready(compiled(*args))
        if stats is not None:
            stats.run_seconds += time.perf_counter() - start
        return out

    def compiled(self, program: Program, args: tuple[Any, ...], stats: RunStats | None = None) -> jax.stages.Compiled:
        """The compiled program for these arguments, compiling or loading it (on a worker thread) if not held."""
        return wait(self.prefetch(program, args, stats, URGENT))

    def prefetch(self, program: Program, args: tuple[Any, ...], stats: RunStats | None = None,
                 priority: int = AHEAD) -> Future:
        """Start compiling or loading ``program`` for ``args`` in the background unless it is held or on its way;
        the future gives the compiled program. Arguments may be ``jax.ShapeDtypeStruct``s."""
        key = self._key(program, args)
        with self._lock:
            held = self._programs.get(key)
            if held is not None:
                self._programs.move_to_end(key)
                held.calls += 1
                if stats is not None:  # a run's peak counts the programs it uses, compiled now or before
                    _count(stats, "held", 0.0, held.peak_bytes)
                done: Future = Future()
                done.set_result(held.compiled)
                return done
            pending = self._pending.get(key)
            # A prefetched program that is now needed and not yet started is queued again ahead of the rest; the
            # later of the two jobs finds it held.
            if pending is None or (priority < pending[1] and not pending[0].running()):
                if self._queue is None:
                    self._queue = CompileQueue()
                # The worker compiles for the caller's device: jax.default_device is a per-thread setting.
                device = _chosen_device()
                job = self._queue.submit(lambda: self._hold(program, key, args, stats, device), priority)
                pending = self._pending[key] = (job, priority)
            return pending[0]

    def holds(self, program: Program, args: tuple[Any, ...]) -> bool:
        """Whether ``program`` for ``args`` is in memory or in the disk store (nothing is loaded)."""
        key = self._key(program, args)
        with self._lock:
            if key in self._programs:
                return True
        store = self.store
        return store is not None and store.path_for(_digest(key)).is_file()

    def _key(self, program: Program, args: tuple[Any, ...]) -> tuple[str, ...]:
        """What decides a program: its name, model architecture, static configuration, the arguments' signature
        and the device unplaced arguments run on (``jax.default_device`` of the calling thread)."""
        fingerprint = program.model.fingerprint if program.model is not None else ""
        return (program.name, fingerprint, repr(program.static), signature(args), str(_chosen_device()),
                repr(program.options))

    def _hold(self, program: Program, key: tuple[str, ...], args: tuple[Any, ...], stats: RunStats | None,
              device: Any) -> jax.stages.Compiled:
        with self._lock:
            one_at_a_time = self._compiling.setdefault(key, threading.Lock())
        # A prefetched job and the urgent copy queued ahead of it may start together: the second one waits here
        # and finds the program held instead of compiling it again.
        with one_at_a_time:
            return self._hold_once(program, key, args, stats, device)

    def _hold_once(self, program: Program, key: tuple[str, ...], args: tuple[Any, ...], stats: RunStats | None,
                   device: Any) -> jax.stages.Compiled:
        with self._lock:
            held = self._programs.get(key)
        if held is not None:
            return held.compiled
        try:
            with jax.default_device(device) if device is not None else contextlib.nullcontext():
                held = self._obtain(program, key, args, stats)
            with self._lock:  # held before it stops being pending: ``holds`` never misses it in between
                self._programs[key] = held
                while len(self._programs) > self.capacity:
                    self._programs.popitem(last=False)
        finally:
            with self._lock:
                self._pending.pop(key, None)
        return held.compiled

    def _obtain(self, program: Program, key: tuple[str, ...], args: tuple[Any, ...],
                stats: RunStats | None) -> CachedProgram:
        model = f"{program.model.name} ({key[1][:12]})" if program.model is not None else ""
        readable = {"name": program.name, "model": model, "static": key[2], "args": _shapes(args[1:])}
        options, digest = {**compiler_options(), **dict(program.options)}, _digest(key)
        store = self.store
        start = time.perf_counter()
        compiled = store.load(digest, readable) if store is not None else None
        source = "loaded" if compiled is not None else "compiled"
        if compiled is None:
            with progress.compiling(_what(program.name, args[1:] if program.model is not None else args,
                                          program.label), store is not None):
                compiled = jax.jit(program.build()).lower(*args).compile(compiler_options=options or None)
            if store is not None:
                store.save(digest, readable, compiled)
        seconds = time.perf_counter() - start
        peak = program_peak_bytes(compiled)
        if stats is not None:
            _count(stats, source, seconds, peak)
        return CachedProgram(program.name, key[1][:12], key[2], readable["args"], source, seconds, 1, peak, compiled)

    def info(self) -> list[CachedProgram]:
        """The programs held in memory, least recently used first."""
        with self._lock:
            return list(self._programs.values())

    def clear(self) -> None:
        """Forget the programs held in memory (the disk store is ``store.clear()``)."""
        with self._lock:
            self._programs.clear()


def _chosen_device() -> Any:
    """The calling thread's ``jax.default_device`` setting (None: JAX's own choice, this process's first device)."""
    return jax.config.jax_default_device


def _digest(key: tuple[str, ...]) -> str:
    """A program's name in the disk store: its key, the environment and the compiler options, hashed."""
    return hashlib.sha256(json.dumps([*key, environment(), compiler_options()], sort_keys=True).encode()).hexdigest()


def compiler_options() -> dict[str, Any]:
    """The XLA options programs are compiled with on the default backend (COMPILER_OPTIONS)."""
    return COMPILER_OPTIONS.get(jax.default_backend(), {})


def _count(stats: RunStats, source: str, seconds: float, peak: int | None) -> None:
    with _STATS_LOCK:
        if source == "loaded":
            stats.load_seconds += seconds
            stats.programs_loaded += 1
        elif source == "compiled":
            stats.compile_seconds += seconds
            stats.programs_compiled += 1
        if peak is not None:
            stats.program_peak_bytes = max(peak, stats.program_peak_bytes or 0)


_CACHE = ProgramCache()


def program_cache() -> ProgramCache:
    """The process-wide cache every mode runs its programs through."""
    return _CACHE
