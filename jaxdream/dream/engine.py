"""The one dream engine: the host loop every mode runs through.

A mode (nightmare, lucid, deepdream's octaves, video frames, sweeps) builds a ``DreamConfig`` (what the compiled
step computes: the layers, the image parameterisation, the transform before the network, the objective) and a
``Run`` (how the host drives it: rate, rounds, zoom and rotate between rounds, seed or explicit schedule, tiles,
callbacks), and calls ``dream``. The engine owns the rest: the objective's input, whether to tile, long rounds in
interruptible chunks, progress, and Darknet's loop over rounds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
from jax.sharding import NamedSharding

from jaxdream import checks, interrupts, progress
from jaxdream.compiled.background import AHEAD, URGENT, wait
from jaxdream.compiled.cache import Program, program_cache, program_peak_bytes
from jaxdream.compiled.placement import as_batch, placed_params
from jaxdream.compiled.stats import RunStats
from jaxdream.dream import canvas, core, tiles
from jaxdream.dream.validate import check_zoom, validate
from jaxdream.errors import OptionError
from jaxdream.objectives import LOGIT_OBJECTIVES

if TYPE_CHECKING:
    from jaxdream.protocol import Model

log = logging.getLogger("jaxdream")
CHUNK_SECONDS = 1.0  # a long round runs as calls of about this long, so Ctrl-C is seen within about a second


@dataclass(frozen=True, kw_only=True)
class Run:
    """How the host drives a dream (everything the compiled step does not decide).

    ``aux``: the objective's input (``objective_input``). ``schedule``: optional (iters, 5) rows of layer, octave,
    dx, dy, flip replacing the seed's draws. ``on_round(round, images)`` sees each round before zoom/rotate.
    ``tile``/``memory``: see ``plan_tiles``. ``keep_rounds`` False returns only the last round (long animations
    stream theirs through ``on_round``). ``sizes``: (N, 2) each image's true (height, width) when the images are
    canvases (``dream/canvas.py``: one set of programs for several sizes)."""

    rate: float
    aux: Any = field(default_factory=lambda: np.float32(0))
    rounds: int = 1
    zoom: float = 1.0
    rotate: float = 0.0
    seed: int = 0
    schedule: Any = None
    on_round: Callable[[int, np.ndarray], None] | None = None
    stats: RunStats = field(default_factory=RunStats)
    tile: int | None = None
    memory: str | int | None = None
    keep_rounds: bool = True
    sizes: Any = None


_AHEAD: ContextVar[bool] = ContextVar("jaxdream_compiling_ahead", default=False)
_REPEATS: ContextVar[int] = ContextVar("jaxdream_repeats", default=0)
# A long run also compiles the fused round (core.fused_round: ~20 % faster steps on a CPU) in the background, once
# the dreaming left is worth this many times its compile; a compile's cost is guessed per branch when none was
# measured (the branches were loaded).
FUSED_PAYS_AFTER = 5.0
# The schedule is a few random integers, drawn once per round, and on every cold start's critical path: LLVM's
# optimisation buys it nothing, and at level 0 XLA:CPU compiles it in 0.21 s instead of 0.35 s.
SCHEDULE_OPTIONS: dict[str, tuple[tuple[str, Any], ...]] = {"cpu": (("xla_backend_optimization_level", 0),)}
FUSED_COMPILE_GUESS = 1.0


@contextmanager
def compiling_ahead() -> Iterator[None]:
    """Inside this block a dream does not run: it starts compiling (in the background, behind every program that
    is needed now) the programs it would need, and returns None. ``batch`` and ``sweep`` call their next size's or
    cell's dream this way while the current one runs."""
    token = _AHEAD.set(True)
    try:
        yield
    finally:
        _AHEAD.reset(token)


def ahead() -> bool:
    """Whether the caller is in a ``compiling_ahead`` block."""
    return _AHEAD.get()


