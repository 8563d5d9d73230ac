"""Layer operations every backend shares: the compute modes, convolution and dense in a compute mode, the
same-padded convolution whose gradient Darknet's golden vectors pin down, and Darknet-style max-pooling.

Everything is NHWC float32.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import jax
import jax.numpy as jnp
from jax import lax

from jaxdream.errors import OptionError

Array = jax.Array
_DIMS = ("NHWC", "HWIO", "NHWC")
# Largest patch tensor a CPU convolution is computed through (``_conv_as_dot``); a larger one (a large image's first
# layers) would raise the program's peak memory by up to the window size times the input, so those stay XLA's.
MAX_PATCH_BYTES = 32 << 20
# Compute modes for convolutions and dense layers: a static argument of every program (part of its cache key).
# f32, the default, is full float32: on GPUs the TF32 default moves one nightmare step by up to 5e-2 from
# Darknet's result (measured on an H100, benchmarks/NOTES.md) where f32 matches it to 1e-7. tf32 and bf16 trade
# that for speed on GPUs; accumulation stays float32.
COMPUTE_MODES = ("f32", "tf32", "bf16")
PRECISION_ENV = "JAXDREAM_PRECISION"


def check_precision(mode: str, source: str = "--precision ") -> str:
    """``mode`` if it is a compute mode, else one clear error naming where it came from."""
    if mode not in COMPUTE_MODES:
        raise OptionError(f"{source}{mode!r}: use one of {', '.join(COMPUTE_MODES)}")
    return mode


def default_precision() -> str:
    """The compute mode a call uses when it names none: $JAXDREAM_PRECISION, else f32 (read when a config or a
    call is made, never while a program is traced)."""
    return check_precision(os.environ.get(PRECISION_ENV, "f32"), f"{PRECISION_ENV}=")


def resolve_precision(mode: str | None) -> str:
    """``mode`` checked, or the default (``default_precision``) when None: the one place a config's precision is
    settled."""
    return check_precision(mode) if mode is not None else default_precision()


def _operands(precision: str, *arrays: Array) -> tuple[tuple[Array, ...], dict]:
    if precision == "bf16":
        return tuple(a.astype(jnp.bfloat16) for a in arrays), {}
    return arrays, {"precision": lax.Precision.HIGHEST if precision == "f32" else lax.Precision.DEFAULT}


def conv(x: Array, kernel: Array, strides: Sequence[int], padding: Sequence[tuple[int, int]],
         groups: int = 1, precision: str = "f32", dilation: Sequence[int] = (1, 1)) -> Array:
    """Every convolution of every model goes through here, in compute mode ``precision``; float32 out.

    In bf16 the convolution itself returns bfloat16 (cuDNN accumulates in float32 either way): XLA:GPU has no
    convolution with bf16 operands and a float32 result, and its float normalization turns one into a float32
    (TF32) convolution, which is what the first H100 bf16 run measured (benchmarks/NOTES.md).
    """
    (x, kernel), options = _operands(precision, x, kernel)
    if groups == 1 and tuple(dilation) == (1, 1) and precision != "bf16" and jax.default_backend() == "cpu" \
            and _patch_bytes(x, kernel, strides, padding) <= MAX_PATCH_BYTES:
        return _conv_as_dot(x, kernel, tuple(strides), tuple(padding), options).astype(jnp.float32)
    return lax.conv_general_dilated(x, kernel, tuple(strides), tuple(padding), rhs_dilation=tuple(dilation),
                                    dimension_numbers=_DIMS, feature_group_count=groups, **options).astype(jnp.float32)


def _patch_bytes(x: Array, kernel: Array, strides: Sequence[int], padding: Sequence[tuple[int, int]]) -> int:
    """The size of ``_conv_as_dot``'s patches: one shifted copy of the input per window position beyond the first."""
    kh, kw, cin, _ = kernel.shape
    if kh * kw == 1:
        return 0
    oh = (x.shape[1] + sum(padding[0]) - kh) // strides[0] + 1
    ow = (x.shape[2] + sum(padding[1]) - kw) // strides[1] + 1
    return x.shape[0] * oh * ow * kh * kw * cin * x.dtype.itemsize


