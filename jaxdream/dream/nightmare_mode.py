"""Darknet's nightmare: rounds of the compiled round program, with Darknet's zoom and rotate between rounds."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from jaxdream.compiled.placement import as_batch
from jaxdream.compiled.stats import RunStats
from jaxdream.dream import core, engine
from jaxdream.dream.canvas import check_sizes
from jaxdream.dream.validate import check_round_options, validate
from jaxdream.errors import OptionError
from jaxdream.objectives import LAYER_OBJECTIVES

if TYPE_CHECKING:
    from jaxdream.protocol import Model


def nightmare(
    model: Model, x: Any, layer: int | str, rounds: int = 1, iters: int = 10, layer_range: int = 1,
    octaves: int = 4,
    rate: float = 0.04, thresh: float = 1.0, zoom: float = 1.0, rotate: float = 0.0, norm: bool = True,
    jitter: bool = True, seed: int = 0, schedule: Any = None, objective: str = "darknet", channel: int = 0,
    guide: Any = None, on_round: Callable[[int, np.ndarray], None] | None = None, stats: RunStats | None = None,
    precision: str | None = None, tile: int | None = None, memory: str | int | None = None, keep_rounds: bool = True,
    sizes: Any = None,
) -> np.ndarray:
    """Darknet's nightmare on an image (H, W, 3) or batch (N, H, W, 3) in [0, 1] -> (rounds, N, H, W, 3).

    ``schedule``: optional (iters, 5) int rows of layer, octave, dx, dy, flip replacing the random draws
    (used for every round). ``objective``: 'darknet' (thresholded L2, the default), 'l2', 'channel' or 'neuron'
    (with ``channel``), or 'guide' (with ``guide``, an image whose features at ``layer`` the dream moves toward).
    ``on_round(round, images)`` is called after each round, before zoom/rotate. ``precision``: f32 (default, or
    $JAXDREAM_PRECISION), tf32 or bf16. ``tile``: dream in tiles of tile x tile pixels (dream/tiles.py says
    what that changes); ``memory``: the budget ('6G') past which the dream is tiled by itself. ``keep_rounds``
    False returns only the last round (1, N, H, W, 3): long animations stream their frames through ``on_round``.
    ``sizes``: (N, 2) each image's true (height, width) when ``x`` holds images of several sizes on one canvas
    (each in the top-left corner; dream/canvas.py): one set of programs serves them all, each image getting its
    own size's result up to the order of float sums; ``batch`` does this for folders of mixed sizes.
    """
    images = as_batch(x, images=True)
    if objective not in LAYER_OBJECTIVES:
        raise OptionError(f"--objective {objective!r}: use one of {', '.join(LAYER_OBJECTIVES)}")
    config = core.DreamConfig(layer=model.resolve_layer(layer), layer_range=layer_range, iters=iters, octaves=octaves,
                              norm="std" if norm else "none", jitter=jitter, objective=objective, precision=precision)
    check_round_options(rate, rounds, zoom, rotate)
    if sizes is not None:
        sizes = check_sizes(sizes, images.shape)
    for height, width in {(images.shape[1], images.shape[2])} if sizes is None else set(map(tuple, sizes.tolist())):
        validate(model, config, height, width)
    run = engine.Run(rate=rate, aux=engine.objective_input(model, config, thresh, channel, guide), rounds=rounds,
                     zoom=zoom, rotate=rotate, seed=seed, schedule=schedule, on_round=on_round,
                     stats=stats if stats is not None else RunStats(), tile=tile, memory=memory,
                     keep_rounds=keep_rounds, sizes=sizes)
    return engine.dream(model, images, config, run)