def dream(model: Model, images: Any, config: core.DreamConfig, run: Run) -> np.ndarray | None:
    """``run.rounds`` rounds of ``config`` on checked images (N, H, W, 3) -> (rounds, N, H, W, 3) (or the last
    round, see ``Run.keep_rounds``), through one cached program per branch, or tiled (None, having only started
    compiling, inside ``compiling_ahead``)."""
    if run.sizes is not None:
        problem = canvas.canvas_problem(model, config, run.rounds, run.zoom, run.rotate, run.tile, run.memory)
        if problem is not None:
            raise OptionError(f"images of several sizes on a canvas cannot be dreamed with {problem}; dream each "
                              "size on its own")
    else:
        check_zoom(run.zoom, run.rounds, images.shape[1], images.shape[2])
    if ahead():
        _prefetch_rounds(model, images, config, run)
        return None
    with progress.task("dreaming", run.rounds * config.iters, "iteration"):
        return run_rounds(_round_step(model, images, config, run), images, run)


def _round_step(model: Model, images: Any, config: core.DreamConfig, run: Run) -> Callable[[Any, int], Any]:
    """The function that dreams one round: tiled, replaying a schedule, or drawing its schedule from the seed."""
    seed, stats = checks.check_seed(run.seed), run.stats
    if run.sizes is not None:
        return _canvas_round_step(model, config, run, placed_params(model, images))
    tile, per_call = plan_tiles(model, config, images, run.aux, run.tile, run.memory, stats)
    if tile is not None:
        if run.schedule is not None:
            raise OptionError("an explicit schedule replays untiled rounds; leave out --tile")
        stats.extra.update(tile=tile, tiles_per_call=per_call)
        return lambda imgs, r: tiles.tiled_round(model, config, imgs, seed, r, run.rate, run.aux, tile, per_call,
                                                 stats)[0]
    params = placed_params(model, images)
    fixed = check_schedule(run.schedule, config) if run.schedule is not None else None
    rates = np.ascontiguousarray(np.broadcast_to(config.step_rates(run.rate)[:, None], (config.iters,
                                                                                         images.shape[0])))
    fused = Program("dream_round", model, config, lambda: core.fused_round(model, config))
    cache, fused_program = program_cache(), {}  # the fused round's future, once it is on its way
    # Processes that dream together must run the same programs in the same order (they meet in collectives), and
    # the switch to the fused round depends on each one's own timings and store: a lone process only.
    lone = jax.process_count() == 1

    def step(imgs: Any, r: int) -> Any:
        schedule = fixed if fixed is not None else drawn_schedule(config, seed, r, stats)
        structs = (params, jax.ShapeDtypeStruct(imgs.shape, np.float32, sharding=_named_sharding(imgs)),
                   jax.ShapeDtypeStruct(rates.shape, np.float32), schedule, np.int32(0), np.int32(0), rates, run.aux)
        if lone and not fused_program and cache.holds(fused, structs):  # compiled or kept earlier: use it
            fused_program["future"] = cache.prefetch(fused, structs, stats, URGENT)
            wait(fused_program["future"])
        if fused_program and fused_program["future"].done():
            return _run_fused(wait(fused_program["future"]), params, imgs, schedule, rates, run.aux, stats)
        before = (stats.compile_seconds, stats.run_seconds)
        imgs, _ = run_round(model, config, params, imgs, schedule, rates, run.aux, stats)
        remaining = (run.rounds - r - 1 + _REPEATS.get() * run.rounds) * config.iters
        compiling = stats.compile_seconds - before[0] or FUSED_COMPILE_GUESS * len({tuple(row[:2]) for row in schedule})
        per_iteration = (stats.run_seconds - before[1]) / max(config.iters, 1)
        if lone and not fused_program and remaining * per_iteration > FUSED_PAYS_AFTER * compiling:
            fused_program["future"] = cache.prefetch(fused, structs, stats, AHEAD)
        return imgs

    return step


