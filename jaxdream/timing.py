"""Timing and counting for measuring dreams: compile and steady-state time apart, the program's peak memory, the
device's attainable matmul rate, and the FLOPs of Darknet networks and of the iterations a seed's rounds run.

FLOPs are counted analytically from the layer table (2 per multiply-add, convolutions and connected layers only; an
iteration is the forward plus the input gradient, 2x the forward). The benchmark suite (`benchmarks/` in the source
tree, `python -m benchmarks`) is built on these.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdream.compiled.cache import program_peak_bytes
from jaxdream.darknet import cfg as C
from jaxdream.darknet.model import DarknetModel
from jaxdream.darknet.shapes import layer_shapes
from jaxdream.dream import core
from jaxdream.dream.seams import octave_size


def timed(fn: Callable, *args: Any, runs: int = 5) -> dict[str, float]:
    """Compile seconds, steady-state seconds (median/min/max over ``runs`` after a warm-up) and the program's
    peak memory."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return {"compile_s": compile_s, "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "program_peak_bytes": program_peak_bytes(compiled)}


def forward_flops(cfg: C.Cfg, height: int, width: int, upto: int) -> float:
    """Multiply-adds x 2 of the convolutions and connected layers up to ``upto`` for one image."""
    shapes = layer_shapes(cfg, height, width, upto)
    flops, incoming = 0.0, (height, width, cfg.net.channels)
    for spec, shape in zip(cfg.layers[: upto + 1], shapes, strict=True):
        if isinstance(spec, C.Conv):
            flops += 2.0 * spec.size**2 * incoming[2] // spec.groups * spec.filters * shape[0] * shape[1]
        elif isinstance(spec, C.Connected):
            flops += 2.0 * incoming[0] * incoming[1] * incoming[2] * spec.output
        incoming = shape
    return flops


def matmul_rate(dtype: Any, n: int, precision: Any = jax.lax.Precision.HIGHEST) -> float:
    """The device's attainable matmul rate: the best of 10 timed n x n products (the ceiling rows are set against;
    the best, not the median, because the CPU's available throughput varies from moment to moment). f32 at
    HIGHEST precision is true float32, what jaxdream computes by default; GPUs' TF32 is recorded separately."""
    a = jnp.ones((n, n), dtype)
    return 2.0 * n**3 / timed(lambda x: jnp.matmul(x, x, precision=precision), a, runs=10)["min_s"] / 1e9


def drawn_flops(model: DarknetModel, config: core.DreamConfig, rounds: int, height: int, width: int,
                seed: int = 0) -> float:
    """FLOPs of the iterations a seed's rounds really run: each draws its own layer and octave size."""
    total = 0.0
    for r in range(rounds):
        for layer, octave, *_ in np.asarray(core.draw_schedule(core.round_key(seed, r), config)).tolist():
            total += 2 * forward_flops(model.cfg, *octave_size(height, width, octave), layer)
    return total
