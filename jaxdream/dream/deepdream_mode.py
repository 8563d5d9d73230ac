"""Google's DeepDream: an octave pyramid from small to full size, the detail carried up from octave to octave."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from jaxdream import checks, progress
from jaxdream.compiled.cache import Program, program_cache
from jaxdream.compiled.placement import as_batch, placed_params
from jaxdream.compiled.stats import RunStats
from jaxdream.dream import core, tiles
from jaxdream.dream.engine import (
    ahead,
    drawn_schedule,
    objective_input,
    plan_tiles,
    prefetch_round,
    run_round,
    surely_untiled,
)
from jaxdream.dream.validate import validate
from jaxdream.errors import OptionError
from jaxdream.objectives import LAYER_OBJECTIVES

if TYPE_CHECKING:
    from jaxdream.protocol import Model


def pyramid_sizes(height: int, width: int, octaves: int, octave_scale: float) -> list[tuple[int, int]]:
    """The octave sizes, smallest first, the last one the image's own."""
    checks.check_count("octaves", octaves, 1)
    checks.check_number("octave-scale", octave_scale, 1.0, strict=True)
    return [(max(1, round(height / octave_scale**k)), max(1, round(width / octave_scale**k)))
            for k in range(octaves)][::-1]


def deepdream(
    model: Model, x: Any, layer: int | str, octaves: int = 4, octave_scale: float = 1.4, iters: int = 10,
    rate: float = 0.01, objective: str = "l2", channel: int = 0, guide: Any = None, jitter: bool = True,
    seed: int = 0, stats: RunStats | None = None, precision: str | None = None, tile: int | None = None,
    memory: str | int | None = None,
) -> np.ndarray:
    """Google's DeepDream on (H, W, 3) or (N, H, W, 3) images -> (1, N, H, W, 3): each octave runs the compiled
    round loop at its size, each step normalised by the gradient's mean absolute value.

    Jitter is Darknet's edge-clamped shift of up to 8 px and a flip, where Google rolls the image. ``tile`` and
    ``memory`` tile the octaves that need it (engine.plan_tiles).
    """
    images = as_batch(x, images=True)
    checks.check_number("rate", rate, 0.0)
    seed = checks.check_seed(seed)
    if objective not in LAYER_OBJECTIVES:
        raise OptionError(f"--objective {objective!r}: use one of {', '.join(LAYER_OBJECTIVES)}")
    config = core.DreamConfig(layer=model.resolve_layer(layer), iters=iters, octaves=1, norm="mean_abs", jitter=jitter,
                              objective=objective, gray_pull=0.0, precision=precision)
    sizes = pyramid_sizes(images.shape[1], images.shape[2], octaves, octave_scale)
    for size in sizes:
        validate(model, config, *size)
    aux = objective_input(model, config, 0.0, channel, guide)
    stats = stats if stats is not None else RunStats()
    if ahead():
        _prefetch_octaves(model, images, config, sizes, seed, aux, stats, tile, memory)
        return None
    with progress.task("dreaming", len(sizes) * iters, "iteration"):
        detail = _octaves(model, images, config, sizes, seed, rate, aux, stats, tile, memory)
    finish = Program("pyramid_finish", None, (), lambda: core.pyramid_finish)
    return np.asarray(program_cache()(finish, images, detail, stats=stats))[None]


def _prefetch_octaves(model: Model, images: Any, config: core.DreamConfig, sizes: list[tuple[int, int]], seed: int,
                      aux: Any, stats: RunStats, tile: int | None, memory: str | int | None) -> None:
    """Start compiling the untiled octaves' branch programs (inside ``engine.compiling_ahead``)."""
    params = placed_params(model, images)
    for k, size in enumerate(sizes):
        shape = jax.ShapeDtypeStruct((images.shape[0], *size, 3), np.float32)
        if surely_untiled(model, config, shape.shape, tile, memory):
            schedule = drawn_schedule(config, _octave_seed(seed, k), 0, stats)
            prefetch_round(model, config, params, shape, schedule, aux, stats)


def _octave_seed(seed: int, octave: int) -> int:
    return int((seed + octave) % (checks.MAX_SEED + 1))


def _octaves(model: Model, images: Any, config: core.DreamConfig, sizes: list[tuple[int, int]], seed: int,
             rate: float, aux: Any, stats: RunStats, tile: int | None, memory: str | int | None) -> Any:
    """The detail the octaves add, smallest octave first."""
    params, cache = placed_params(model, images), program_cache()
    detail = np.zeros((images.shape[0], *sizes[0], 3), np.float32)
    for k, size in enumerate(sizes):
        octave_seed = _octave_seed(seed, k)
        shape = jax.ShapeDtypeStruct((images.shape[0], *size, 3), np.float32)
        tile_size, per_call = plan_tiles(model, config, shape, aux, tile, memory, stats)
        start = Program("pyramid_start", None, size, lambda size=size: core.pyramid_start(size))
        base, begin = cache(start, images, detail, stats=stats)
        if tile_size is None:
            schedule = drawn_schedule(config, octave_seed, 0, stats)
            dreamed, _ = run_round(model, config, params, begin, schedule, config.step_rates(rate), aux, stats)
        else:
            dreamed, _ = tiles.tiled_round(model, config, begin, octave_seed, 0, rate, aux, tile_size, per_call,
                                           stats)
        detail = np.asarray(dreamed) - np.asarray(base)
    return detail