def _canvas_round_step(model: Model, config: core.DreamConfig, run: Run, params: Any) -> Callable[[Any, int], Any]:
    """A round on canvases: the branch programs along the schedule (never tiled; no fused round: a canvas serves
    folders of new sizes, where compiling it would not pay)."""
    fixed = check_schedule(run.schedule, config) if run.schedule is not None else None
    rates = config.step_rates(run.rate)

    def step(imgs: Any, r: int) -> Any:
        schedule = fixed if fixed is not None else drawn_schedule(config, run.seed, r, run.stats)
        return run_round(model, config, params, imgs, schedule, rates, run.aux, run.stats, sizes=run.sizes)[0]

    return step


def _run_fused(program: Any, params: Any, images: Any, schedule: np.ndarray, rates: np.ndarray, aux: Any,
               stats: RunStats) -> Any:
    """A round through the fused program, in interruptible chunks."""
    values = np.zeros(rates.shape, np.float32)
    stats.iterations += len(schedule)

    def chunk(state: Any, start: int, stop: int) -> Any:
        began = time.perf_counter()
        state = jax.block_until_ready(program(params, *state, schedule, np.int32(start), np.int32(stop), rates, aux))
        stats.run_seconds += time.perf_counter() - began
        return state

    return run_in_chunks(chunk, (images, values), len(schedule))[0]


@contextmanager
def repeats(count: int) -> Iterator[None]:
    """Inside this block each dream is told that ``count`` more dreams of the same shape and settings follow
    (batch: the later batches of a size; video: the frames left), so it may compile its fused round for them."""
    token = _REPEATS.set(max(0, count))
    try:
        yield
    finally:
        _REPEATS.reset(token)


def surely_untiled(model: Model, config: core.DreamConfig, shape: tuple[int, ...], tile: int | None,
                   memory: str | int | None) -> bool:
    """Whether a dream of images of ``shape`` (N, H, W, 3) runs untiled, decided without compiling anything (no
    tile or budget asked for, and the layer table's estimate within the default budget): what compiling ahead
    needs; ``plan_tiles`` decides for the dream itself."""
    if config.objective in LOGIT_OBJECTIVES:
        return True
    return tile is None and memory is None and \
        tiles.untiled_bytes(model, config.layers, shape[1], shape[2], shape[0]) <= tiles.budget(None)


def _prefetch_rounds(model: Model, images: Any, config: core.DreamConfig, run: Run) -> None:
    """Start compiling every branch (and the zoom) a run's rounds will meet; tiled runs are left alone (their
    gradient programs do not depend on the image size)."""
    if run.sizes is None and not surely_untiled(model, config, images.shape, run.tile, run.memory):
        return
    seed, params = checks.check_seed(run.seed), placed_params(model, images)
    for r in range(run.rounds):
        schedule = check_schedule(run.schedule, config) if run.schedule is not None else \
            drawn_schedule(config, seed, r, run.stats)
        prefetch_round(model, config, params, images, schedule, run.aux, run.stats, sizes=run.sizes)
        if run.schedule is not None:
            break
    if run.rounds > 1 and (run.zoom != 1.0 or run.rotate):
        struct = jax.ShapeDtypeStruct(images.shape, np.float32, sharding=_named_sharding(images))
        program_cache().prefetch(_between_rounds(run), (struct,), run.stats)


def _between_rounds(run: Run) -> Program:
    return Program("between_rounds", None, (run.zoom, run.rotate), lambda: core.between_rounds(run.zoom, run.rotate))


def drawn_schedule(config: core.DreamConfig, seed: int, index: int, stats: RunStats | None = None) -> np.ndarray:
    """Round ``index``'s (iters, 5) schedule drawn from ``seed``: the same for every image, batch and device."""
    drawn_from = (config.iters, config.layers, config.octaves, config.jitter, config.settle)  # all it reads
    program = Program("round_schedule", None, drawn_from, lambda: core.round_schedule(config),
                      options=SCHEDULE_OPTIONS.get(jax.default_backend(), ()))
    return np.asarray(program_cache()(program, np.uint32(seed), np.int32(index), stats=stats))