def _conv_as_dot(x: Array, kernel: Array, strides: tuple[int, ...], padding: tuple[tuple[int, int], ...],
                 options: dict) -> Array:
    """The convolution as one matrix product over the window's shifted copies of the input (im2col).

    Why: XLA:CPU's own convolution, forward and both gradients, runs 1.3-2.2x slower than its matrix product on
    the layer shapes of SqueezeNet and Tiny Darknet (benchmarks/NOTES.md, "Convolutions as matrix products")."""
    kh, kw, cin, cout = kernel.shape
    sh, sw = strides
    x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    oh, ow = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    windows = [x[:, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw, :]
               for i in range(kh) for j in range(kw)]
    patches = windows[0] if len(windows) == 1 else jnp.concatenate(windows, axis=-1)
    return lax.dot_general(patches, kernel.reshape(kh * kw * cin, cout), (((3,), (0,)), ((), ())), **options)


def dense(x: Array, kernel: Array, precision: str = "f32") -> Array:
    (x, kernel), options = _operands(precision, x, kernel)
    return jnp.matmul(x, kernel, preferred_element_type=jnp.float32, **options)


def _plain_conv(x: Array, kernel: Array, pad: int, precision: str) -> Array:
    return conv(x, kernel, (1, 1), ((pad, pad), (pad, pad)), precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def same_conv(x: Array, kernel: Array, pad: int, precision: str = "f32") -> Array:
    """A stride-1, ungrouped convolution whose input gradient is an ordinary forward convolution.

    Why: XLA:CPU runs the input-gradient convolution that autodiff derives (window-reversed) 5-6x slower inside a
    while loop than outside it, and the dream loop is a while loop. Expressing it as a forward convolution with the
    kernel flipped and transposed explicitly gives bit-identical gradients at full speed (benchmarks/NOTES.md).
    """
    return _plain_conv(x, kernel, pad, precision)


def _same_conv_fwd(x: Array, kernel: Array, pad: int, precision: str) -> tuple[Array, tuple[Array, Array]]:
    return _plain_conv(x, kernel, pad, precision), (x, kernel)


def _same_conv_bwd(pad: int, precision: str, residuals: tuple[Array, Array], dy: Array) -> tuple[Array, Array]:
    x, kernel = residuals
    size = kernel.shape[0]
    flipped = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)
    dx = _plain_conv(dy, flipped, size - 1 - pad, precision) if x.shape[1:3] == dy.shape[1:3] else \
        jax.vjp(lambda z: _plain_conv(z, kernel, pad, precision), x)[1](dy)[0]
    dkernel = jax.vjp(lambda k: _plain_conv(x, k, pad, precision), kernel)[1](dy)[0]  # dropped by XLA when unused
    return dx, dkernel


same_conv.defvjp(_same_conv_fwd, _same_conv_bwd)


