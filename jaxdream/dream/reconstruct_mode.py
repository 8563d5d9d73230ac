"""Darknet's ``-reconstruct`` mode: ascend toward the features of the letterboxed image, with momentum."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from jaxdream import progress
from jaxdream.compiled.cache import Program, program_cache
from jaxdream.compiled.placement import as_batch, placed_params
from jaxdream.compiled.stats import RunStats
from jaxdream.dream import core, engine
from jaxdream.dream.validate import check_round_options, check_zoom

if TYPE_CHECKING:
    from jaxdream.protocol import Model


def reconstruct(
    model: Model, x: Any, layer: int | str, rounds: int = 1, iters: int = 10, rate: float = 0.04, momentum: float = 0.9,
    lam: float = 0.01, smooth: int = 1, zoom: float = 1.0, rotate: float = 0.0,
    on_round: Callable[[int, np.ndarray], None] | None = None, stats: RunStats | None = None,
    precision: str | None = None, keep_rounds: bool = True,
) -> np.ndarray:
    """Letterbox to the network size, then ascend toward layer ``layer - 1``'s features of that image with
    momentum. Returns (rounds, N, net_h, net_w, 3).

    Darknet parses ``-lambda``/``-smooth`` but its call to ``smooth`` is commented out; here the smoothing is
    applied, so the options do what they say (``lam=0`` reproduces Darknet exactly).
    """
    # Darknet sets net->n = max_layer, so the features are those of layer max_layer - 1
    target = model.resolve_layer(layer) - 1
    model.check_layer(target, "layer - 1 (reconstruct uses the layer before LAYER)")
    config = core.ReconstructConfig(layer=target, iters=iters, rate=rate, momentum=momentum, lam=lam, smooth=smooth,
                                    precision=precision)
    check_round_options(rate, rounds, zoom, rotate)
    images = as_batch(x, images=True)
    net_hw = model.input_size
    check_zoom(zoom, rounds, *net_hw)
    stats = stats if stats is not None else RunStats()
    params, cache = placed_params(model, images), program_cache()
    prepare = Program("reconstruct_target", model, (config, net_hw),
                      lambda: core.reconstruct_target(model, config, net_hw))
    boxed, features = cache(prepare, params, images, stats=stats)
    program = Program("reconstruct_iterations", model, config, lambda: core.reconstruct_iterations(model, config))
    momentum_state = [np.zeros(boxed.shape, np.float32)]  # Darknet keeps the update across rounds

    def step(imgs: Any, _: int) -> Any:
        stats.iterations += iters
        chunk = lambda state, start, stop: cache(program, params, *state, features, np.int32(stop - start),
                                                 stats=stats)
        imgs, momentum_state[0] = engine.run_in_chunks(chunk, (imgs, momentum_state[0]), iters)
        return imgs

    run = engine.Run(rate=rate, rounds=rounds, zoom=zoom, rotate=rotate, on_round=on_round, stats=stats,
                     keep_rounds=keep_rounds)
    with progress.task("reconstructing", rounds * iters, "iteration"):
        return engine.run_rounds(step, boxed, run)
