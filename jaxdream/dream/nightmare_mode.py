"""Darknet's nightmare: rounds of the compiled round program, with Darknet's zoom and rotate between rounds."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from jaxdream import checks, progress
from jaxdream.compiled.cache import Program, program_cache
from jaxdream.compiled.placement import as_batch, placed_params
from jaxdream.compiled.stats import RunStats
from jaxdream.dream import core, tiles
from jaxdream.dream.runner import run_in_chunks, run_rounds
from jaxdream.dream.validate import check_round_options, check_zoom, validate
from jaxdream.errors import OptionError
from jaxdream.objectives import LAYER_OBJECTIVES, LOGIT_OBJECTIVES

if TYPE_CHECKING:
    from jaxdream.protocol import Model

log = logging.getLogger("jaxdream")


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
    tile, budget = tiles.check_tile(tile), tiles.parse_memory(memory) or tiles.device_budget()
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


def run_dream(
    model: Model, images: Any, config: core.DreamConfig, rate: float, aux: Any, rounds: int = 1,
    zoom: float = 1.0, rotate: float = 0.0, seed: int = 0, schedule: Any = None,
    on_round: Callable[[int, np.ndarray], None] | None = None, stats: RunStats | None = None,
    tile: int | None = None, memory: str | int | None = None, keep_rounds: bool = True,
) -> np.ndarray:
    """The rounds of any objective through one cached round program (options already validated), or tiled
    (``tile``, ``memory``: see ``plan_tiles``); ``keep_rounds`` as in ``run_rounds``."""
    stats = stats if stats is not None else RunStats()
    check_zoom(zoom, rounds, images.shape[1], images.shape[2])
    with progress.task("dreaming", rounds * config.iters, "iteration"):
        return _run_dream(model, images, config, rate, aux, rounds, zoom, rotate, seed, schedule, on_round, stats,
                          tile, memory, keep_rounds)


def _run_dream(
    model: Model, images: Any, config: core.DreamConfig, rate: float, aux: Any, rounds: int, zoom: float,
    rotate: float, seed: int, schedule: Any, on_round: Callable[[int, np.ndarray], None] | None, stats: RunStats,
    tile: int | None, memory: str | int | None, keep_rounds: bool,
) -> np.ndarray:
    seed, rate_a = checks.check_seed(seed), np.float32(rate)
    tile, per_call = plan_tiles(model, config, images, aux, tile, memory, stats)
    if tile is not None:
        if schedule is not None:
            raise OptionError("an explicit schedule replays untiled rounds; leave out --tile")
        stats.extra.update(tile=tile, tiles_per_call=per_call)
        step = lambda imgs, r: tiles.tiled_round(model, config, imgs, seed, r, rate, aux, tile, per_call, stats)[0]
        return run_rounds(step, images, rounds, zoom, rotate, on_round, stats, keep_rounds)
    params, cache = placed_params(model, images), program_cache()
    if schedule is not None:
        fixed = check_schedule(schedule, config)
        program = Program("scheduled_iterations", model, config, lambda: core.scheduled_iterations(model, config))
        arguments = lambda r: (fixed,)
    else:
        program = Program("drawn_iterations", model, config, lambda: core.drawn_iterations(model, config))
        arguments = lambda r: (np.uint32(seed), np.int32(r))

    def step(imgs: Any, r: int) -> Any:
        stats.iterations += config.iters
        values = np.zeros((config.iters, imgs.shape[0]), np.float32)
        chunk = lambda state, start, stop: cache(program, params, *state, *arguments(r), np.int32(start),
                                                 np.int32(stop), rate_a, aux, stats=stats)
        return run_in_chunks(chunk, (imgs, values), config.iters)[0]

    return run_rounds(step, images, rounds, zoom, rotate, on_round, stats, keep_rounds)


def nightmare(
    model: Model, x: Any, layer: int | str, rounds: int = 1, iters: int = 10, layer_range: int = 1,
    octaves: int = 4,
    rate: float = 0.04, thresh: float = 1.0, zoom: float = 1.0, rotate: float = 0.0, norm: bool = True,
    jitter: bool = True, seed: int = 0, schedule: Any = None, objective: str = "darknet", channel: int = 0,
    guide: Any = None, on_round: Callable[[int, np.ndarray], None] | None = None, stats: RunStats | None = None,
    precision: str | None = None, tile: int | None = None, memory: str | int | None = None, keep_rounds: bool = True,
) -> np.ndarray:
    """Darknet's nightmare on an image (H, W, 3) or batch (N, H, W, 3) in [0, 1] -> (rounds, N, H, W, 3).

    ``schedule``: optional (iters, 5) int rows of layer, octave, dx, dy, flip replacing the random draws
    (used for every round). ``objective``: 'darknet' (thresholded L2, the default), 'l2', 'channel' or 'neuron'
    (with ``channel``), or 'guide' (with ``guide``, an image whose features at ``layer`` the dream moves toward).
    ``on_round(round, images)`` is called after each round, before zoom/rotate. ``precision``: f32 (default, or
    $JAXDREAM_PRECISION), tf32 or bf16. ``tile``: dream in tiles of tile x tile pixels (dream/tiles.py says
    what that changes); ``memory``: the budget ('6G') past which the dream is tiled by itself. ``keep_rounds``
    False returns only the last round (1, N, H, W, 3): long animations stream their frames through ``on_round``.
    """
    images = as_batch(x, images=True)
    if objective not in LAYER_OBJECTIVES:
        raise OptionError(f"--objective {objective!r}: use one of {', '.join(LAYER_OBJECTIVES)}")
    config = core.DreamConfig(layer=model.resolve_layer(layer), layer_range=layer_range, iters=iters, octaves=octaves,
                              norm="std" if norm else "none", jitter=jitter, objective=objective,
                              **({"precision": precision} if precision else {}))
    check_round_options(rate, rounds, zoom, rotate)
    validate(model, config, images.shape[1], images.shape[2])
    aux = objective_input(model, config, thresh, channel, guide)
    return run_dream(model, images, config, rate, aux, rounds, zoom, rotate, seed, schedule, on_round, stats, tile,
                     memory, keep_rounds)
