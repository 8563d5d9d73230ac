"""Canvases: images of several sizes dreamed by one set of programs.

A folder of photos is mostly new sizes, and each size would compile its own branch programs. On a canvas (a size
at least as large as each image's, the image in the top-left corner, zeros beyond) the image's true size is a
runtime argument of the step (``core.branch_step(canvas=True)``): the resize, shift and flip use it as their
bounds, the network zeroes every layer's output beyond the image's own output size (Darknet's zero padding; -inf
before a max-pool, Darknet's max-pool padding), and every mean counts the image's positions only. Each image gets
the values of its own size's programs up to the order of float sums (benchmarks/NOTES.md states the bound).

``plan_canvases`` groups the sizes of a folder: the largest size starts a canvas, and a size joins one when the
canvas, grown to hold it, has at most ``CANVAS_WASTE`` times its pixels.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from jaxdream.dream import core
from jaxdream.errors import OptionError
from jaxdream.objectives import CANVAS_OBJECTIVES

if TYPE_CHECKING:
    from jaxdream.protocol import Model

Size = tuple[int, int]
CANVAS_WASTE = 2.0  # a canvas at most this many times an image's pixels: at worst 2x its dreaming time


def canvas_problem(model: Model, config: core.DreamConfig, rounds: int = 1, zoom: float = 1.0,
                   rotate: float = 0.0, tile: int | None = None, memory: str | int | None = None) -> str | None:
    """Why a dream of ``config`` cannot run on a canvas, or None when it can."""
    if config.objective not in CANVAS_OBJECTIVES:
        return f"the {config.objective!r} objective (canvases take {', '.join(CANVAS_OBJECTIVES)})"
    if not model.canvas_ready(max(config.layers)):
        return f"{model.name}'s layers up to {max(config.layers)} (pooling to one value, connected or other layers)"
    if not all(getattr(part, "canvas", False) for part in (config.parameterisation, config.transformation)):
        return f"the {config.param!r} parameterisation or the {config.transform!r} transform"
    if rounds > 1 and (zoom != 1.0 or rotate):
        return "zoom or rotate between rounds (they work on each image's own size)"
    if tile is not None or memory is not None:
        return "tiles (--tile, --memory)"
    return None


def check_sizes(sizes: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Each image's true (height, width) (N, 2), inside the canvas batch of ``shape`` (N, H, W, 3)."""
    sizes = np.asarray(sizes)
    if sizes.shape != (shape[0], 2) or not np.issubdtype(sizes.dtype, np.integer):
        raise OptionError(f"sizes must be whole numbers, one (height, width) per image: shape ({shape[0]}, 2), "
                          f"got {sizes.dtype} {sizes.shape}")
    if (sizes < 1).any() or (sizes[:, 0] > shape[1]).any() or (sizes[:, 1] > shape[2]).any():
        raise OptionError(f"sizes must be between 1x1 and the canvas's {shape[2]}x{shape[1]}")
    return sizes.astype(np.int32)


def canvas_sizes(model: Model, config: core.DreamConfig, sizes: np.ndarray, row: Any) -> np.ndarray:
    """What ``core.branch_step(canvas=True)`` takes as ``valid`` for schedule ``row`` (layer, octave, ...):
    (N, 3 + layer, 2) each image's true size, its view's at the row's octave, and every layer's output's."""
    layer, octave = int(row[0]), min(int(row[1]), config.octave_count - 1)
    out = []
    for h, w in sizes.tolist():
        view = config.parameterisation.sizes(h, w, config.octave_count)[octave]
        shapes = model.layer_output_shapes(*view, layer)
        out.append([(h, w), view, *((a, b) for a, b, _ in shapes)])
    return np.asarray(out, np.int32)


def plan_canvases(sizes: Iterable[Size], waste: float = CANVAS_WASTE) -> dict[Size, Size]:
    """Each distinct (height, width) -> the canvas it is dreamed on (itself when it shares with no other size):
    largest first, a size joins the first canvas that, grown to hold it, has at most ``waste`` times the pixels
    of every image on it. The plan depends only on the set of sizes."""
    canvases: list[tuple[Size, list[Size]]] = []
    for size in sorted(set(sizes), key=lambda s: (s[0] * s[1], s), reverse=True):
        for index, (canvas, members) in enumerate(canvases):
            grown = (max(canvas[0], size[0]), max(canvas[1], size[1]))
            if grown[0] * grown[1] <= waste * min(h * w for h, w in (*members, size)):
                canvases[index] = (grown, [*members, size])
                break
        else:
            canvases.append((size, [size]))
    return {member: canvas for canvas, members in canvases for member in members}


def on_canvas(images: list[np.ndarray], canvas: Size) -> np.ndarray:
    """Images (h, w, 3) of sizes up to ``canvas`` -> (N, H, W, 3), each in the top-left corner, zeros beyond."""
    batch = np.zeros((len(images), *canvas, 3), np.float32)
    for i, x in enumerate(images):
        batch[i, : x.shape[0], : x.shape[1]] = x
    return batch
