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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from jaxdream import checks, progress
from jaxdream.compiled.cache import Program, program_cache
from jaxdream.compiled.placement import as_batch, placed_params
from jaxdream.compiled.stats import RunStats
from jaxdream.dream import core, tiles
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
    stream theirs through ``on_round``)."""

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


def dream(model: Model, images: Any, config: core.DreamConfig, run: Run) -> np.ndarray:
    """``run.rounds`` rounds of ``config`` on checked images (N, H, W, 3) -> (rounds, N, H, W, 3) (or the last
    round, see ``Run.keep_rounds``), through one cached program per round shape, or tiled."""
    check_zoom(run.zoom, run.rounds, images.shape[1], images.shape[2])
    with progress.task("dreaming", run.rounds * config.iters, "iteration"):
        return run_rounds(_round_step(model, images, config, run), images, run)


def _round_step(model: Model, images: Any, config: core.DreamConfig, run: Run) -> Callable[[Any, int], Any]:
    """The function that dreams one round: tiled, replaying a schedule, or drawing its schedule from the seed."""
    seed, rate, stats = checks.check_seed(run.seed), np.float32(run.rate), run.stats
    tile, per_call = plan_tiles(model, config, images, run.aux, run.tile, run.memory, stats)
    if tile is not None:
        if run.schedule is not None:
            raise OptionError("an explicit schedule replays untiled rounds; leave out --tile")
        stats.extra.update(tile=tile, tiles_per_call=per_call)
        return lambda imgs, r: tiles.tiled_round(model, config, imgs, seed, r, run.rate, run.aux, tile, per_call,
                                                 stats)[0]
    params, cache = placed_params(model, images), program_cache()
    if run.schedule is not None:
        fixed = check_schedule(run.schedule, config)
        program = Program("scheduled_iterations", model, config, lambda: core.scheduled_iterations(model, config))
        arguments = lambda r: (fixed,)
    else:
        program = Program("drawn_iterations", model, config, lambda: core.drawn_iterations(model, config))
        arguments = lambda r: (np.uint32(seed), np.int32(r))

    def step(imgs: Any, r: int) -> Any:
        stats.iterations += config.iters
        values = np.zeros((config.iters, imgs.shape[0]), np.float32)
        chunk = lambda state, start, stop: cache(program, params, *state, *arguments(r), np.int32(start),
                                                 np.int32(stop), rate, run.aux, stats=stats)
        return run_in_chunks(chunk, (imgs, values), config.iters)[0]

    return step


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


def run_rounds(step: Callable[[Any, int], Any], images: Any, run: Run) -> np.ndarray:
    """Darknet's round loop: run a round, hand the frame out, then rotate and zoom for the next round. Returns every
    round's images, or (``run.keep_rounds`` False: long runs whose frames ``on_round`` streams out) the last one."""
    post = Program("between_rounds", None, (run.zoom, run.rotate), lambda: core.between_rounds(run.zoom, run.rotate))
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