def branch_program(model: Model, config: core.DreamConfig, row: Any, image_size: tuple[int, int],
                   shared_aux: bool = True, on_canvas: bool = False) -> Program:
    """The program of one iteration on schedule row (layer, octave, ...): one per (layer, view size) for an image
    size (or a canvas: ``on_canvas``), whatever the range, iterations, mode or command that needs it."""
    view = config.parameterisation.sizes(*image_size, config.octave_count)[min(int(row[1]), config.octave_count - 1)]
    layer, step = int(row[0]), config.step
    where = f" on a {image_size[1]}x{image_size[0]} canvas" if on_canvas else ""
    return Program("dream_step", model, (step, layer, view, shared_aux, on_canvas),
                   lambda: core.branch_step(model, step, layer, view, shared_aux, on_canvas),
                   f"layer {layer} viewed at {view[1]}x{view[0]}{where}")


def prefetch_round(model: Model, config: core.DreamConfig, params: Any, images: Any, schedule: np.ndarray,
                   aux: Any, stats: RunStats | None = None, priority: int = AHEAD,
                   shared_aux: bool = True, sizes: Any = None) -> list[Future]:
    """Start compiling (or loading) the branch programs a round of ``schedule`` needs on ``images`` (an array or a
    ``jax.ShapeDtypeStruct``; canvases where ``sizes`` gives each image's true size), in the order the round first
    needs them; one future per iteration."""
    structs = jax.ShapeDtypeStruct(images.shape, np.float32, sharding=_named_sharding(images))
    rates = jax.ShapeDtypeStruct((images.shape[0],), np.float32)
    cache, by_branch = program_cache(), {}
    for row in schedule:
        if (branch := (int(row[0]), int(row[1]))) not in by_branch:
            program = branch_program(model, config, row, (images.shape[1], images.shape[2]), shared_aux,
                                     sizes is not None)
            valid = () if sizes is None else (jax.ShapeDtypeStruct((images.shape[0], branch[0] + 3, 2), np.int32),)
            by_branch[branch] = cache.prefetch(program, (params, structs, row, rates, aux, *valid), stats, priority)
    return [by_branch[int(row[0]), int(row[1])] for row in schedule]


def run_round(model: Model, config: core.DreamConfig, params: Any, images: Any, schedule: np.ndarray,
              rates: np.ndarray, aux: Any, stats: RunStats, shared_aux: bool = True,
              cells: int = 1, sizes: Any = None) -> tuple[Any, np.ndarray]:
    """One round on images (N, H, W, 3): each iteration's branch program along ``schedule``, dispatched from the
    host in interruptible chunks while later branches still compile. ``rates``: (iters,) shared, or (iters, N)
    per image. ``cells``: how many dreams the batch holds for progress and statistics (a sweep's grid: N, each
    with its own rate and ``aux``; else 1 per iteration). ``sizes``: (N, 2) each image's true size on canvases.
    Returns (the images, the objective before each iteration (iters, N))."""
    futures = prefetch_round(model, config, params, images, schedule, aux, stats, URGENT, shared_aux, sizes)
    valid = {} if sizes is None else {
        (int(row[0]), int(row[1])): canvas.canvas_sizes(model, config, np.asarray(sizes), row) for row in schedule}
    per_image = np.broadcast_to(np.asarray(rates, np.float32).reshape(len(schedule), -1 if len(schedule) else 1),
                                (len(schedule), images.shape[0]))
    values: list[Any] = []
    ready: dict[Future, Any] = {}  # each branch's compiled program, once it has been waited for
    stats.iterations += len(schedule) * cells

    def chunk(state: Any, start: int, stop: int) -> Any:
        began, waited = time.perf_counter(), 0.0
        for i in range(start, stop):
            if futures[i] not in ready:
                before = time.perf_counter()
                ready[futures[i]] = wait(futures[i])
                waited += time.perf_counter() - before
            extra = () if sizes is None else (valid[int(schedule[i][0]), int(schedule[i][1])],)
            state, value = ready[futures[i]](params, state, schedule[i], per_image[i], aux, *extra)
            values.append(value)
        state = jax.block_until_ready(state)
        stats.run_seconds += time.perf_counter() - began - waited
        return state

    images = run_in_chunks(chunk, images, len(schedule), cells)
    # One transfer for all the values (not one per iteration): the device keeps them until the round ends.
    stacked = jax.device_get(values) if values else np.zeros((0, images.shape[0]), np.float32)
    return images, np.asarray(stacked, np.float32).reshape(len(schedule), images.shape[0])


