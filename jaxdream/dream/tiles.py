"""Tiled dreaming: images of any size through one gradient program of fixed shape per dream layer.

Each iteration draws Darknet's layer, octave, shift and flip as an untiled round does, plus a random roll. The
image is shifted, resized to the octave and flipped as usual, then rolled (circularly) by the roll and cut into
N x N tiles: along each side at 0, N, 2N, ... with the last tile overlapping the one before it, and a side shorter
than N padded by repeating its edge. The objective's gradient of every tile (of every image of the batch) goes
through one compiled program of shape (tiles per call, N, N, 3); the tiles' gradients are stitched, unrolled,
unflipped and resized back, and the step is normalised over the whole image, as untiled.

What changes: the objective is per tile, so Darknet's threshold (mean + thresh * std of the layer) is taken per
tile, and the layer's receptive field stops at tile borders; the random roll moves the borders every iteration,
so no seam stays. A tile at least as large as the image is no tiling at all: the untiled round runs.

Only the small glue programs (cut, stitch) depend on the image size and octave; they compile in a fraction of a
second. The gradient program depends on the tile size, the layer and the tiles per call only.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxdream import checks, progress
from jaxdream.compiled.cache import Program, program_cache, program_peak_bytes
from jaxdream.compiled.placement import placed_params
from jaxdream.compiled.stats import RunStats
from jaxdream.dream import core
from jaxdream.errors import OptionError

if TYPE_CHECKING:
    from jaxdream.protocol import Model

Array = jax.Array
DEFAULT_TILE = 256
# The most tiles one gradient call takes. A CPU gains nothing from larger batches (each activation of a batch of 16
# 256-px tiles streams from DRAM: measured 1.9x slower per tile than untiled at 1024x768, benchmarks/NOTES.md).
MAX_TILES_PER_CALL = {"cpu": 4}
DEFAULT_MAX_TILES_PER_CALL = 32
ACTIVATION_FACTOR = 1.5  # planned bytes per activation byte: XLA reuses buffers (measured ~1.0 on vgg-conv)
UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def check_tile(tile: int | None) -> int | None:
    if tile is None:
        return None
    return checks.check_count("tile", tile, 8)


def parse_memory(text: str | int | None) -> int | None:
    """'6G', '512M', '1.5g' or a byte count -> bytes."""
    if text is None or isinstance(text, int):
        return text
    value, unit = text.strip().lower().rstrip("b"), ""
    if value and value[-1] in UNITS:
        value, unit = value[:-1], value[-1]
    try:
        number = float(value)
    except ValueError:
        raise OptionError(f"--memory {text!r}: write a size such as 6G, 512M or 1500000000") from None
    size = number * UNITS[unit]
    if not math.isfinite(size) or not 1 <= size <= 1 << 60:
        raise OptionError(f"--memory {text!r} must be a size between 1 byte and an exabyte")
    return int(size)


def device_budget() -> int:
    """The memory a run may plan for when no --memory is given: 80 % of a GPU's, half of the machine's RAM."""
    device = jax.local_devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and stats.get("bytes_limit"):
        return int(0.8 * stats["bytes_limit"])
    return int(0.5 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def budget(memory: str | int | None = None) -> int:
    """The memory budget in bytes: ``memory`` ('6G') when given, else the device's (device_budget)."""
    return parse_memory(memory) or device_budget()


def untiled_bytes(model: Model, layers: tuple[int, ...], height: int, width: int, batch: int) -> int:
    """What an untiled round at this size is planned to hold: the parameters and the activations up to the deepest
    layer (x ACTIVATION_FACTOR for the gradient's), per image; from the layer table, without compiling."""
    shapes = model.layer_output_shapes(height, width, max(layers))
    activations = sum(h * w * c for h, w, c in shapes) + height * width * 3
    return _param_bytes(model) + 4 * int(ACTIVATION_FACTOR * activations * batch)


def starts(size: int, tile: int) -> list[int]:
    """Where the tiles along one side begin: 0, N, 2N, ..., the last one ending at the side's end."""
    if size <= tile:
        return [0]
    found = list(range(0, size - tile + 1, tile))
    return found if found[-1] + tile == size else [*found, size - tile]


def tile_count(height: int, width: int, tile: int) -> int:
    return len(starts(height, tile)) * len(starts(width, tile))


