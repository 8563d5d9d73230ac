"""The ONNX operators jaxdream runs, one function each: (inputs, attributes, precision) -> outputs.

Tensors are NCHW as ONNX defines them. Shape arithmetic (Shape, Gather, Unsqueeze, Concat of shapes, Reshape's
target) stays in NumPy whenever its inputs are NumPy arrays, so a graph's shape subgraph folds to constants while
it is traced. Convolutions go through ``ops.conv`` (the compute mode), max-pools through ``ops.max_pool`` (Darknet's
first-maximum gradient, its custom VJP).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxdream import ops

Array = Any
Op = Callable[[list[Any], dict[str, Any], str], list[Any]]
MAX_ELEMENTS = 2**31 - 1  # the most values one node may produce (8 GiB of float32; XLA's int32 indexing limit)
AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")
WINDOWED = ("Conv", "MaxPool", "AveragePool")


def check_attributes(op: str, attrs: dict[str, Any]) -> None:
    """The operator's rules on its attributes alone (ValueError naming the attribute), checked when the graph is
    read: a zero stride or a negative pad must not reach XLA, where it is a traceback or silent garbage."""
    def ints(key: str) -> list[int]:
        value = attrs[key]
        values = list(value) if isinstance(value, list | tuple | np.ndarray) else [value]
        if not all(isinstance(v, int | np.integer) for v in values):
            raise ValueError(f"{key}={value!r} must be integers")
        return [int(v) for v in values]

    if op in WINDOWED:
        if op != "Conv" and "kernel_shape" not in attrs:
            raise ValueError("kernel_shape is required")
        for key in ("kernel_shape", "strides", "dilations", "group"):
            if key in attrs and min(ints(key), default=1) < 1:
                raise ValueError(f"{key}={ints(key)} must be at least 1 (each)")
        if attrs.get("auto_pad", "NOTSET") not in AUTO_PADS:
            raise ValueError(f"auto_pad={attrs['auto_pad']!r} is not one of {', '.join(AUTO_PADS)}")
        if "pads" in attrs:
            pads = ints("pads")
            if len(pads) % 2 or min(pads, default=0) < 0:
                raise ValueError(f"pads={pads} must be a begin and an end for each axis, each 0 or more")
            if op != "Conv" and "kernel_shape" in attrs and len(pads) == 2 * len(ints("kernel_shape")):
                half = len(pads) // 2
                if any(max(lo, hi) >= k for lo, hi, k in zip(pads[:half], pads[half:], ints("kernel_shape"),
                                                              strict=True)):
                    raise ValueError(f"pads={pads} must be smaller than kernel_shape={ints('kernel_shape')}")
        lengths = {key: len(ints(key)) for key in ("kernel_shape", "strides", "dilations") if key in attrs}
        if "pads" in attrs:
            lengths["pads / 2"] = len(ints("pads")) // 2
        if len(set(lengths.values())) > 1:
            raise ValueError(f"{', '.join(lengths)} disagree on the number of spatial axes ({lengths})")
    elif op == "LRN" and ("size" not in attrs or ints("size")[0] < 1):
        raise ValueError("size must be given and at least 1")
    elif op == "Concat" and "axis" not in attrs:
        raise ValueError("axis is required")
    elif op == "Transpose" and "perm" in attrs and sorted(ints("perm")) != list(range(len(ints("perm")))):
        raise ValueError(f"perm={ints('perm')} is not a permutation of 0 .. {len(ints('perm')) - 1}")
    elif op == "Pad" and attrs.get("mode", "constant") not in ("constant", "reflect", "edge"):
        raise ValueError(f"mode={attrs['mode']!r} is not supported (constant, reflect, edge)")


def _axis(axis: int, rank: int, what: str = "axis") -> int:
    if not -rank <= int(axis) < rank:
        raise ValueError(f"{what}={axis} is out of range for a {rank}-D input (-{rank} .. {rank - 1})")
    return int(axis) % rank


def _check_window(x: Any, kernel: tuple[int, ...], strides: tuple[int, ...], dilations: tuple[int, ...],
                  pads: list[tuple[int, int]]) -> None:
    """The input is (N, C, *spatial) with one kernel, stride and dilation per spatial axis, and every output axis
    is at least 1 long (a window larger than the padded input is an empty result, or NaN for an average)."""
    if np.ndim(x) != 2 + len(kernel) or not len(strides) == len(dilations) == len(pads) == len(kernel):
        raise ValueError(f"a {len(kernel)}-D window (kernel {list(kernel)}, strides {list(strides)}, dilations "
                         f"{list(dilations)}) does not fit an input of shape {tuple(np.shape(x))}")
    for n, k, d, (lo, hi) in zip(np.shape(x)[2:], kernel, dilations, pads, strict=True):
        if n + lo + hi < (k - 1) * d + 1:
            raise ValueError(f"the window (kernel {list(kernel)}, dilations {list(dilations)}) is larger than the "
                             f"padded input {tuple(np.shape(x))} (pads {pads})")


def _xp(*arrays: Any) -> Any:
    """NumPy while every input is a NumPy constant (shape arithmetic), jax.numpy otherwise."""
    return np if all(isinstance(a, np.ndarray | np.generic | int | float) for a in arrays) else jnp


def _same_pads(size: int, kernel: int, stride: int, dilation: int, upper: bool) -> tuple[int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    small = total // 2
    return (small, total - small) if upper else (total - small, small)


def _pads(attrs: dict[str, Any], spatial: tuple[int, ...], kernel: tuple[int, ...], strides: tuple[int, ...],
          dilations: tuple[int, ...]) -> list[tuple[int, int]]:
    auto = attrs.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        return [_same_pads(n, k, s, d, auto == "SAME_UPPER") for n, k, s, d in zip(spatial, kernel, strides, dilations,
                                                                                 strict=True)]
    if auto == "VALID":
        return [(0, 0)] * len(spatial)
    pads = list(attrs.get("pads", [0] * 2 * len(spatial)))
    half = len(pads) // 2
    return list(zip(pads[:half], pads[half:], strict=True))


def _as_nchw(x: Any, channels_last: bool) -> Any:
    """What the checks read of an input held NHWC: a zero-cost array of its NCHW shape."""
    return np.broadcast_to(np.zeros((), np.float32), (x.shape[0], x.shape[3], x.shape[1], x.shape[2])) \
        if channels_last else x


def conv(inputs: list[Any], attrs: dict[str, Any], precision: str, channels_last: bool = False) -> list[Any]:
    """ONNX Conv; ``channels_last``: the input is held NHWC and so is the output (``network.run``)."""
    x, w = _as_nchw(inputs[0], channels_last), inputs[1]
    kernel = tuple(w.shape[2:])
    strides = tuple(attrs.get("strides", [1] * len(kernel)))
    dilations = tuple(attrs.get("dilations", [1] * len(kernel)))
    group = int(attrs.get("group", 1))
    if "kernel_shape" in attrs and tuple(attrs["kernel_shape"]) != kernel:
        raise ValueError(f"kernel_shape={list(attrs['kernel_shape'])} but the weight has shape {tuple(w.shape)}")
    if w.ndim < 3 or x.ndim != w.ndim or x.shape[1] != w.shape[1] * group or w.shape[0] % group:
        raise ValueError(f"the weight of shape {tuple(w.shape)} (group {group}) does not fit an input of shape "
                         f"{tuple(x.shape)}: it needs input channels = weight.shape[1] x group and output channels "
                         "divisible by group")
    if len(inputs) > 2 and inputs[2] is not None and tuple(np.shape(inputs[2])) != (w.shape[0],):
        raise ValueError(f"the bias of shape {tuple(np.shape(inputs[2]))} does not fit {w.shape[0]} output channels")
    pads = _pads(attrs, tuple(x.shape[2:]), kernel, strides, dilations)
    _check_window(x, kernel, strides, dilations, pads)
    # computed channels-last (XLA:CPU runs NCHW convolutions ~20x slower)
    y = ops.conv(inputs[0] if channels_last else jnp.transpose(inputs[0], (0, 2, 3, 1)),
                 jnp.transpose(w, (2, 3, 1, 0)), strides, pads, group, precision, dilation=dilations)
    if len(inputs) > 2 and inputs[2] is not None:
        y = y + inputs[2].reshape(*([1] * (1 + len(kernel))), -1)
    return [y if channels_last else y.transpose(0, 3, 1, 2)]


def _pool_geometry(x: Any, attrs: dict[str, Any]) -> tuple[tuple[int, ...], tuple[int, ...], list[tuple[int, int]]]:
    kernel = tuple(attrs["kernel_shape"])
    strides = tuple(attrs.get("strides", [1] * len(kernel)))
    if any(d != 1 for d in attrs.get("dilations", [1] * len(kernel))):
        raise ValueError("dilated pooling is not supported")
    pads = _pads(attrs, tuple(x.shape[2:]), kernel, strides, (1,) * len(kernel))
    _check_window(x, kernel, strides, (1,) * len(kernel), pads)
    if attrs.get("ceil_mode", 0):  # widen the end padding until the floor formula gives ONNX's ceil size
        widened = []
        for n, k, s, (lo, hi) in zip(x.shape[2:], kernel, strides, pads, strict=True):
            out = -(-(n + lo + hi - k) // s) + 1
            if (out - 1) * s >= n + lo:  # the last window would start in the end padding: ONNX drops it
                out -= 1
            widened.append((lo, max(hi, (out - 1) * s + k - n - lo)))
        pads = widened
    return kernel, strides, pads


def max_pool(inputs: list[Any], attrs: dict[str, Any], precision: str, channels_last: bool = False) -> list[Any]:
    """ONNX MaxPool; ``channels_last`` as for ``conv``."""
    kernel, strides, pads = _pool_geometry(_as_nchw(inputs[0], channels_last), attrs)
    y = ops.max_pool(inputs[0] if channels_last else jnp.transpose(inputs[0], (0, 2, 3, 1)), kernel, strides, pads)
    return [y if channels_last else jnp.transpose(y, (0, 3, 1, 2))]


def average_pool(inputs: list[Any], attrs: dict[str, Any], precision: str) -> list[Any]:
    x = inputs[0]
    kernel, strides, pads = _pool_geometry(x, attrs)
    given = _pads(attrs, tuple(x.shape[2:]), kernel, strides, (1,) * len(kernel))
    window, stride = (1, 1, *kernel), (1, 1, *strides)
    padding = ((0, 0), (0, 0), *pads)
    total = lax.reduce_window(x, 0.0, lax.add, window, stride, padding)
    # the divisor: the window's cells inside the image, plus the given padding when count_include_pad
    inside = jnp.ones((1, 1, *x.shape[2:]), x.dtype)
    if attrs.get("count_include_pad", 0):
        inside = jnp.pad(inside, ((0, 0), (0, 0), *given), constant_values=1.0)
        padding = ((0, 0), (0, 0), *((lo - g_lo, hi - g_hi) for (lo, hi), (g_lo, g_hi) in zip(pads, given,
                                                                                           strict=True)))
    count = lax.reduce_window(inside, 0.0, lax.add, window, stride, padding)
    return [total / count]


def batch_norm(inputs: list[Any], attrs: dict[str, Any], precision: str) -> list[Any]:
    x, scale, bias, mean, var = inputs[:5]
    if x.ndim < 2 or any(tuple(np.shape(a)) != (x.shape[1],) for a in (scale, bias, mean, var)):
        raise ValueError(f"scale, bias, mean and var must each have shape ({x.shape[1] if x.ndim > 1 else '?'},) "
                         f"for an input of shape {tuple(x.shape)}")
    shape = (1, -1, *([1] * (x.ndim - 2)))
    eps = attrs.get("epsilon", 1e-5)
    return [(x - mean.reshape(shape)) / jnp.sqrt(var.reshape(shape) + eps) * scale.reshape(shape)
            + bias.reshape(shape)]


def lrn(inputs: list[Any], attrs: dict[str, Any], precision: str) -> list[Any]:
    x = inputs[0]
    size = int(attrs["size"])
    if x.ndim < 3:
        raise ValueError(f"LRN needs an (N, C, ...) input, not shape {tuple(x.shape)}")
    alpha, beta, bias = attrs.get("alpha", 1e-4), attrs.get("beta", 0.75), attrs.get("bias", 1.0)
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    squares = lax.reduce_window(jnp.square(x), 0.0, lax.add, (1, size) + (1,) * (x.ndim - 2), (1,) * x.ndim,
                                ((0, 0), (lo, hi), *([(0, 0)] * (x.ndim - 2))))
    return [x / (bias + alpha / size * squares) ** beta]


def gemm(inputs: list[Any], attrs: dict[str, Any], precision: str) -> list[Any]:
    a, b = inputs[0], inputs[1]
    a = a.T if attrs.get("transA", 0) else a
    b = b.T if attrs.get("transB", 0) else b
    y = attrs.get("alpha", 1.0) * ops.dense(a, b, precision)
    if len(inputs) > 2 and inputs[2] is not None:
        y = y + attrs.get("beta", 1.0) * inputs[2]
    return [y]


def softmax(inputs: list[Any], attrs: dict[str, Any], precision: str, opset: int = 13) -> list[Any]:
    x = inputs[0]
    axis = attrs.get("axis", -1 if opset >= 13 else 1) % x.ndim
    if opset >= 13:
        return [jax.nn.softmax(x, axis=axis)]
    flat = x.reshape(int(np.prod(x.shape[:axis])), -1)  # opsets < 13: softmax of the input coerced to 2-D
    return [jax.nn.softmax(flat, axis=1).reshape(x.shape)]


def flatten(inputs: list[Any], attrs: dict[str, Any], precision: str) -> list[Any]:
    x = inputs[0]
    axis = attrs.get("axis", 1) % (x.ndim + 1) if x.ndim else 0
    return [x.reshape(int(np.prod(x.shape[:axis])), -1)]


def reshape(inputs: list[Any], attrs: dict[str, Any], precision: str) -> list[Any]:
    x = inputs[0]
    target = [int(v) for v in (np.asarray(inputs[1]) if len(inputs) > 1 else attrs["shape"])]
    target = [x.shape[i] if v == 0 and not attrs.get("allowzero", 0) and i < np.ndim(x) else v
              for i, v in enumerate(target)]
    known = int(np.prod([v for v in target if v != -1], dtype=object))
    if min(target, default=0) < -1 or target.count(-1) > 1 or (
            known != np.size(x) if -1 not in target else (known == 0 or np.size(x) % known)):
        raise ValueError(f"cannot reshape {tuple(np.shape(x))} ({np.size(x)} values) to {target}")
    return [_xp(x).reshape(x, target)]


def concat(inputs: list[Any], attrs: dict[str, Any], precision: str) -> list[Any]:
    ranks = {np.ndim(a) for a in inputs}
    if len(ranks) != 1:
        raise ValueError(f"inputs of different ranks {[np.shape(a) for a in inputs]}")
    return [_xp(*inputs).concatenate(inputs, axis=_axis(attrs["axis"], ranks.pop()))]


def transpose(inputs: list[Any], attrs: dict[str, Any], precision: str) -> list[Any]:
    x = inputs[0]
    if "perm" in attrs and len(attrs["perm"]) != np.ndim(x):
        raise ValueError(f"perm={list(attrs['perm'])} does not fit a {np.ndim(x)}-D input")
    return [_xp(x).transpose(x, attrs.get("perm"))]


def gather(inputs: list[Any], attrs: dict[str, Any], precision: str) -> list[Any]:
    x, indices = inputs
    axis = _axis(attrs.get("axis", 0), np.ndim(x))
    try:
        indices = np.asarray(indices)
    except (TypeError, jax.errors.ConcretizationTypeError):  # a traced value: its range cannot be checked
        raise ValueError("the indices must be constants (an initializer, a Constant or shape arithmetic)") from None
    n = np.shape(x)[axis]
    if np.size(indices) and not (-n <= indices.min() and indices.max() < n):
        raise ValueError(f"indices {indices.tolist()} are out of range for axis {axis} of length {n}")
    return [_xp(*inputs).take(x, indices, axis=axis)]


def _axes(inputs: list[Any], attrs: dict[str, Any]) -> list[int]:
    return [int(a) for a in (np.asarray(inputs[1]) if len(inputs) > 1 and inputs[1] is not None
                             else attrs.get("axes", []))]


def squeeze(inputs: list[Any], attrs: dict[str, Any], precision: str) -> list[Any]:
    x = inputs[0]
    axes = _axes(inputs, attrs) or [i for i, n in enumerate(x.shape) if n == 1]
    return [_xp(x).squeeze(x, tuple(a % x.ndim for a in axes))]


def unsqueeze(inputs: list[Any], attrs: dict[str, Any], precision: str) -> list[Any]:
    x = inputs[0]
    axes = _axes(inputs, attrs)
    rank = np.ndim(x) + len(axes)
    return [_xp(x).expand_dims(x, tuple(sorted(a % rank for a in axes)))]


def pad(inputs: list[Any], attrs: dict[str, Any], precision: str) -> list[Any]:
    x = inputs[0]
    pads = [int(v) for v in (np.asarray(inputs[1]) if len(inputs) > 1 else attrs["pads"])]
    value = float(np.asarray(inputs[2])) if len(inputs) > 2 and inputs[2] is not None else attrs.get("value", 0.0)
    mode = attrs.get("mode", "constant")
    if mode not in ("constant", "reflect", "edge"):
        raise ValueError(f"Pad mode {mode!r} is not supported")
    if len(pads) != 2 * x.ndim:
        raise ValueError(f"pads={pads} must be a begin and an end for each of the {x.ndim} axes")
    widths = list(zip(pads[: x.ndim], pads[x.ndim :], strict=True))
    if min(pads) < 0:
        raise ValueError("negative Pad (cropping) is not supported")
    return [jnp.pad(x, widths, mode=mode, **({"constant_values": value} if mode == "constant" else {}))]


def clip(inputs: list[Any], attrs: dict[str, Any], precision: str) -> list[Any]:
    low = inputs[1] if len(inputs) > 1 and inputs[1] is not None else attrs.get("min", -np.inf)
    high = inputs[2] if len(inputs) > 2 and inputs[2] is not None else attrs.get("max", np.inf)
    return [jnp.clip(inputs[0], low, high)]


def _binary(function: Callable[[Any, Any], Any]) -> Op:
    return lambda inputs, attrs, precision: [function(inputs[0], inputs[1])]


def _unary(function: Callable[[Any], Any]) -> Op:
    return lambda inputs, attrs, precision: [function(inputs[0])]


OPS: dict[str, Op] = {
    "Conv": conv, "MaxPool": max_pool, "AveragePool": average_pool, "BatchNormalization": batch_norm, "LRN": lrn,
    "Gemm": gemm, "Flatten": flatten, "Reshape": reshape, "Squeeze": squeeze, "Unsqueeze": unsqueeze, "Pad": pad,
    "Clip": clip,
    "GlobalAveragePool": _unary(lambda x: jnp.mean(x, axis=tuple(range(2, x.ndim)), keepdims=True)),
    "Relu": _unary(ops.relu), "Sigmoid": _unary(jax.nn.sigmoid), "Tanh": _unary(jnp.tanh),
    "Identity": _unary(lambda x: x),
    "LeakyRelu": lambda inputs, attrs, precision: [jnp.where(inputs[0] >= 0, inputs[0],
                                                             attrs.get("alpha", 0.01) * inputs[0])],
    "Concat": concat,
    "Add": _binary(lambda a, b: a + b), "Sub": _binary(lambda a, b: a - b), "Mul": _binary(lambda a, b: a * b),
    "Div": _binary(lambda a, b: a / b),
    "MatMul": lambda inputs, attrs, precision: [ops.dense(inputs[0], inputs[1], precision)],
    "Transpose": transpose,
    "Dropout": lambda inputs, attrs, precision: [inputs[0]],
    "Shape": lambda inputs, attrs, precision: [np.array(np.shape(inputs[0]), np.int64)],
    "Gather": gather,
}
