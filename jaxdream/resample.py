"""Antialiased bilinear resizing (Pillow's BILINEAR, ``jax.image.resize(..., "linear", antialias=True)``) as banded
matrix products: resizing one axis is a matrix whose rows each reach a few inputs, so it is computed a block of
outputs at a time, each block reading one window of the input.

Why: ``jax.image.resize`` contracts the whole (out x in) matrix (~12x the arithmetic of the band at 236 -> 224) and
transposes the image around it; inside SqueezeNet's render step (its 236 -> 224 squash to the network) the banded
form made the whole step ~5 % faster (benchmarks/NOTES.md).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Array = jax.Array
BLOCK = 16  # outputs per block: the windows' overlap stays small, each product stays a real matrix product


@functools.cache
def axis_weights(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in): ``jax.image.resize``'s antialiased 'linear' weights for one axis, a triangle widened
    by the downscale factor and normalised per output."""
    inverse = np.float32(1) / (np.float32(size_out) / np.float32(size_in))  # jax's arithmetic, to the bit
    sample = (np.arange(size_out, dtype=np.float32) + 0.5) * inverse - 0.5
    distance = np.abs(sample[:, None] - np.arange(size_in, dtype=np.float32)[None, :]) / max(inverse, np.float32(1))
    weights = np.maximum(np.float32(0), 1 - distance)
    total = weights.sum(axis=1, keepdims=True)
    weights = np.where(np.abs(total) > 1000 * np.finfo(np.float32).eps, weights / np.where(total != 0, total, 1), 0)
    inside = (sample >= -0.5) & (sample <= size_in - 0.5)
    return np.where(inside[:, None], weights, 0).astype(np.float32)


@functools.cache
def _bands(size_in: int, size_out: int) -> tuple[tuple[int, ...], np.ndarray]:
    """(each block's first input, weights (blocks, BLOCK, window)): the blocks of ``axis_weights``."""
    blocks = -(-size_out // BLOCK)
    matrix = np.zeros((blocks * BLOCK, size_in), np.float32)
    matrix[:size_out] = axis_weights(size_in, size_out)
    spans = []
    for block in range(blocks):
        reached = np.flatnonzero(matrix[block * BLOCK : (block + 1) * BLOCK].any(axis=0))
        spans.append((int(reached[0]), int(reached[-1]) + 1) if reached.size else (0, 1))
    window = max(stop - start for start, stop in spans)
    starts = tuple(min(start, size_in - window) for start, _ in spans)
    rows = [matrix[block * BLOCK : (block + 1) * BLOCK, start : start + window] for block, start in enumerate(starts)]
    return starts, np.stack(rows)


def resize_axis(x: Array, size: int, axis: int) -> Array:
    """``x`` resized to ``size`` along ``axis`` (antialiased bilinear)."""
    if x.shape[axis] == size:
        return x
    starts, weights = _bands(x.shape[axis], size)
    windows = jnp.stack([lax.slice_in_dim(x, start, start + weights.shape[2], axis=axis) for start in starts], axis)
    letters = "abcdefghij"[: x.ndim]
    before, after = letters[:axis], letters[axis + 1 :]
    out = jnp.einsum(f"{before}XK{after},XOK->{before}XO{after}", windows, jnp.asarray(weights, x.dtype),
                     precision=lax.Precision.HIGHEST)
    out = out.reshape(*x.shape[:axis], -1, *x.shape[axis + 1 :])
    return lax.slice_in_dim(out, 0, size, axis=axis)


def smooth_resize(x: Array, height: int, width: int) -> Array:
    """Antialiased bilinear resize of (..., H, W, C): a triangle filter widened by the downscale factor, as Pillow's
    BILINEAR, tf.image.resize(antialias=True) and torchvision's antialiased resize compute it."""
    return resize_axis(resize_axis(x, height, x.ndim - 3), width, x.ndim - 2)