def cut_program(config: core.DreamConfig, size: tuple[int, int], tile: int) -> Callable:
    """(images (B,H,W,3), row (5,), roll (2,)) -> tiles (B * T, N, N, 3) of the transformed images viewed at
    ``size`` (the config's parameterisation and transform, as the untiled step), then rolled."""
    rows, cols = starts(size[0], tile), starts(size[1], tile)
    param, transform = config.parameterisation, config.transformation

    def cut(images: Array, row: Array, roll: Array) -> Array:
        small = transform.inside(param.view(transform.before(images, row), size), row)
        rolled = jnp.roll(small, (roll[0], roll[1]), axis=(1, 2))
        padded = jnp.pad(rolled, ((0, 0), (0, max(tile - size[0], 0)), (0, max(tile - size[1], 0)), (0, 0)),
                         mode="edge")
        tiles = jnp.stack([padded[:, r : r + tile, c : c + tile] for r in rows for c in cols], axis=1)
        return tiles.reshape(-1, tile, tile, 3)

    return cut


def stitch_program(config: core.DreamConfig, size: tuple[int, int], full: tuple[int, int], tile: int) -> Callable:
    """(images, tile gradients (B * T, N, N, 3), row, roll, rate) -> the stepped images: the gradients stitched
    (a later tile's overlap wins), unrolled, unflipped, resized back to full size, then Darknet's update."""
    rows, cols = starts(size[0], tile), starts(size[1], tile)

    param, transform = config.parameterisation, config.transformation

    def stitch(images: Array, grads: Array, row: Array, roll: Array, rate: Array) -> Array:
        grads = grads.reshape(images.shape[0], len(rows) * len(cols), tile, tile, 3)
        canvas = jnp.zeros((images.shape[0], max(size[0], tile), max(size[1], tile), 3), grads.dtype)
        for k, (r, c) in enumerate((r, c) for r in rows for c in cols):
            canvas = canvas.at[:, r : r + tile, c : c + tile].set(grads[:, k])
        small = jnp.roll(canvas[:, : size[0], : size[1]], (-roll[0], -roll[1]), axis=(1, 2))
        grad = param.back(transform.inside(small, row), full)
        return jax.vmap(lambda img, g: core.apply_gradient(config.step, img, g, row, rate))(images, grad)

    return stitch


def gradient_program(model: Model, objective: str, layer: int, precision: str) -> Callable:
    """(params, tiles (K, N, N, 3), aux) -> (objective values (K,), gradients (K, N, N, 3)): the one program of
    a tiled run per layer, whatever the image sizes."""
    function = core.objective_function(model, objective, precision)
    return lambda params, tiles, aux: core.values_and_gradients(function, params, tiles, layer, aux)


def schedule_program(config: core.DreamConfig) -> Callable:
    """(seed, round) -> (the round's schedule (iters, 5), uniform draws (iters, 2) for the rolls)."""

    def draw(seed: Array, index: Array) -> tuple[Array, Array]:
        key = core.round_key(seed, index)
        return core.draw_schedule(key, config), jax.random.uniform(jax.random.fold_in(key, 1), (config.iters, 2))

    return draw


def param_structs(model: Model) -> Any:
    """The parameters' shapes (from the architecture when the model has no weights yet), for compiling only."""
    if not model.params:
        return model.params_from_flat({path: jax.ShapeDtypeStruct(shape, np.float32)
                                       for path, shape in model.param_shapes().items()})
    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(np.shape(a), np.float32), model.params)


def _param_bytes(model: Model) -> int:
    return 4 * sum(int(np.prod(s.shape)) for s in jax.tree_util.tree_leaves(param_structs(model)))