def _named_sharding(images: Any) -> NamedSharding | None:
    sharding = getattr(images, "sharding", None)
    return sharding if isinstance(sharding, NamedSharding) else None


def run_in_chunks(call: Callable[[Any, int, int], Any], state: Any, count: int, weight: int = 1) -> Any:
    """``call(state, start, stop)`` over 0 .. count in chunks of about CHUNK_SECONDS each (the first of one step),
    so that an interrupt (``interrupts.request_stop``, the command line's Ctrl-C) is seen between chunks. Each step
    advances the progress by ``weight`` iterations."""
    start, chunk = 0, 1
    while start < count:
        interrupts.check()
        stop = min(count, start + chunk)
        began = time.perf_counter()
        state = call(state, start, stop)
        progress.advance((stop - start) * weight, "iteration")
        took = time.perf_counter() - began
        chunk = max(1, int((stop - start) * CHUNK_SECONDS / max(took, 1e-9)))
        start = stop
    return state


def run_rounds(step: Callable[[Any, int], Any], images: Any, run: Run) -> np.ndarray:
    """Darknet's round loop: run a round, hand the frame out, then rotate and zoom for the next round. Returns every
    round's images, or (``run.keep_rounds`` False: long runs whose frames ``on_round`` streams out) the last one."""
    post = _between_rounds(run)
    frames = []
    for r in range(run.rounds):
        images = step(images, r)
        frame = np.asarray(images)
        frames = [*frames, frame] if run.keep_rounds else [frame]
        if run.on_round is not None:
            run.on_round(r, frame)
        if r + 1 < run.rounds and (run.zoom != 1.0 or run.rotate):
            images = program_cache()(post, images, stats=run.stats)
    return np.stack(frames)


def objective_input(model: Model, config: core.DreamConfig, thresh: float, channel: int, guide: Any) -> Any:
    """The ``aux`` argument each layer objective takes, checked against the layers it may run on."""
    if config.objective == "darknet":
        return np.float32(checks.check_number("thresh", thresh))
    if config.objective in ("channel", "neuron"):
        for layer in config.layers:
            channels = model.layer_output_shapes(*model.input_size, layer)[-1][2]
            if not 0 <= channel < channels:
                raise OptionError(
                    f"--channel {channel} is out of range: layer {layer} has channels 0 .. {channels - 1}"
                )
        return np.int32(channel)
    if config.objective == "guide":
        if guide is None:
            raise OptionError("the guide objective needs a guide image (--guide FILE)")
        if config.layer_range != 1:
            raise OptionError("the guide objective needs --range 1: the guide's features belong to one layer")
        features = model.forward(as_batch(guide, images=True)[:1], config.layer, config.precision)[config.layer][0]
        return features.reshape(-1, features.shape[-1])
    return np.float32(0)


def check_schedule(schedule: Any, config: core.DreamConfig) -> np.ndarray:
    """An explicit (iters, 5) schedule of layer, octave, dx, dy, flip rows that fits the config."""
    schedule = np.asarray(schedule, np.int64)
    if schedule.shape != (config.iters, 5):
        raise OptionError(f"schedule must have shape (iters, 5) = ({config.iters}, 5), got {schedule.shape}")
    layers, octaves = schedule[:, 0], schedule[:, 1]
    if not np.isin(layers, config.layers).all():
        raise OptionError(f"schedule layers {sorted(set(layers.tolist()))} are outside the range {config.layers}")
    if len(octaves) and (octaves.min() < 0 or octaves.max() >= config.octaves):
        raise OptionError(f"schedule octaves must be in 0 .. {config.octaves - 1}")
    return schedule.astype(np.int32)


