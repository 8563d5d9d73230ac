"""Runs the pure programs of ``core``: one compiled-program cache for every mode, the warm-start store, the
parameters placed once per model, and Darknet's host loop over rounds.

A program is found by a key made without tracing: its name, the model's architecture fingerprint, its static
configuration, and the shapes, dtypes and shardings of its arguments. The first call with a key loads the program
from the disk store (another process compiled it) or traces and compiles it (and stores it); every later call in
the process reuses it. ``program_cache().info()`` lists what is held.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jaxdream import interrupts, progress
from jaxdream.dream import core
from jaxdream.dream.store import ProgramStore, default_store, environment
from jaxdream.errors import OptionError

if TYPE_CHECKING:
    from jaxdream.protocol import Model

Array = jax.Array
DEFAULT_CAPACITY = 64
CHUNK_SECONDS = 1.0  # a long round runs as calls of about this long, so Ctrl-C is seen within about a second


@dataclass
class RunStats:
    """Timings of the compiled programs, kept apart: compile time is never counted as run time."""

    compile_seconds: float = 0.0  # tracing, lowering and compiling programs this process had not seen
    load_seconds: float = 0.0  # loading programs another process compiled (the warm-start store)
    run_seconds: float = 0.0
    iterations: int = 0
    programs_compiled: int = 0
    programs_loaded: int = 0
    program_peak_bytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        per_iter = 1000.0 * self.run_seconds / self.iterations if self.iterations else None
        return {"compile_seconds": self.compile_seconds, "load_seconds": self.load_seconds,
                "run_seconds": self.run_seconds, "iterations": self.iterations, "ms_per_iteration": per_iter,
                "programs_compiled": self.programs_compiled, "programs_loaded": self.programs_loaded,
                "program_peak_bytes": self.program_peak_bytes, **self.extra}


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
    model: Model | None
    static: Any
    build: Callable[[], Callable]


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


def _what(name: str, args: tuple[Any, ...]) -> str:
    """A program as a person reads it: its name and the size of the images it takes ('drawn iterations for
    768x576, batch 4')."""
    images = next((leaf for leaf in jax.tree_util.tree_leaves(args) if np.ndim(leaf) == 4 and np.shape(leaf)[-1] == 3),
                  None)
    if images is None:
        return name.replace("_", " ")
    n, h, w, _ = np.shape(images)
    return f"{name.replace('_', ' ')} for {w}x{h}" + (f", batch {n}" if n > 1 else "")


def _shapes(args: tuple[Any, ...]) -> str:
    return " ".join("x".join(map(str, np.shape(leaf))) or "()" for leaf in jax.tree_util.tree_leaves(args))


class ProgramCache:
    """Compiled programs by key: an LRU of at most ``capacity`` in memory, backed by a ``ProgramStore`` on disk
    (by default ``$JAXDREAM_HOME/programs`` unless $JAXDREAM_NO_CACHE is set; ``store=None`` for memory only)."""

    _DEFAULT_STORE = object()

    def __init__(self, capacity: int = DEFAULT_CAPACITY, store: ProgramStore | object | None = _DEFAULT_STORE):
        self.capacity, self._store = capacity, store
        self._programs: OrderedDict[tuple[str, ...], CachedProgram] = OrderedDict()
        self._lock = threading.Lock()

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
        fingerprint = program.model.fingerprint if program.model is not None else ""
        key = (program.name, fingerprint, repr(program.static), signature(args))
        with self._lock:
            held = self._programs.get(key)
            if held is not None:
                self._programs.move_to_end(key)
                held.calls += 1
                return held.compiled
        held = self._obtain(program, key, args, stats)
        with self._lock:
            self._programs[key] = held
            while len(self._programs) > self.capacity:
                self._programs.popitem(last=False)
        return held.compiled

    def _obtain(self, program: Program, key: tuple[str, ...], args: tuple[Any, ...],
                stats: RunStats | None) -> CachedProgram:
        model = f"{program.model.name} ({key[1][:12]})" if program.model is not None else ""
        readable = {"name": program.name, "model": model, "static": key[2], "args": _shapes(args[1:])}
        digest = hashlib.sha256(json.dumps([*key, environment()], sort_keys=True).encode()).hexdigest()
        store = self.store
        start = time.perf_counter()
        compiled = store.load(digest, readable) if store is not None else None
        source = "loaded" if compiled is not None else "compiled"
        if compiled is None:
            with progress.compiling(_what(program.name, args[1:] if program.model is not None else args),
                                store is not None):
                compiled = jax.jit(program.build()).lower(*args).compile()
            if store is not None:
                store.save(digest, readable, compiled)
        seconds = time.perf_counter() - start
        peak = program_peak_bytes(compiled)
        if stats is not None:
            if source == "loaded":
                stats.load_seconds += seconds
                stats.programs_loaded += 1
            else:
                stats.compile_seconds += seconds
                stats.programs_compiled += 1
            if peak is not None:
                stats.program_peak_bytes = max(peak, stats.program_peak_bytes or 0)
        return CachedProgram(program.name, key[1][:12], key[2], readable["args"], source, seconds, 1, peak, compiled)

    def info(self) -> list[CachedProgram]:
        """The programs held in memory, least recently used first."""
        with self._lock:
            return list(self._programs.values())

    def clear(self) -> None:
        """Forget the programs held in memory (the disk store is ``store.clear()``)."""
        with self._lock:
            self._programs.clear()


_CACHE = ProgramCache()


def program_cache() -> ProgramCache:
    """The process-wide cache every mode runs its programs through."""
    return _CACHE


_PLACED: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def placed_params(model: Model, images: Any) -> Any:
    """The model's parameters on the device(s), placed once per model and placement: replicated over the images'
    mesh when they are sharded."""
    sharding = getattr(images, "sharding", None)
    mesh = sharding.mesh if isinstance(sharding, NamedSharding) else None
    where = repr(dict(mesh.shape)) + repr(mesh.devices.tolist()) if mesh is not None else "default"
    placed = _PLACED.setdefault(model, {})
    if where not in placed:
        target = NamedSharding(mesh, PartitionSpec()) if mesh is not None else None
        placed[where] = jax.device_put(model.params, target)
    return placed[where]


def _default_device() -> jax.Device:
    """Where a program runs when nothing is sharded: JAX's default device (``jax_default_device``), else the
    first."""
    chosen = jax.config.jax_default_device
    if isinstance(chosen, jax.Device):
        return chosen
    return jax.devices(chosen if isinstance(chosen, str) else None)[0]


def as_batch(x: Any, images: bool = False) -> Any:
    """(N, H, W, 3) float32 images from (H, W, 3) or (N, H, W, 3); a JAX array keeps its placement when sharded
    over a mesh, one committed to a single other device is moved to where the programs run (the parameters'
    device), anything else stays on the host until a program takes it.

    ``images``: the input of a dream: values in [0, 1] and finite, checked for JAX arrays too (one small reduction
    on the device; the forward and logits calls skip it, so they do not wait for their input)."""
    if not isinstance(x, jax.Array):
        x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise OptionError(f"images must be float arrays with values in [0, 1], got {x.dtype} (divide 8-bit images "
                          "by 255, or read them with load_image)")
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise OptionError(f"images must be (H, W, 3) or (N, H, W, 3) RGB arrays, got shape {x.shape}")
    if min(x.shape) < 1:
        raise OptionError(f"images must not be empty, got shape {x.shape}")
    if isinstance(x, np.ndarray) and not np.isfinite(x).all():  # (a device array is checked by the first output)
        raise OptionError("images have NaN or infinite values; they must be in [0, 1]")
    if images:
        # one transfer of three numbers; isfinite, since XLA:CPU's min/max may drop a NaN under some XLA_FLAGS
        xp = jnp if isinstance(x, jax.Array) else np
        low, high, finite = (float(v) for v in np.asarray(xp.stack([xp.min(x), xp.max(x),
                                                                    xp.isfinite(x).all().astype(x.dtype)])))
        if not finite:
            raise OptionError("images have NaN or infinite values; they must be in [0, 1]")
        if low < 0.0 or high > 1.0:
            raise OptionError(f"images must have values in [0, 1], these range over [{low:.4g}, {high:.4g}] (divide "
                              "8-bit values by 255; undo any centring such as x - 0.5)")
    if isinstance(x, jax.Array) and not isinstance(x.sharding, NamedSharding) and len(x.sharding.device_set) == 1:
        device = _default_device()
        if x.sharding.device_set != {device}:  # committed elsewhere: the program would refuse the mix of devices
            x = jax.device_put(x, device)
    return x if x.dtype == np.float32 else x.astype(np.float32)


def run_in_chunks(call: Callable[[Any, int, int], Any], state: Any, count: int) -> Any:
    """``call(state, start, stop)`` over 0 .. count in chunks of about CHUNK_SECONDS each (the first of one step),
    so that an interrupt (``interrupts.request_stop``, the command line's Ctrl-C) is seen between chunks."""
    start, chunk = 0, 1
    while start < count:
        stop = min(count, start + chunk)
        began = time.perf_counter()
        state = call(state, start, stop)
        progress.advance(stop - start, "iteration")
        took = time.perf_counter() - began
        chunk = max(1, int((stop - start) * CHUNK_SECONDS / max(took, 1e-9)))
        start = stop
    return state


def run_rounds(
    step: Callable[[Any, int], Any], images: Any, rounds: int, zoom: float, rotate: float,
    on_round: Callable[[int, np.ndarray], None] | None, stats: RunStats, keep_rounds: bool = True,
) -> np.ndarray:
    """Darknet's round loop: run a round, hand the frame out, then rotate and zoom for the next round. Returns every
    round's images, or (``keep_rounds`` False: long runs whose frames ``on_round`` streams out) the last one."""
    post = Program("between_rounds", None, (zoom, rotate), lambda: core.between_rounds(zoom, rotate))
    frames = []
    for r in range(rounds):
        images = step(images, r)
        frame = np.asarray(images)
        frames = [*frames, frame] if keep_rounds else [frame]
        if on_round is not None:
            on_round(r, frame)
        if r + 1 < rounds and (zoom != 1.0 or rotate):
            images = _CACHE(post, images, stats=stats)
    return np.stack(frames)