def tiles_per_call(model: Model, config: core.DreamConfig, tile: int, aux: Any, budget: int,
                   stats: RunStats | None = None) -> tuple[int, int]:
    """The most tiles one gradient call may take within ``budget`` bytes (at most MAX_TILES_PER_CALL for the
    platform, a multiple of the local devices), from the compiled programs' memory analysis: the largest program
    first, which is the one that runs when it fits (one compile); otherwise its parameters once and the rest per
    tile give the count. Returns (tiles per call, planned bytes)."""
    devices = jax.local_devices()
    most = MAX_TILES_PER_CALL.get(devices[0].platform, DEFAULT_MAX_TILES_PER_CALL)
    devices = len(devices)
    count = max(most // devices, 1) * devices
    while True:
        planned = _planned_bytes(model, config, tile, aux, count, stats)
        if planned <= budget or count == devices:
            return count, planned
        per_tile = max(planned - _param_bytes(model), 1) / count
        count = max(devices, min(count - devices, int((budget - _param_bytes(model)) // per_tile) // devices
                                 * devices))


def _planned_bytes(model: Model, config: core.DreamConfig, tile: int, aux: Any, count: int,
                   stats: RunStats | None) -> int:
    mesh = _tile_mesh()
    sharding = NamedSharding(mesh, PartitionSpec("tiles")) if mesh is not None else None
    params = param_structs(model)
    if mesh is not None:
        params = jax.tree_util.tree_map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=NamedSharding(mesh, PartitionSpec())), params)
    structs = (params, jax.ShapeDtypeStruct((count, tile, tile, 3), np.float32, sharding=sharding), aux)
    return program_peak_bytes(program_cache().compiled(_gradient(model, config, config.layers[-1]), structs,
                                                       stats)) or 0


def _gradient(model: Model, config: core.DreamConfig, layer: int) -> Program:
    return Program("tile_gradient", model, (config.objective, layer, config.precision),
                   lambda: gradient_program(model, config.objective, layer, config.precision))


def tiled_round(model: Model, config: core.DreamConfig, images: Any, seed: int, index: int, rate: float,
                aux: Any, tile: int, per_call: int, stats: RunStats) -> tuple[Any, np.ndarray]:
    """One round of ``config.iters`` tiled iterations on images (B, H, W, 3) -> (the new images, the objective
    before each iteration (iters, B): the sum over each image's tiles)."""
    cache = program_cache()
    full = (images.shape[1], images.shape[2])
    draws = Program("tile_schedule", None, config, lambda: schedule_program(config))
    schedule, rolls = (np.asarray(a) for a in cache(draws, np.uint32(seed), np.int32(index), stats=stats))
    values = np.zeros((config.iters, images.shape[0]), np.float32)
    sizes = config.parameterisation.sizes(*full, config.octave_count)
    rates = config.step_rates(rate)
    for i in range(config.iters):
        row = schedule[i]
        size = sizes[int(row[1])]
        roll = np.array([int(rolls[i, 0] * size[0]), int(rolls[i, 1] * size[1])], np.int32)
        cut = Program("tile_cut", None, (config.param, config.transform, size, tile),
                      lambda size=size: cut_program(config, size, tile))
        pieces = np.asarray(cache(cut, images, row, roll, stats=stats))
        tile_values, grads = _tile_gradients(model, config, int(row[0]), pieces, aux, per_call, stats)
        values[i] = tile_values.reshape(images.shape[0], -1).sum(axis=1)
        stitch = Program("tile_stitch", None, (config, size, full, tile),
                         lambda size=size: stitch_program(config, size, full, tile))
        images = cache(stitch, images, grads, row, roll, rates[i], stats=stats)
        stats.iterations += 1
        progress.advance(1, "iteration")
    return images, values


def _tile_gradients(model: Model, config: core.DreamConfig, layer: int, pieces: np.ndarray, aux: Any,
                    per_call: int, stats: RunStats) -> tuple[np.ndarray, np.ndarray]:
    """Every tile's objective and gradient, ``per_call`` tiles at a time (the last call padded with blank tiles),
    sharded over the local devices when there are several."""
    program, count = _gradient(model, config, layer), len(pieces)
    pieces = np.concatenate([pieces, np.zeros((-count % per_call, *pieces.shape[1:]), pieces.dtype)])
    mesh = _tile_mesh()
    values, grads = [], []
    for k in range(0, len(pieces), per_call):
        chunk = pieces[k : k + per_call]
        if mesh is not None:
            chunk = jax.device_put(chunk, NamedSharding(mesh, PartitionSpec("tiles")))
        value, grad = program_cache()(program, placed_params(model, chunk), chunk, aux, stats=stats)
        values.append(np.asarray(value))
        grads.append(np.asarray(grad))
    return np.concatenate(values)[:count], np.concatenate(grads)[:count]


def _tile_mesh() -> Mesh | None:
    devices = jax.local_devices()
    return Mesh(np.array(devices), ("tiles",)) if len(devices) > 1 else None