def max_pool(x: Array, window: tuple[int, int], strides: tuple[int, int], pads: Sequence[tuple[int, int]]) -> Array:
    """Max over windows of NHWC ``x`` with (lo, hi) padding per spatial axis, out = (size + lo + hi - window) //
    stride + 1. The gradient goes to the first maximum of each window in row-major order, as in Darknet."""
    reach = []  # the hi padding the last window really uses; negative where it stops short of the edge
    for size, (lo, hi), k, s in zip(x.shape[1:3], pads, window, strides, strict=True):
        reach.append((lo, ((size + lo + hi - k) // s) * s + k - size - lo))
    x = x[:, : x.shape[1] + min(reach[0][1], 0), : x.shape[2] + min(reach[1][1], 0)]
    pads = [(lo, max(hi, 0)) for lo, hi in reach]
    if tuple(window) == tuple(strides):
        return _tiled_max(x, tuple(window), tuple(map(tuple, pads)))
    return _window_max(x, tuple(window), tuple(strides), tuple(map(tuple, pads)))


def _padded(x: Array, pads: tuple[tuple[int, int], ...]) -> Array:
    return lax.pad(x, jnp.array(-jnp.inf, x.dtype), ((0, 0, 0), *((lo, hi, 0) for lo, hi in pads), (0, 0, 0)))


def _tiles(x: Array, window: tuple[int, int], pads: tuple[tuple[int, int], ...]) -> Array:
    """(N, H', wh, W', ww, C): the padded image cut into its non-overlapping windows in place (no transpose, so
    the channels stay the minor dimension); padding is -inf."""
    padded = _padded(x, pads)
    n, h, w, c = padded.shape
    (wh, ww) = window
    return padded.reshape(n, h // wh, wh, w // ww, ww, c)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _tiled_max(x: Array, window: tuple[int, int], pads: tuple[tuple[int, int], ...]) -> Array:
    """Max-pool with stride = window (VGG's, Darknet's 2x2/2), differentiated without select-and-scatter.

    Why: XLA:CPU lowers the select-and-scatter of reduce_window's gradient to a scatter with explicit indices (four
    full-size index arrays under vmap); masking each window's first maximum is a plain fusion, bit-identical and
    10-27 % faster per VGG step (benchmarks/NOTES.md). jnp.max's own gradient would split ties, Darknet's does not.
    """
    return _tiles(x, window, pads).max(axis=(2, 4))


def _tiled_max_fwd(x: Array, window: tuple[int, int], pads: tuple[tuple[int, int], ...]
                   ) -> tuple[Array, tuple[Array, Array]]:
    y = _tiled_max(x, window, pads)
    return y, (x, y)


def _tiled_max_bwd(window: tuple[int, int], pads: tuple[tuple[int, int], ...], residuals: tuple[Array, Array],
                   dy: Array) -> tuple[Array]:
    x, y = residuals
    hits = _tiles(x, window, pads) == y[:, :, None, :, None, :]
    seen = jnp.zeros_like(hits[:, :, 0, :, 0])
    rows = []
    for i in range(window[0]):  # row-major: a maximum counts only if no earlier one in its window did (Darknet's >)
        cols = []
        for j in range(window[1]):
            first = hits[:, :, i, :, j] & ~seen
            seen = seen | first
            cols.append(first)
        rows.append(jnp.stack(cols, axis=3))
    routed = jnp.where(jnp.stack(rows, axis=2), dy[:, :, None, :, None, :], jnp.zeros((), dy.dtype))
    n, oh, wh, ow, ww, c = routed.shape
    (top, _), (left, _) = pads
    return (routed.reshape(n, oh * wh, ow * ww, c)[:, top : top + x.shape[1], left : left + x.shape[2]],)


_tiled_max.defvjp(_tiled_max_fwd, _tiled_max_bwd)


def _window_views(x: Array, size: int, stride: int, axis: int) -> list[Array]:
    """The window's ``size`` offsets along ``axis``, each as a strided view with one entry per window."""
    count = (x.shape[axis] - size) // stride + 1
    return [lax.slice_in_dim(x, i, i + (count - 1) * stride + 1, stride, axis) for i in range(size)]


def _route(x: Array, y: Array, dy: Array, size: int, stride: int, axis: int) -> Array:
    """The gradient of a max over windows along one axis (``y`` from ``x``): each window's dy goes to its first
    maximum. Built by phases (the positions of ``x`` split by their remainder modulo the stride), so every piece
    is window-sized and only the final interleave is ``x``-sized; an input sums its windows in their order."""
    seen, picked = jnp.zeros(y.shape, bool), []
    for view in _window_views(x, size, stride, axis):
        first = (view == y) & ~seen
        seen = seen | first
        picked.append(jnp.where(first, dy, jnp.zeros((), dy.dtype)))
    count, length = y.shape[axis], -(-x.shape[axis] // stride)  # phase entry a is x's position a * stride + phase
    phases = []
    for phase in range(stride):
        total = jnp.zeros((*y.shape[:axis], length, *y.shape[axis + 1 :]), dy.dtype)
        for offset in reversed(range(phase, size, stride)):  # window w reaches phase entry w + offset // stride
            spread = [(0, 0, 0)] * y.ndim
            spread[axis] = (offset // stride, length - count - offset // stride, 0)
            total = total + lax.pad(picked[offset], jnp.zeros((), dy.dtype), spread)
        phases.append(total)
    whole = jnp.stack(phases, axis=axis + 1)
    whole = whole.reshape(*whole.shape[:axis], length * stride, *whole.shape[axis + 2 :])
    return lax.slice_in_dim(whole, 0, x.shape[axis], axis=axis)


def _window_max_parts(x: Array, window: tuple[int, int], strides: tuple[int, int], pads: tuple[tuple[int, int], ...]
                      ) -> tuple[Array, Array, Array]:
    """(padded x, the max over each window's columns, the max over its rows of those): a window's first maximum in
    row-major order is the first row holding the window's max, and that row's first column holding it."""
    padded = _padded(x, pads)
    across = functools.reduce(jnp.maximum, _window_views(padded, window[1], strides[1], 2))
    return padded, across, functools.reduce(jnp.maximum, _window_views(across, window[0], strides[0], 1))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _window_max(x: Array, window: tuple[int, int], strides: tuple[int, int], pads: tuple[tuple[int, int], ...]
                ) -> Array:
    """Max-pool of any window and stride (SqueezeNet's 3x3/2) as a max over columns, then over rows (strided views:
    XLA:CPU's reduce_window, which reads every window whole, took 6x as long on SqueezeNet's first pool), and
    differentiated the same way, one axis at a time, without select-and-scatter (XLA:CPU spent 0.53 of a SqueezeNet
    batch's 0.86 s backward in it)."""
    return _window_max_parts(x, window, strides, pads)[2]


def _window_max_fwd(x: Array, window: tuple[int, int], strides: tuple[int, int], pads: tuple[tuple[int, int], ...]
                    ) -> tuple[Array, tuple[Array, Array, Array]]:
    padded, across, y = _window_max_parts(x, window, strides, pads)
    return y, (padded, across, y)


def _window_max_bwd(window: tuple[int, int], strides: tuple[int, int], pads: tuple[tuple[int, int], ...],
                    residuals: tuple[Array, Array, Array], dy: Array) -> tuple[Array]:
    padded, across, y = residuals
    d_across = _route(across, y, dy, window[0], strides[0], 1)
    d_padded = _route(padded, across, d_across, window[1], strides[1], 2)
    (top, bottom), (left, right) = pads
    return (d_padded[:, top : d_padded.shape[1] - bottom, left : d_padded.shape[2] - right],)


_window_max.defvjp(_window_max_fwd, _window_max_bwd)


def region_mask(valid: Array, height: int, width: int) -> Array:
    """(N, height, width, 1) bool: where each image of a canvas batch holds its own pixels, given ``valid`` (N, 2),
    each image's (height, width) in the top-left corner of the canvas."""
    rows = jnp.arange(height)[None, :, None, None] < valid[:, 0, None, None, None]
    cols = jnp.arange(width)[None, None, :, None] < valid[:, 1, None, None, None]
    return rows & cols


@jax.custom_vjp
def redirected_relu(x: Array) -> Array:
    """ReLU whose gradient also reaches an inactive unit when it would raise it (Lucid's "redirected ReLU"): the
    values are the ReLU's; gradients that push a dead unit further down are still dropped."""
    return jax.nn.relu(x)


def _redirected_fwd(x: Array) -> tuple[Array, Array]:
    return jax.nn.relu(x), x


def _redirected_bwd(x: Array, g: Array) -> tuple[Array]:
    return (jnp.where((x > 0) | (g > 0), g, jnp.zeros((), g.dtype)),)


redirected_relu.defvjp(_redirected_fwd, _redirected_bwd)
_REDIRECT: ContextVar[bool] = ContextVar("jaxdream_redirected_relus", default=False)


@contextmanager
def redirected_relus(on: bool = True) -> Iterator[None]:
    """Inside this block (while a program is traced) every backend's ReLU is a ``redirected_relu``: feature
    visualisation's remedy for units that start dead."""
    token = _REDIRECT.set(on)
    try:
        yield
    finally:
        _REDIRECT.reset(token)


def relu(x: Array, plain: Callable[[Array], Array] = jax.nn.relu) -> Array:
    """A backend's ReLU (``plain``, its own arithmetic), or the redirected one inside ``redirected_relus``."""
    return redirected_relu(x) if _REDIRECT.get() else plain(x)
