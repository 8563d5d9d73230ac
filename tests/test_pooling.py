"""Max-pooling and its gradient against a NumPy transcription of Darknet's forward/backward_maxpool_layer loops."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdream.darknet import cfg as C
from jaxdream.darknet.layers import maxpool
from jaxdream.darknet.shapes import maxpool_out
from jaxdream.ops import max_pool


def darknet_maxpool(x: np.ndarray, size: int, stride: int, padding: int, dy: np.ndarray):
    """(H, W, C) -> output and input gradient: each window's first maximum (row-major, strict >) takes dy."""
    h, w, c = x.shape
    oh, ow = (h + padding - size) // stride + 1, (w + padding - size) // stride + 1
    out = np.full((oh, ow, c), -np.inf)
    dx = np.zeros_like(x)
    offset = -(padding // 2)
    for k in range(c):
        for i in range(oh):
            for j in range(ow):
                best, where = -np.inf, None
                for n in range(size):
                    for m in range(size):
                        r, q = offset + i * stride + n, offset + j * stride + m
                        if 0 <= r < h and 0 <= q < w and x[r, q, k] > best:
                            best, where = x[r, q, k], (r, q)
                out[i, j, k] = best
                dx[where[0], where[1], k] += dy[i, j, k]
    return out, dx


# (h, w, size, stride, padding): Darknet's default padding is size - 1; odd sizes pad the far edge with -inf
CASES = [(8, 8, 2, 2, 1), (7, 9, 2, 2, 1), (9, 7, 3, 3, 2), (6, 8, 2, 2, 0), (7, 7, 2, 2, 0), (8, 6, 3, 3, 4),
         (7, 8, 2, 1, 1), (9, 9, 3, 2, 2), (5, 6, 1, 1, 0)]


@pytest.mark.parametrize(("h", "w", "size", "stride", "padding"), CASES)
def test_maxpool_and_gradient_match_darknet_with_ties(h, w, size, stride, padding):
    rng = np.random.default_rng(h * 100 + w * 10 + size)
    x = rng.integers(0, 3, (2, h, w, 4)).astype(np.float32)  # three values: many exact ties in every window
    spec = C.MaxPool(index=0, line=1, size=size, stride=stride, padding=padding)
    oh, ow = maxpool_out(h, spec), maxpool_out(w, spec)
    dy = rng.standard_normal((2, oh, ow, 4)).astype(np.float32)
    out, vjp = jax.vjp(jax.jit(lambda z: maxpool(z, spec)), jnp.asarray(x))
    (dx,) = vjp(jnp.asarray(dy))
    for b in range(2):
        ref_out, ref_dx = darknet_maxpool(x[b].astype(np.float64), size, stride, padding, dy[b].astype(np.float64))
        np.testing.assert_array_equal(np.asarray(out[b]), ref_out)
        np.testing.assert_allclose(np.asarray(dx[b]), ref_dx, rtol=1e-6, atol=1e-6)


def test_valid_pooling_drops_what_no_window_reaches():
    """Keras 'valid' 2x2/2 on 7x5: the last row and column belong to no window and get no gradient."""
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 7, 5, 2)), jnp.float32)
    out, vjp = jax.vjp(lambda z: max_pool(z, (2, 2), (2, 2), [(0, 0), (0, 0)]), x)
    ref = np.asarray(x)[0, :6, :4].reshape(3, 2, 2, 2, 2).max(axis=(1, 3))
    np.testing.assert_array_equal(np.asarray(out[0]), ref)
    dx = np.asarray(vjp(jnp.ones_like(out))[0][0])
    assert dx[6].sum() == 0 and dx[:, 4].sum() == 0 and dx.sum() == out.size


@pytest.mark.parametrize(("shape", "window", "strides", "pads"), [
    ((2, 13, 13, 3), (3, 3), (2, 2), ((1, 1), (1, 1))), ((2, 11, 11, 3), (3, 3), (2, 2), ((0, 1), (0, 1))),
    ((2, 10, 9, 4), (3, 3), (1, 1), ((1, 1), (1, 1))), ((1, 8, 8, 2), (2, 2), (1, 1), ((0, 1), (0, 1)))])
def test_overlapping_windows_route_the_gradient_as_xla_select_and_scatter(shape, window, strides, pads):
    """Overlapping pools (SqueezeNet's 3x3/2) are differentiated one axis at a time, not by select-and-scatter: the
    same routing (integer dy sums exactly in any order: equal bits), and the same sums to float rounding."""
    from jax import lax

    rng = np.random.default_rng(sum(shape))
    for x in (rng.integers(0, 3, shape).astype(np.float32), rng.standard_normal(shape).astype(np.float32)):
        out, vjp = jax.vjp(lambda z: max_pool(z, window, strides, list(pads)), jnp.asarray(x))
        ref_out, ref_vjp = jax.vjp(lambda z: lax.reduce_window(z, -jnp.inf, lax.max, (1, *window, 1),
                                                               (1, *strides, 1), ((0, 0), *pads, (0, 0))), x)
        np.testing.assert_array_equal(np.asarray(out), np.asarray(ref_out))
        counts = jnp.asarray(rng.integers(-1000, 1000, out.shape).astype(np.float32))
        np.testing.assert_array_equal(np.asarray(vjp(counts)[0]), np.asarray(ref_vjp(counts)[0]))
        dy = jnp.asarray(rng.standard_normal(out.shape).astype(np.float32))
        np.testing.assert_allclose(np.asarray(vjp(dy)[0]), np.asarray(ref_vjp(dy)[0]), rtol=1e-6, atol=1e-6)