def plan_tiles(model: Model, config: core.DreamConfig, images: Any, aux: Any, tile: int | None,
               memory: str | int | None, stats: RunStats | None = None) -> tuple[int | None, int]:
    """(tile size, tiles per call) for a run, or (None, 0) to run untiled: untiled unless ``tile`` asks for tiles
    smaller than the image or the untiled dream would need more than the budget (``memory``, else the device's),
    in which case tiles of DEFAULT_TILE are chosen and a one-line notice says why."""
    if config.objective in LOGIT_OBJECTIVES:
        if tile is not None or memory is not None:
            raise OptionError("a class objective sees the whole image resized to the network: it is never tiled")
        return None, 0  # its activations are the network's input size, whatever the photo's
    tile, budget = tiles.check_tile(tile), tiles.budget(memory)
    height, width = images.shape[1], images.shape[2]
    if tile is None:
        need = tiles.untiled_bytes(model, config.layers, height, width, images.shape[0])
        if need <= budget or max(height, width) <= tiles.DEFAULT_TILE:
            return None, 0
        tile = tiles.DEFAULT_TILE
        log.warning("tiling: a %dx%d dream (batch %d) needs about %.1f GB untiled, more than the %.1f GB budget; "
                    "tiles of %d px instead (--tile N to choose, --memory SIZE to change the budget)", width, height,
                    images.shape[0], need / 2**30, budget / 2**30, tile)
    if tile >= max(height, width):
        return None, 0  # one tile would hold the whole image: that is the untiled dream, bit for bit
    validate(model, config, tile, tile)  # every layer and octave still has an output at the tile's size
    per_call, _ = tiles.tiles_per_call(model, config, tile, aux, budget, stats)
    return tile, per_call


def plan(model: Model, layer: int, height: int, width: int, batch: int = 1, tile: int | None = None,
         memory: str | int | None = None, iters: int = 10, octaves: int = 4) -> list[dict[str, Any]]:
    """What each way of dreaming this size needs, from the compiled programs' memory analysis (nothing runs):
    the untiled round, and tiles of ``tile`` (default DEFAULT_TILE) with the tiles per call the budget allows.
    Rows: {"how", "bytes", "fits", "note"}."""
    allowed = tiles.budget(memory)
    model.check_layer(layer)
    checks.check_count("batch-size", batch, 1)
    config = core.DreamConfig(layer=layer, iters=iters, octaves=octaves)

    validate(model, config, height, width)  # an image too small for the layer is one error, not a traceback
    tile = tiles.check_tile(tile) or tiles.DEFAULT_TILE
    aux = np.float32(1.0)
    row = np.array([layer, 0, 0, 0, 0], np.int32)  # the deepest layer seen at full size: the largest branch
    untiled = program_cache().compiled(
        branch_program(model, config, row, (height, width)),
        (tiles.param_structs(model), jax.ShapeDtypeStruct((batch, height, width, 3), np.float32), row,
         jax.ShapeDtypeStruct((batch,), np.float32), aux))
    rows = [{"how": f"untiled, batch {batch}", "bytes": program_peak_bytes(untiled) or 0,
             "note": "layer-table estimate "
             f"{tiles.untiled_bytes(model, config.layers, height, width, batch) / 2**20:,.0f} MB"}]
    if tile < max(height, width):
        per_call, planned = tiles.tiles_per_call(model, config, tile, aux, allowed)
        rows.append({"how": f"tiles of {tile}, {per_call} per call", "bytes": planned,
                     "note": f"{tiles.tile_count(height, width, tile) * batch} tiles per full-size iteration"})
    for row in rows:
        row["fits"] = row["bytes"] <= allowed
    return rows
